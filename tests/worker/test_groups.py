"""pipeline/worker/groups.py, and RenderWorker rendering a batch as groups of clips that share forwards.

The worker tests run the real tiny model, real ffmpeg and a real local folder, as tests/worker/test_actor.py
does; that each clip of a group gets the frames it gets alone is tests/test_generate_groups.py's part.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from render_workers import WorkerFactory, batch_of, worker_factory
from video_probe import decode_rgb, probe_video

from pipeline.encode import find_ffmpeg
from pipeline.generate import ClipGenerator, ClipRequest, GroupStream
from pipeline.metrics import read_metrics
from pipeline.prompts import RenderDefaults, parse_line
from pipeline.spec.cache import FifoParams
from pipeline.spec.clip import ClipSpec
from pipeline.spec.model import get_preset
from pipeline.spec.storyboard import Segment, Storyboard
from pipeline.storage import open_target
from pipeline.worker import RenderWorker, WorkerConfig
from pipeline.worker.chaos import CHAOS_ENV
from pipeline.worker.faults import FaultRecord, read_fault_record, write_fault_record
from pipeline.worker.groups import group_key, order_for_groups, plan_groups

TINY = get_preset("tiny")
RUN_ID = "group-test"


def make_clip(prompt: str, latent_frames: int = 6, **fields: Any) -> ClipSpec:
    line = json.dumps({"prompt": prompt, "latent_frames": latent_frames, **fields})
    return parse_line(line, 1, RenderDefaults(TINY, latent_frames=3))


def make_story(clip_id: str) -> ClipSpec:
    segments = [
        {"prompt": "a fox walks", "latent_frames": 3},
        {"prompt": "the fox sleeps", "latent_frames": 3},
    ]
    return parse_line(json.dumps({"id": clip_id, "prompts": segments}), 1, RenderDefaults(TINY))


# -- planning ---------------------------------------------------------------------------------------


def test_clips_of_one_length_and_policy_parameters_group_up_to_the_limit_in_order() -> None:
    a, b, c, d = (make_clip(p, id=p) for p in "abcd")
    short = make_clip("short", latent_frames=3, id="short")
    wider = make_clip("wider", window_frames=18, id="wider")

    assert plan_groups([a, short, b, wider, c, d], limit=2) == [[0, 2], [1], [3], [4, 5]]
    assert plan_groups([a, b, c], limit=3) == [[0, 1, 2]]
    assert plan_groups([a, b, c], limit=1) == [[0], [1], [2]]
    assert group_key(a) == group_key(b) != group_key(wider)


def test_a_storyboard_and_a_clip_that_broke_the_device_render_alone() -> None:
    a, b, c = (make_clip(p, id=p) for p in "abc")
    story = make_story("story")

    assert story.storyboard is not None and group_key(story) is None
    assert plan_groups([a, story, b, c], limit=2, alone=frozenset({"b"})) == [[0, 3], [1], [2]]
    with pytest.raises(ValueError, match=r"limit=0 clips per group must be >= 1"):
        plan_groups([a], limit=0)


def test_the_driver_puts_clips_that_can_share_forwards_next_to_each_other() -> None:
    a, b = make_clip("a", id="a"), make_clip("b", id="b")
    short = make_clip("short", latent_frames=3, id="short")
    story = make_story("story")

    ordered = order_for_groups([a, short, story, b])

    assert [clip.clip_id for clip in ordered] == ["a", "b", "short", "story"]


# -- the worker -------------------------------------------------------------------------------------


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[WorkerFactory]:
    with worker_factory(tmp_path, RUN_ID) as factory:
        yield factory


def record_groups(worker: RenderWorker, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The seeds of each group the worker's generator is asked for, in order."""
    groups: list[list[int]] = []
    stream_group = worker.generator.stream_group

    def recording(clips: list[ClipRequest], *args: Any) -> GroupStream:
        groups.append([clip.seed for clip in clips])
        return stream_group(clips, *args)

    monkeypatch.setattr(worker.generator, "stream_group", recording)
    return groups


def rows_by_id(worker: RenderWorker, *clips: ClipSpec) -> dict[str, dict[str, Any]]:
    return {row["clip_id"]: row for row in worker(batch_of(*clips)).to_pylist()}


def test_the_group_size_is_one_on_a_cpu_unless_asked(make_worker: WorkerFactory) -> None:
    assert make_worker().clips_per_forward == 1
    assert make_worker(clips_per_forward=3).clips_per_forward == 3
    with pytest.raises(ValueError, match=r"clips_per_forward=0 must be >= 1 \(or None: automatic\)"):
        WorkerConfig(out="x", run_id="r", clips_per_forward=0)


@pytest.mark.integration
@pytest.mark.slow
def test_a_batch_renders_as_groups_each_clip_with_its_own_video_row_and_telemetry(
    make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    worker = make_worker(clips_per_forward=2)
    groups = record_groups(worker, monkeypatch)
    fox, heron, crane = (make_clip(f"a {name} at dawn", id=name) for name in ("fox", "heron", "crane"))
    short = make_clip("a short clip", latent_frames=3, id="short")

    rows = rows_by_id(worker, fox, short, heron, crane)

    assert groups == [[fox.seed, heron.seed], [short.seed], [crane.seed]]
    assert {clip_id: (row["status"], row["clips_per_forward"]) for clip_id, row in rows.items()} == {
        "fox": ("ok", 2),
        "heron": ("ok", 2),
        "short": ("ok", 1),
        "crane": ("ok", 1),
    }
    for clip_id, frames in (("fox", 21), ("heron", 21), ("short", 9), ("crane", 21)):
        assert probe_video(tmp_path / "out" / "clips" / f"{clip_id}.mp4").frames == frames
        assert rows[clip_id]["seed"] != 0 and rows[clip_id]["attempt"] == 1
    assert rows["fox"]["sha256"] != rows["heron"]["sha256"]  # two clips, not one twice
    assert rows["fox"]["t_generate_s"] == rows["heron"]["t_generate_s"]  # each its share of the forwards
    assert json.loads(rows["fox"]["cache_telemetry"]) == json.loads(rows["crane"]["cache_telemetry"])
    assert sum(row["t_load_s"] is not None for row in rows.values()) == 1
    stored = read_metrics(open_target(str(tmp_path / "out")), RUN_ID).to_pylist()
    assert sorted(row["clip_id"] for row in stored) == ["crane", "fox", "heron", "short"]
    assert list(worker.tmp.iterdir()) == []


@pytest.mark.integration
@pytest.mark.slow
def test_a_group_clip_renders_the_video_it_renders_alone(make_worker: WorkerFactory, tmp_path: Path) -> None:
    """Its frames are the same to float32 rounding (tests/test_generate_groups.py), which can tip a pixel
    by one level and x264's choices with it: the decoded videos agree far closer than two clips do."""
    clips = [make_clip("a fox in the snow", id="fox"), make_clip("a heron in the reeds", id="heron")]
    grouped = rows_by_id(make_worker(clips_per_forward=2), *clips)
    alone = rows_by_id(make_worker(clips_per_forward=1, out=str(tmp_path / "alone")), *clips)

    def frames(folder: str, clip_id: str) -> np.ndarray:
        path = tmp_path / folder / "clips" / f"{clip_id}.mp4"
        return decode_rgb(find_ffmpeg(), path, TINY.width, TINY.height, 21).astype(np.float64)

    assert [grouped[c.clip_id]["clips_per_forward"] for c in clips] == [2, 2]
    assert [alone[c.clip_id]["clips_per_forward"] for c in clips] == [1, 1]
    between_clips = np.abs(frames("alone", "fox") - frames("alone", "heron")).mean()
    for clip in clips:
        together, single = frames("out", clip.clip_id), frames("alone", clip.clip_id)
        assert together.shape == single.shape == (21, TINY.height, TINY.width, 3)
        assert np.abs(together - single).mean() < between_clips / 20


@pytest.mark.integration
@pytest.mark.slow
def test_an_encoder_failure_in_a_group_fails_only_that_clip(
    make_worker: WorkerFactory, failing_ffmpeg: str, tmp_path: Path
) -> None:
    worker = make_worker(clips_per_forward=2, ffmpeg=failing_ffmpeg)

    rows = rows_by_id(worker, make_clip("x", id="broken"), make_clip("y", id="fine"))

    assert (rows["broken"]["status"], rows["broken"]["error_type"]) == ("failed", "EncodeError")
    assert "simulated encoder crash" in rows["broken"]["error"]
    assert (rows["fine"]["status"], rows["fine"]["clips_per_forward"]) == ("ok", 2)
    assert probe_video(tmp_path / "out" / "clips" / "fine.mp4").frames == 21
    assert not (tmp_path / "out" / "clips" / "broken.mp4").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_a_fault_at_one_clips_chunk_drops_it_from_its_group_and_the_other_goes_on(
    make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan = [{"clip": "doomed", "at": "chunk", "chunk": 1, "fault": "error"}]
    monkeypatch.setenv(CHAOS_ENV, json.dumps(plan))
    worker = make_worker(clips_per_forward=2)
    groups = record_groups(worker, monkeypatch)
    doomed, lucky = make_clip("x", latent_frames=9, id="doomed"), make_clip("y", latent_frames=9, id="lucky")

    rows = rows_by_id(worker, doomed, lucky)

    assert groups == [[doomed.seed, lucky.seed]]  # the other clip was not rendered again
    assert (rows["doomed"]["status"], rows["doomed"]["error_type"]) == ("failed", "InjectedFault")
    assert json.loads(rows["doomed"]["cache_telemetry"])["compressions"] == 0
    assert (rows["lucky"]["status"], rows["lucky"]["clips_per_forward"]) == ("ok", 2)
    assert probe_video(tmp_path / "out" / "clips" / "lucky.mp4").frames == 33


@pytest.mark.integration
@pytest.mark.slow
def test_a_group_that_fails_as_a_whole_renders_its_clips_one_by_one(
    make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As when a group does not fit the device: batched forwards run out of memory, single ones do not."""
    worker = make_worker(clips_per_forward=2)
    stream_group = worker.generator.stream_group
    calls: list[int] = []

    def out_of_memory_for_groups(clips: list[ClipRequest], *args: Any) -> GroupStream:
        calls.append(len(clips))
        stream = stream_group(clips, *args)
        if len(clips) > 1:
            next(stream)  # the first chunk was made, so the encoders have frames to throw away
            raise RuntimeError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return stream

    monkeypatch.setattr(worker.generator, "stream_group", out_of_memory_for_groups)
    rows = rows_by_id(worker, make_clip("x", id="a"), make_clip("y", id="b"))

    assert calls == [2, 1, 1]
    assert {
        clip_id: (row["status"], row["clips_per_forward"], row["attempt"]) for clip_id, row in rows.items()
    } == {
        "a": ("ok", 1, 1),
        "b": ("ok", 1, 1),
    }
    for clip_id in ("a", "b"):
        assert probe_video(tmp_path / "out" / "clips" / f"{clip_id}.mp4").frames == 21


@pytest.mark.integration
@pytest.mark.slow
def test_a_clip_that_took_the_device_down_renders_alone_and_every_clip_counts_its_attempt(
    make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = open_target(str(tmp_path / "out"))
    write_fault_record(target, RUN_ID, "suspect", FaultRecord(1, 1, "no frames for 901 s"))
    worker = make_worker(clips_per_forward=3)
    groups = record_groups(worker, monkeypatch)
    clips = [make_clip(p, latent_frames=3, id=p) for p in ("suspect", "first", "second")]

    rows = rows_by_id(worker, *clips)

    assert groups == [[clips[0].seed], [clips[1].seed, clips[2].seed]]
    assert [rows[c.clip_id]["status"] for c in clips] == ["ok", "ok", "ok"]
    assert read_fault_record(target, RUN_ID, "suspect") == FaultRecord(2, 1, "no frames for 901 s")
    assert read_fault_record(target, RUN_ID, "first") == FaultRecord(1, 0, "")


@pytest.mark.slow
def test_a_storyboard_of_a_group_of_one_keeps_its_prompts(make_worker: WorkerFactory) -> None:
    story = Storyboard((Segment("a fox walks", 0, 3), Segment("the fox sleeps", 3, 3)), "none")
    generator: ClipGenerator = make_worker().generator
    stream = generator.stream_group([ClipRequest(story, 1)], 6, FifoParams())
    assert len(list(stream)) == 2 and len(stream.stats(0).switches) == 1


@pytest.mark.integration
@pytest.mark.slow
def test_every_clip_generates_on_the_one_device_thread_whichever_thread_calls(
    make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cuDNN's benchmark results are per thread: a clip on a new thread would search its convs again."""
    worker = make_worker()
    threads: list[str] = []
    stream_group = worker.generator.stream_group

    def recording(clips: list[ClipRequest], *args: Any) -> GroupStream:
        threads.append(threading.current_thread().name)
        return stream_group(clips, *args)

    monkeypatch.setattr(worker.generator, "stream_group", recording)
    clips = [make_clip(p, latent_frames=3, id=p) for p in ("a", "b", "c")]

    for calls in (1, 2):  # new calling threads each time, as Ray's may be
        with ThreadPoolExecutor(max_workers=calls) as pool:
            rows = [
                row for table in pool.map(lambda c: worker(batch_of(c)), clips) for row in table.to_pylist()
            ]
        assert [row["status"] for row in rows] == ["ok"] * 3

    assert len(threads) == 6 and len(set(threads)) == 1 and threads[0].startswith("device")


@pytest.mark.integration
@pytest.mark.slow
def test_a_retried_call_keeps_the_rows_of_clips_it_had_finished_and_renders_the_rest(
    make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray retries a whole call when the process dies (another clip broke the device): a group's clips
    done before that are not rendered again."""
    done, pending = make_clip("x", latent_frames=3, id="done"), make_clip("y", latent_frames=3, id="pending")
    first = rows_by_id(make_worker(clips_per_forward=2), done)["done"]
    monkeypatch.setattr(os, "getpid", lambda: 1)  # the process Ray restarted
    worker = make_worker(clips_per_forward=2)
    groups = record_groups(worker, monkeypatch)

    rows = rows_by_id(worker, done, pending)

    assert groups == [[pending.seed]]
    assert rows["done"] == first and rows["pending"]["status"] == "ok"
