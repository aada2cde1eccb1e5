"""pipeline/report/summary.py: outcome, cost, throughput per worker, failures and policies of a run."""

from __future__ import annotations

import pytest
from synthetic_run import RUN_ID, write_run
from test_runs import make_record

from pipeline.report import summary
from pipeline.report.data import Row, load_runs
from pipeline.storage.local import LocalTarget

pytestmark = pytest.mark.slow  # the synthetic run measures seven clips


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[Row]:
    target = LocalTarget(tmp_path_factory.mktemp("run") / "out")
    write_run(target)
    return load_runs(target).rows


def test_the_summary_counts_clips_video_and_gpu_hours(rows: list[Row]) -> None:
    result = summary.summarise(rows, usd_per_gpu_hour=2.5)
    assert (result.runs, result.clips, result.ok, result.failed, result.retried) == ([RUN_ID], 10, 7, 3, 1)
    # each worker: first start to last finish (12 min + 150 s) plus its model load (30 s) = 0.25 h
    assert result.device_hours == pytest.approx(0.5)
    assert result.devices == ["NVIDIA H100 80GB HBM3"] and result.on_gpu
    video_s = (8 + 8 + 8 + 12 + 10 + 15 + 12) * 16 / 16  # the ok clips' lengths
    assert result.video_min == pytest.approx(video_s / 60)
    assert result.usd_per_video_min == pytest.approx(0.5 * 2.5 / (video_s / 60))
    assert summary.summarise(rows, None).usd_per_video_min is None


def test_workers_failures_and_policies(rows: list[Row]) -> None:
    workers = summary.workers(rows)
    assert [(w.node, w.worker_pid, w.ok, w.failed) for w in workers] == [
        ("node-a", 101, 4, 1),
        ("node-b", 202, 3, 2),
    ]
    assert workers[0].video_min_per_h == pytest.approx(workers[0].video_min / 0.25)
    groups = summary.failures(rows)
    assert [(g.error_type, g.count, g.clips) for g in groups] == [
        ("EncodeError", 2, ["broken-1", "broken-2"]),
        ("ClipTimeoutError", 1, ["slow"]),
    ]
    policies = {p.policy: p for p in summary.policies(rows)}
    assert sorted(policies) == ["deep-forcing", "fifo", "sink"]
    assert (policies["sink"].clips, policies["sink"].ok) == (3, 2)
    assert policies["fifo"].telemetry == {  # clips 1, 3 and 7 of the run: list counters skipped
        "compressions": pytest.approx(22 / 3),
        "sink_shifts": pytest.approx(11 / 3),
    }
    assert policies["sink"].signals["flicker_spikes"] == pytest.approx(
        15 / 2
    )  # the storm: 14; the loop: its cut


def test_skipped_held_and_lost_come_from_the_run_records(rows: list[Row]) -> None:
    later = make_record("later", skipped=10, held=2, lost=1)  # a run that rendered nothing

    result = summary.summarise(rows, None, {RUN_ID: None, "later": later})

    assert (result.runs, result.clips, result.skipped, result.unrecorded) == (
        ["later", RUN_ID],
        10,
        None,
        [RUN_ID],
    )
    assert (result.held, result.lost) == (2, 1)  # what the records there are say
    recorded = summary.summarise(rows, None, {RUN_ID: make_record(RUN_ID, skipped=3), "later": later})
    assert (recorded.skipped, recorded.unrecorded) == (13, [])
    nothing = summary.summarise([], None, {"later": later})
    assert (nothing.clips, nothing.ok, nothing.wall_h, nothing.devices, nothing.skipped) == (
        0,
        0,
        0.0,
        [],
        10,
    )
