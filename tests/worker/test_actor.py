"""pipeline/worker/actor.py in-process: the real tiny model, real ffmpeg, a real local folder as the target.

RenderWorker is a plain callable class that Ray only constructs, so these tests call it directly and
control each clip exactly. Faults are injected the way a user would meet them: an ffmpeg binary that
fails (a shell script handed to the worker), a store path that cannot be written, a fault record left
by an earlier crash. The Ray side (actor restarts, the driver) is in test_render_job.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import S3Server
from render_workers import WorkerFactory, batch_of, worker_factory
from s3_fault_proxy import DROP, INTERNAL, SLOWDOWN, FaultProxy, fail_first
from video_probe import probe_video

from pipeline.metrics import METRICS_SCHEMA, done_clip_ids, read_metrics, read_seconds
from pipeline.prompts import RenderDefaults, parse_line
from pipeline.quality import ClipAnalysis
from pipeline.spec.cache import DeepForcingParams
from pipeline.spec.clip import ClipSpec
from pipeline.spec.model import get_preset
from pipeline.storage import open_target
from pipeline.worker import RenderWorker, WorkerConfig
from pipeline.worker.claims import ClipClaims, claim_key
from pipeline.worker.faults import FaultRecord, read_fault_record, write_fault_record
from pipeline.worker.rows import quality_columns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TINY = get_preset("tiny")
RUN_ID = "worker-test"


def make_clip(prompt: str, line: int = 1, **fields: Any) -> ClipSpec:
    """A clip exactly as the driver would build it from a prompt-file line."""
    return parse_line(json.dumps({"prompt": prompt, **fields}), line, RenderDefaults(TINY, latent_frames=3))


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[WorkerFactory]:
    with worker_factory(tmp_path, RUN_ID) as factory:
        yield factory


def render_one(worker: RenderWorker, clip: ClipSpec) -> dict[str, Any]:
    table = worker(batch_of(clip))
    assert isinstance(table, pa.Table) and table.schema == METRICS_SCHEMA and table.num_rows == 1
    return table.to_pylist()[0]


def test_a_clip_becomes_a_playable_mp4_and_a_complete_metrics_row(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    worker = make_worker()
    clip = make_clip("a red fox trots through fresh snow", latent_frames=6, id="fox")

    row = render_one(worker, clip)

    video = tmp_path / "out" / "clips" / "fox.mp4"
    info = probe_video(video)
    assert (info.frames, info.codec, info.width, info.height, info.fps) == (21, "h264", 112, 64, 16.0)
    data = video.read_bytes()
    assert row["status"] == "ok" and row["error"] is None
    assert (row["bytes"], row["sha256"], row["video_uri"]) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        str(video),
    )
    assert (row["clip_id"], row["run_id"], row["attempt"], row["seed"]) == ("fox", RUN_ID, 1, clip.seed)
    assert (row["num_latent_frames"], row["num_frames"], row["model"], row["model_sha"]) == (
        6,
        21,
        "tiny",
        None,
    )
    assert (row["cache_policy"], row["config_hash"]) == ("deep-forcing", clip.config_hash)
    assert row["prompt_sha256"] == hashlib.sha256(clip.prompt.encode()).hexdigest()
    assert isinstance(json.loads(row["cache_telemetry"]), dict)
    assert row["gen_fps"] == pytest.approx(21 / (row["t_generate_s"] + row["t_decode_s"]))
    assert row["t_load_s"] > 0 and row["t_total_s"] >= row["t_encode_s"] + row["t_upload_s"]
    assert row["peak_gpu_mem_gb"] is None and row["gpu"] is None  # CPU
    assert row["motion_mean"] > 0 and row["motion_max"] >= row["motion_mean"] and row["luma_drift"] >= 0
    assert 0 < row["temporal_flickering"] <= 1 and row["dynamic_degree"] in (0.0, 1.0)
    assert row["t_quality_s"] > 0 and row["motion_level"] >= 0
    clip_signals = {name: row[name] for name in row["segment_signals"][0] if not name.startswith("switch_")}
    no_switch = {"switch_step": None, "switch_ratio": None, "switch_cut": None}
    assert row["segment_signals"] == [clip_signals | no_switch]  # one prompt: one segment, the clip
    for position in ("first", "middle", "last"):  # thumbnails beside the video, their URIs in the row
        thumb = tmp_path / "out" / "clips" / f"fox.{position}.jpg"
        assert row[f"thumb_{position}_uri"] == str(thumb) and thumb.read_bytes()[:2] == b"\xff\xd8"
    out = open_target(str(tmp_path / "out"))
    seconds = read_seconds(out, RUN_ID).to_pylist()
    assert [(s["clip_id"], s["second"], s["frames"], s["attempt"]) for s in seconds] == [
        ("fox", 0, 16, 1),
        ("fox", 1, 5, 1),
    ]
    assert read_metrics(out, RUN_ID).to_pylist() == [row]
    assert list(worker.tmp.iterdir()) == []  # the local mp4 is gone after the upload

    second = render_one(worker, make_clip("a heron wades in the shallows"))
    assert second["status"] == "ok" and second["t_load_s"] is None  # the load is charged to the first clip


def test_a_truncated_prompt_is_named_by_clip_and_line_and_recorded_in_its_row(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker()
    long = make_clip("a heron " * 75, line=7, id="heron")  # 600 characters: 601 tokens of the tiny tokenizer

    row = render_one(worker, long)
    short = render_one(worker, make_clip("a heron"))

    assert (row["status"], row["prompt_tokens"], row["truncated"]) == ("ok", 600, True)
    assert (short["prompt_tokens"], short["truncated"]) == (8, False)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "clip heron (line 7): its prompt is 600 tokens, over the text encoder's 512: the last 88 were "
        f"dropped (metrics: truncated, prompt_tokens); it starts {long.prompt[:80]!r}"
    ]


def test_a_clip_past_its_deadline_fails_with_a_clear_error_and_the_next_clip_renders(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    worker = make_worker(clip_timeout_s=0.2)  # the deadline is checked between chunks
    late = make_clip("a long slow pan over a city at night", latent_frames=9, id="late")

    row = render_one(worker, late)

    assert (row["status"], row["error_type"]) == ("failed", "ClipTimeoutError")
    assert re.fullmatch(
        r"clip late ran past its deadline: [12] of 3 chunks in \d+\.\d s, over clip_timeout_s=0\.2; "
        r"raise --clip-timeout or render fewer than 9 latent frames",
        row["error"],
    ), row["error"]
    assert not (tmp_path / "out" / "clips" / "late.mp4").exists()
    # A one-chunk clip has no "between chunks": it finishes whatever the deadline.
    after = render_one(worker, make_clip("a paper boat on a puddle", id="after"))
    assert after["status"] == "ok" and probe_video(tmp_path / "out" / "clips" / "after.mp4").frames == 9
    rows = {r["clip_id"]: r["status"] for r in read_metrics(open_target(str(tmp_path / "out"))).to_pylist()}
    assert rows == {"late": "failed", "after": "ok"}


def test_a_clip_whose_cache_cannot_be_built_fails_alone(make_worker: WorkerFactory) -> None:
    """Prompt lines are checked at planning; a clip built in code with a bad value still fails only itself."""
    worker = make_worker()
    good = make_clip("a lighthouse on a calm evening", cache_policy="deep-forcing", layout="paper")
    bad = dataclasses.replace(good, clip_id="bad", cache=DeepForcingParams(layout="sideways"))

    table = worker(batch_of(bad, good))

    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert (rows[0]["error_type"], rows[0]["error"]) == (
        "ValueError",
        "layout='sideways' is not one of ['reference', 'paper']",
    )


def test_an_encoder_failure_becomes_a_failed_row_with_ffmpeg_output(
    make_worker: WorkerFactory, failing_ffmpeg: str, tmp_path: Path
) -> None:
    worker = make_worker(ffmpeg=failing_ffmpeg)

    rows = worker(batch_of(make_clip("x", id="broken"), make_clip("y", id="fine"))).to_pylist()

    assert [(r["clip_id"], r["status"], r["error_type"]) for r in rows] == [
        ("broken", "failed", "EncodeError"),
        ("fine", "ok", None),
    ]
    assert "simulated encoder crash" in rows[0]["error"]
    fine = ["fine.first.jpg", "fine.last.jpg", "fine.middle.jpg", "fine.mp4"]  # nothing of "broken"
    assert sorted(p.name for p in (tmp_path / "out" / "clips").iterdir()) == fine
    assert list(worker.tmp.iterdir()) == []


def test_a_store_that_rejects_the_video_gives_a_failed_row(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "clips").write_text("a file where the clips folder should be")
    worker = make_worker()

    row = render_one(worker, make_clip("a kite over the dunes", id="kite"))

    assert (row["status"], row["error_type"], row["video_uri"]) == ("failed", "FileExistsError", None)
    assert read_metrics(open_target(str(tmp_path / "out"))).column("status").to_pylist() == ["failed"]
    assert list(worker.tmp.iterdir()) == []


def test_a_clip_that_took_the_device_down_twice_is_not_tried_again(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    worker = make_worker()
    target = open_target(str(tmp_path / "out"))
    write_fault_record(target, RUN_ID, "poison", FaultRecord(2, 2, "no frames for 901 s"))

    row = render_one(worker, make_clip("a clip that hangs the GPU", id="poison"))

    assert (row["status"], row["error_type"], row["attempt"]) == ("failed", "DeviceFaultError", 2)
    assert row["error"] == (
        f"clip poison took the device down 2 time(s) in run {RUN_ID} (last: no frames for 901 s); "
        "max_device_faults=2, so it is not tried again in this run. Check the GPU (nvidia-smi, Xid "
        "errors in dmesg); a new run tries the clip again"
    )
    assert read_fault_record(target, RUN_ID, "poison") == FaultRecord(2, 2, "no frames for 901 s")  # not run


def test_two_concurrent_calls_share_the_model_and_both_render(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    """Ray runs two calls per actor at once (one generating, one finalising): nothing may be shared."""
    worker = make_worker()
    clips = [make_clip("a tram in the rain", latent_frames=6, id="a"), make_clip("a tram in the sun", id="b")]

    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = [t.to_pylist()[0] for t in pool.map(lambda c: worker(batch_of(c)), clips)]

    assert [(r["clip_id"], r["status"], r["num_frames"]) for r in rows] == [("a", "ok", 21), ("b", "ok", 9)]
    for name, frames in (("a", 21), ("b", 9)):
        assert probe_video(tmp_path / "out" / "clips" / f"{name}.mp4").frames == frames
    assert sum(r["t_load_s"] is not None for r in rows) == 1


def test_no_exception_leaves_a_batch_a_clip_whose_row_cannot_be_stored_becomes_a_failed_row(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    """A length the metrics schema cannot hold (planning refuses such lines; code can still build one)."""
    worker = make_worker(clip_timeout_s=0.01)
    huge = dataclasses.replace(make_clip("a very long pan", id="huge"), num_latent_frames=3 * 10**9)
    fine = make_clip("a short pan", id="fine")

    rows = worker(batch_of(huge, fine)).to_pylist()

    assert [(r["clip_id"], r["status"]) for r in rows] == [("huge", "failed"), ("fine", "ok")]
    assert rows[0]["num_latent_frames"] == 0 and rows[0]["error_type"] == "ValueError"
    assert "column 'num_latent_frames' must be an integer in [-2147483648, 2147483647]" in rows[0]["error"]
    assert "num_latent_frames=3000000000" in rows[0]["error"]  # what the clip asked for, in words
    stored = {r["clip_id"]: r["status"] for r in read_metrics(open_target(str(tmp_path / "out"))).to_pylist()}
    assert stored == {"huge": "failed", "fine": "ok"}


def test_no_exception_leaves_a_batch_even_for_a_clip_record_that_is_not_one(
    make_worker: WorkerFactory,
) -> None:
    worker = make_worker()
    broken = dataclasses.replace(make_clip("a fox", id="broken"), prompt=None)  # type: ignore[arg-type]

    rows = worker(batch_of(broken, make_clip("a heron", id="heron"))).to_pylist()

    assert [(r["clip_id"], r["status"]) for r in rows] == [("broken", "failed"), ("heron", "ok")]
    assert rows[0]["error_type"] == "AttributeError" and rows[0]["prompt"] == ""


def test_no_exception_leaves_a_batch_for_bytes_that_are_no_clip_record(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    batch = {"clip": np.array([b"not a pickle", make_clip("a heron", id="heron").to_bytes()], dtype=object)}

    rows = worker(batch).to_pylist()

    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[0]["clip_id"].startswith("invalid-") and rows[0]["error_type"] == "UnpicklingError"


def test_a_clip_another_live_run_renders_is_skipped_unrecorded_and_its_claim_left_alone(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    target = open_target(str(tmp_path / "out"))
    other = ClipClaims(target, "other-run", planned_at=0.0)
    assert other.acquire("fox") is None

    row = render_one(make_worker(), make_clip("a fox", id="fox"))

    assert (row["status"], row["error_type"]) == ("skipped", "ClaimedByAnotherRun")
    assert row["error"].startswith("run other-run renders it (on ")
    assert read_metrics(target).num_rows == 0 and not (tmp_path / "out" / "clips" / "fox.mp4").exists()
    assert json.loads(target.read_bytes(claim_key("fox")))["run_id"] == "other-run"


def test_a_rendered_clip_leaves_its_claim_marked_with_the_outcome(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    worker = make_worker()
    render_one(worker, make_clip("a fox", id="fox"))
    claim = json.loads(open_target(str(tmp_path / "out")).read_bytes(claim_key("fox")))
    assert (claim["run_id"], claim["state"]) == (RUN_ID, "ok")


def test_worker_config_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError) as error:
        WorkerConfig(out="x", run_id="r", clip_timeout_s=0)
    assert str(error.value) == "WorkerConfig.clip_timeout_s=0 must be > 0 seconds"


# ---------------------------------------------------------------------------------------------
# The store fails: a real S3 server (moto) behind a proxy that fails requests on purpose
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def s3_behind_proxy(s3_moto: S3Server) -> Iterator[tuple[FaultProxy, str]]:
    proxy = FaultProxy(s3_moto.endpoint_url)
    yield proxy, s3_moto.make_bucket()
    proxy.close()


def stored_video(s3_moto: S3Server, bucket: str, clip_id: str) -> tuple[bytes, str]:
    """A video as the bucket itself holds it (read past the proxy), and its sha256 metadata."""
    obj = s3_moto.client().get_object(Bucket=bucket, Key=f"run/clips/{clip_id}.mp4")
    return obj["Body"].read(), obj["Metadata"]["sha256"]


def test_a_throttling_store_is_retried_with_backoff_and_the_clip_lands_whole(
    make_worker: WorkerFactory, s3_moto: S3Server, s3_behind_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, bucket = s3_behind_proxy
    proxy.policy = fail_first(4, SLOWDOWN, method="PUT")
    worker = make_worker(out=f"s3://{bucket}/run", s3=s3_moto.settings(endpoint_url=proxy.endpoint_url))

    row = render_one(worker, make_clip("a fox", id="fox"))

    assert row["status"] == "ok", row["error"]
    data, sha256 = stored_video(s3_moto, bucket, "fox")
    assert row["sha256"] == sha256 == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
    assert sum(fault == SLOWDOWN for _, _, fault in proxy.requests) == 4


def test_a_store_that_stays_down_fails_the_clip_with_the_reason_and_reports_nothing_done(
    make_worker: WorkerFactory, s3_moto: S3Server, s3_behind_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, bucket = s3_behind_proxy
    settings = s3_moto.settings(endpoint_url=proxy.endpoint_url, max_attempts=2)
    worker = make_worker(out=f"s3://{bucket}/run", s3=settings)
    proxy.policy = lambda method, path: INTERNAL  # from here on every request fails

    row = render_one(worker, make_clip("a fox", id="fox"))

    assert (row["status"], row["error_type"]) == ("failed", "StorageError")
    assert "InternalError: We encountered an internal error. Please try again." in row["error"]
    assert "its metrics row could not be written" in row["error"]  # the table is on the same store
    assert s3_moto.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # nothing claims "done"


def test_a_dropped_connection_is_retried_and_the_next_clip_is_not_held_up(
    make_worker: WorkerFactory, s3_moto: S3Server, s3_behind_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, bucket = s3_behind_proxy
    worker = make_worker(out=f"s3://{bucket}/run", s3=s3_moto.settings(endpoint_url=proxy.endpoint_url))
    proxy.policy = fail_first(3, DROP)

    rows = worker(batch_of(make_clip("a fox", id="fox"), make_clip("a heron", id="heron"))).to_pylist()

    assert [(r["clip_id"], r["status"]) for r in rows] == [("fox", "ok"), ("heron", "ok")]
    for clip_id in ("fox", "heron"):
        data, sha256 = stored_video(s3_moto, bucket, clip_id)
        assert hashlib.sha256(data).hexdigest() == sha256


def test_a_storyboard_clip_renders_fails_retries_and_resumes_like_any_other(
    make_worker: WorkerFactory, failing_ffmpeg: str, tmp_path: Path
) -> None:
    line = {
        "id": "broken-story",  # the failing ffmpeg fails outputs with "broken" in the name
        "prompts": [
            {"prompt": "a fox walks through snow", "latent_frames": 3},
            {"prompt": "the fox reaches a frozen lake", "latent_frames": 6},
        ],
        "cache_policy": "fifo",
        "recache": "window",
    }
    clip = parse_line(json.dumps(line), 1, RenderDefaults(TINY, latent_frames=3))
    segments = [
        {"prompt": "a fox walks through snow", "first_frame": 0, "last_frame": 8},
        {"prompt": "the fox reaches a frozen lake", "first_frame": 9, "last_frame": 32},
    ]

    failed = render_one(make_worker(ffmpeg=failing_ffmpeg), clip)

    assert (failed["status"], failed["error_type"], failed["attempt"]) == ("failed", "EncodeError", 1)
    assert failed["segments"] == segments and failed["prompt"] == clip.prompt
    target = open_target(str(tmp_path / "out"))
    assert "broken-story" not in done_clip_ids(target)  # a rerun tries it again

    row = render_one(make_worker(), clip)

    assert (row["status"], row["attempt"], row["num_frames"], row["segments"]) == ("ok", 2, 33, segments)
    assert probe_video(tmp_path / "out" / "clips" / "broken-story.mp4").frames == 33
    (switch,) = json.loads(row["cache_telemetry"])["switches"]
    assert (switch["chunk"], switch["recache"], switch["recached_frames"]) == (1, "window", 3)
    assert (
        row["config_hash"] == clip.config_hash
        and row["prompt_sha256"] == hashlib.sha256(clip.prompt.encode()).hexdigest()
    )
    assert "broken-story" in done_clip_ids(target)  # a rerun skips it
    assert read_metrics(target, RUN_ID).to_pylist() == [row]


def test_a_storyboard_clip_records_each_segments_signals_as_the_meter_measures_its_frames(
    make_worker: WorkerFactory,
) -> None:
    line = {
        "id": "story",
        "prompts": [
            {"prompt": "a fox walks through snow", "latent_frames": 6},
            {"prompt": "the fox reaches a frozen lake", "latent_frames": 6},
        ],
    }
    clip = parse_line(json.dumps(line), 1, RenderDefaults(TINY, latent_frames=3))
    worker = make_worker()

    row = render_one(worker, clip)

    assert row["status"] == "ok" and [s["first_frame"] for s in row["segments"]] == [0, 21]
    # The same frames again (same seed, same storyboard), measured by the meter told the switch frame
    assert clip.storyboard is not None
    analysis = ClipAnalysis(TINY.fps, row["num_frames"], switch_frames=[21])
    for frames in worker.generator.stream(clip.storyboard, clip.seed, clip.num_latent_frames, clip.cache):
        analysis.add(frames)
    report = analysis.finish()
    assert report is not None
    assert row["segment_signals"] == [  # float32 in the table
        {name: value if value is None else pytest.approx(value, rel=1e-6) for name, value in s.items()}
        for s in quality_columns(report)["segment_signals"]
    ]
    first, second = row["segment_signals"]
    assert first["switch_step"] is None and second["switch_step"] > 0
    assert isinstance(second["switch_cut"], bool) and second["switch_ratio"] > 0
    assert first != second and all(0 < s["temporal_flickering"] <= 1 for s in (first, second))
