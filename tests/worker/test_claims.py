"""pipeline/worker/claims.py on a local folder and on S3 (moto): who may render a clip, and when."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.storage import OutputTarget
from pipeline.worker.claims import CLAIM_TTL_S, HEARTBEAT_S, ClipClaims, claim_key

PLANNED = 1_000_000.0  # unix time at which the runs below planned


class Clock:
    def __init__(self) -> None:
        self.now = PLANNED

    def __call__(self) -> float:
        return self.now


def claims(target: OutputTarget, run_id: str, clock: Clock, force: bool = False) -> ClipClaims:
    return ClipClaims(target, run_id, planned_at=PLANNED, force=force, clock=clock)


def stored(target: OutputTarget, clip_id: str) -> dict:
    return json.loads(target.read_bytes(claim_key(clip_id)))


def test_a_clip_claimed_by_a_live_run_is_left_to_it_and_taken_once_its_heartbeat_stops(target) -> None:
    clock = Clock()
    first, second = claims(target, "run-a", clock), claims(target, "run-b", clock)

    assert first.acquire("fox") is None
    assert stored(target, "fox")["run_id"] == "run-a" and stored(target, "fox")["state"] == "rendering"
    clock.now += 30
    reason = second.acquire("fox")
    assert reason is not None and reason.startswith("run run-a renders it (on ")
    assert reason.endswith("heartbeat 30 s ago)")

    clock.now += CLAIM_TTL_S  # run-a died without a word
    assert second.acquire("fox") is None and stored(target, "fox")["run_id"] == "run-b"


def test_a_clip_done_after_a_run_planned_is_left_alone_unless_forced(target) -> None:
    clock = Clock()
    first = claims(target, "run-a", clock)
    assert first.acquire("fox") is None
    clock.now += 5
    first.release("fox", "ok")

    assert claims(target, "run-b", clock).acquire("fox") == "run run-a rendered it after this run started"
    assert claims(target, "run-c", clock, force=True).acquire("fox") is None


def test_a_clip_done_before_a_run_planned_it_may_be_rendered_again(target) -> None:
    """The planner saw it not done (its video is gone, say): the claim does not overrule the plan."""
    clock = Clock()
    clock.now -= 3600
    early = claims(target, "run-a", clock)
    assert early.acquire("fox") is None
    early.release("fox", "ok")
    clock.now = PLANNED + 10
    assert claims(target, "run-b", clock).acquire("fox") is None


def test_a_failed_clip_and_a_clip_of_the_same_run_are_taken_at_once(target) -> None:
    clock = Clock()
    first = claims(target, "run-a", clock)
    assert first.acquire("fox") is None and first.acquire("heron") is None
    first.release("fox", "failed")

    assert claims(target, "run-b", clock).acquire("fox") is None  # a failed clip may be tried again
    assert claims(target, "run-a", clock).acquire("heron") is None  # Ray retrying it in run-a


def test_the_heartbeat_is_written_only_when_it_is_due(target) -> None:
    clock = Clock()
    mine = claims(target, "run-a", clock)
    mine.acquire("fox")
    clock.now += HEARTBEAT_S / 2
    mine.refresh("fox")
    assert stored(target, "fox")["heartbeat_at"] == PLANNED
    clock.now += HEARTBEAT_S
    mine.refresh("fox")
    assert stored(target, "fox")["heartbeat_at"] == clock.now


def test_of_workers_of_eight_runs_racing_for_one_clip_exactly_one_renders_it(target) -> None:
    barrier = threading.Barrier(8)

    def race(i: int) -> str | None:
        mine = ClipClaims(target, f"run-{i}", planned_at=PLANNED)
        barrier.wait()
        return mine.acquire("fox")

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(race, range(8)))

    assert outcomes.count(None) == 1
    winner = f"run-{outcomes.index(None)}"
    assert stored(target, "fox")["run_id"] == winner
    assert all(reason.startswith(f"run {winner} renders it") for reason in outcomes if reason is not None)


@pytest.mark.parametrize("state", ["ok", "failed"])
def test_releasing_marks_the_claim_with_the_outcome(target, state: str) -> None:
    mine = claims(target, "run-a", Clock())
    mine.acquire("fox")
    mine.release("fox", state)
    assert stored(target, "fox")["state"] == state


@pytest.mark.parametrize("state", ["ok", "failed"])
def test_a_clip_another_process_of_this_invocation_finished_is_done_one_an_earlier_invocation_did_is_not(
    target, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray retry of a call whose process died after the clip was done keeps its row; resuming a run
    (the same run id, planned later) tries its failed clips again, and so does a process asked again."""
    clock = Clock()
    run = claims(target, "run-a", clock)
    assert not run.finished_in_this_plan("fox")  # no claim yet
    assert run.acquire("fox") is None
    clock.now += 5
    run.release("fox", state)
    assert not run.finished_in_this_plan("fox")  # this process: asked again, it renders again
    monkeypatch.setattr(os, "getpid", lambda: 1)  # the process Ray restarted
    assert run.finished_in_this_plan("fox")
    assert not claims(target, "run-b", clock).finished_in_this_plan("fox")  # another run's
    resumed = ClipClaims(target, "run-a", planned_at=clock.now + 60, clock=clock)
    assert not resumed.finished_in_this_plan("fox")  # done before this invocation planned
