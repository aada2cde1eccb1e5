"""A finished run with known problems, written the way the worker writes one: metrics rows through
pipeline.metrics, thumbnails and per-second rows through the worker's own store_quality_outputs, the
signals measured by the real meter on synthetic clips whose properties are known by construction.

Two workers on two nodes, three cache policies, three failures of two kinds, and one clip per failure
mode: a still clip (least dynamic), a saturation ramp (most saturation drift), a blurring clip, a
flashing one, a roll-back, a pan that stops. `storyboard_clips` is a run of its own: a storyboard whose
second segment freezes and whose third begins with a hard cut, and a plain clip.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from quality_videos import analyse, blurring, flashing, pan, rolled_back, saturation_ramp, still

from pipeline.metrics import write_clip_metrics
from pipeline.storage import OutputTarget
from pipeline.worker.quality_outputs import store_quality_outputs
from pipeline.worker.rows import quality_columns

RUN_ID = "run-report"
T0 = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)
GPU = "NVIDIA H100 80GB HBM3"
TRICKY_PROMPT = "a <b>bold</b> fox & its 'friends' in \"quotes\""  # must show as text, not markup


@dataclass(frozen=True)
class Clip:
    clip_id: str
    prompt: str
    policy: str
    frames: np.ndarray | None  # None: the clip failed
    error: tuple[str, str] | None = None  # (error_type, error) of a failed clip
    segments: tuple[tuple[str, int], ...] = ()  # a storyboard: (prompt, first frame) of each segment


def stopping() -> np.ndarray:
    moving = pan(6, px_per_frame=2)
    return np.concatenate([moving, np.repeat(moving[-1:], 6 * 16, axis=0)])


def clips() -> list[Clip]:
    encode = ("EncodeError", "encoding clips/x.mp4 failed after 81 frames: ffmpeg exited with code 1")
    timeout = ("ClipTimeoutError", "clip slow ran past its deadline: 4 of 80 chunks in 900.0 s")
    return [
        Clip("still-lake", "a perfectly still mountain lake at dawn", "deep-forcing", still(8)),
        Clip("pan-river", "a drone glides along a winding river", "fifo", pan(8, px_per_frame=2)),
        Clip("flash-storm", "lightning over a dark city skyline", "sink", flashing(8, every_s=1.0, gain=70)),
        Clip("sat-sunset", "a sunset that grows ever more vivid", "fifo", saturation_ramp(12, 0.15, 0.9)),
        Clip("blur-fog", "fog rolls in over a harbour", "deep-forcing", blurring(10, max_sigma=3.0)),
        Clip("loop-carousel", "a carousel turning at a fair", "sink", rolled_back(away_s=10, back_s=5)),
        Clip("stop-train", TRICKY_PROMPT, "deep-forcing", stopping()),
        Clip("broken-1", "a glass of water on a table", "fifo", None, encode),
        Clip("broken-2", "a candle flickers in the dark", "deep-forcing", None, encode),
        Clip("slow", "a thousand birds in flight", "sink", None, timeout),
    ]


def freezing_story() -> Clip:
    """A storyboard: a pan, frozen for its second segment, then a hard cut to another scene."""
    moving = pan(8, px_per_frame=2)
    frames = np.concatenate([moving[:64], np.repeat(moving[63:64], 64, axis=0), pan(4, 2, seed=7)])
    segments = (("a fox trots through snow", 0), ("the fox stops", 64), ("northern lights", 128))
    return Clip("fox-story", "\n".join(p for p, _ in segments), "deep-forcing", frames, segments=segments)


def storyboard_clips() -> list[Clip]:
    return [freezing_story(), Clip("pan-river", "a drone glides along a river", "deep-forcing", pan(6, 2))]


def segments_column(clip: Clip, frames: int) -> list[dict[str, Any]]:
    starts = [first for _, first in clip.segments] + [frames]
    return [
        {"prompt": prompt, "first_frame": first, "last_frame": end - 1}
        for (prompt, first), end in zip(clip.segments, starts[1:], strict=True)
    ] or [{"prompt": clip.prompt, "first_frame": 0, "last_frame": frames - 1}]


def row_for(clip: Clip, index: int, target: OutputTarget) -> dict[str, Any]:
    """The metrics row the worker would have written, with the clip's real signals and outputs."""
    node, pid = ("node-a", 101) if index % 2 == 0 else ("node-b", 202)
    started = T0 + dt.timedelta(minutes=3 * (index // 2))
    frames = 0 if clip.frames is None else len(clip.frames)
    row: dict[str, Any] = {
        "run_id": RUN_ID,
        "clip_id": clip.clip_id,
        "attempt": 2 if clip.clip_id == "slow" else 1,
        "prompt": clip.prompt,
        "prompt_sha256": hashlib.sha256(clip.prompt.encode()).hexdigest(),
        "seed": 1000 + index,
        "model": "tiny",
        "config_hash": "cfg0123456789abc",
        "cache_policy": clip.policy,
        "cache_telemetry": {"sink_shifts": index, "compressions": 2 * index, "topc_age_hist": [1, 2]},
        "num_latent_frames": 21,
        "num_frames": frames or 81,
        "width": 160,
        "height": 96,
        "fps": 16.0,
        "t_load_s": 30.0 if index < 2 else None,
        "t_generate_s": 100.0,
        "t_decode_s": 20.0,
        "t_total_s": 150.0,
        "gen_fps": frames / 120.0 if frames else None,
        "node": node,
        "gpu": GPU,
        "worker_pid": pid,
        "started_at": started,
        "finished_at": started + dt.timedelta(seconds=150),
    }
    if clip.frames is None:
        assert clip.error is not None
        return row | {"status": "failed", "error_type": clip.error[0], "error": clip.error[1]}
    report = analyse(clip.frames, switch_frames=[first for _, first in clip.segments[1:]])
    row["segments"] = segments_column(clip, frames)
    key = f"clips/{clip.clip_id}.mp4"
    row |= {
        "status": "ok",
        "bytes": 1_000_000,
        "video_uri": target.url_for(key),
        "sha256": hashlib.sha256(clip.clip_id.encode()).hexdigest(),
        "t_encode_s": 2.0,
        "t_upload_s": 1.0,
    }
    row |= quality_columns(report)
    return row | store_quality_outputs(target, RUN_ID, clip.clip_id, row["attempt"], report)


def write_run(target: OutputTarget, chosen: list[Clip] | None = None) -> list[dict[str, Any]]:
    """The run of `chosen` clips (by default every clip of `clips()`), written as the worker would."""
    rows = [row_for(clip, i, target) for i, clip in enumerate(clips() if chosen is None else chosen)]
    for row in rows:
        write_clip_metrics(target, row)
    return rows
