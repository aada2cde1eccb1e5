"""A clip's metrics row (`pipeline.metrics.METRICS_SCHEMA`), filled in as the clip goes: what was asked,
where it ran, where its time went, the stored video or the failure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from pipeline.metrics import rows_to_table
from pipeline.quality import ClipReport, SwitchQuality
from pipeline.spec.clip import ClipSpec, is_valid_id
from pipeline.spec.model import ModelPreset
from pipeline.storage import StoredObject

if TYPE_CHECKING:  # the row module stays torch-free; generate.py produces the stats
    from pipeline.generate import ClipStats

MAX_ERROR_CHARS = 4000  # error text kept in a metrics row (encoder errors carry an ffmpeg stderr tail)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def started_row(
    clip: ClipSpec,
    run_id: str,
    model: str,
    model_sha: str | None,
    preset: ModelPreset,
    node: str,
    gpu: str | None,
) -> dict[str, Any]:
    """The row of a clip that has not got anywhere yet: failed until it is ok."""
    started = now()
    return {
        "run_id": run_id,
        "clip_id": clip.clip_id,
        "attempt": 0,
        "status": "failed",
        "prompt": clip.prompt,
        "prompt_sha256": hashlib.sha256(clip.prompt.encode()).hexdigest(),
        "seed": clip.seed,
        "model": model,
        "model_sha": model_sha,
        "config_hash": clip.config_hash,
        "cache_policy": clip.cache_policy,
        "cache_telemetry": None,
        "num_latent_frames": clip.num_latent_frames,
        "num_frames": preset.pixel_frames(clip.num_latent_frames),
        "width": preset.width,
        "height": preset.height,
        "fps": float(preset.fps),
        "segments": segments_column(clip, preset),
        "node": node,
        "gpu": gpu,
        "worker_pid": os.getpid(),
        "started_at": started,
        "finished_at": started,
    }


def segments_column(clip: ClipSpec, preset: ModelPreset) -> list[dict[str, Any]]:
    """Each prompt of the clip with its first and last video frame (`segment_signals` follows it)."""
    return [
        {
            "prompt": segment.prompt,
            "first_frame": preset.first_pixel_frame(segment.first_frame),
            "last_frame": preset.pixel_frames(segment.end_frame) - 1,
        }
        for segment in clip.segments
    ]


def generation_columns(stats: ClipStats, preset: ModelPreset) -> dict[str, Any]:
    generate_s, decode_s = sum(stats.dit_s), sum(stats.vae_s)
    frames = preset.pixel_frames(len(stats.dit_s) * preset.chunk_frames)
    return {
        "t_generate_s": generate_s,
        "t_decode_s": decode_s,
        "gen_fps": frames / (generate_s + decode_s) if generate_s + decode_s > 0 else None,
        "peak_gpu_mem_gb": stats.peak_memory_gb,
        "clips_per_forward": stats.clips_per_forward,
        "cache_telemetry": telemetry_json(stats.cache_telemetry),
        **prompt_columns(stats),
    }


def switch_frames(segments: list[dict[str, Any]]) -> list[int]:
    """Where the quality meter splits the clip: the first video frame of every segment after the first."""
    return [segment["first_frame"] for segment in segments[1:]]


def quality_columns(quality: ClipReport | None) -> dict[str, Any]:
    """The clip's quality signals and each segment's; none when the meter gave no report (it logged why)."""
    if quality is None:
        return {}
    segments = [
        dataclasses.asdict(segment.signals) | switch_columns(segment.switch) for segment in quality.segments
    ]
    return dataclasses.asdict(quality.clip) | {"t_quality_s": quality.cpu_s, "segment_signals": segments}


def switch_columns(switch: SwitchQuality | None) -> dict[str, Any]:
    """The switch_* fields of a segment's signals: null for the first segment, which has no switch."""
    if switch is None:
        return {"switch_step": None, "switch_ratio": None, "switch_cut": None}
    return {"switch_step": switch.step, "switch_ratio": switch.ratio, "switch_cut": switch.cut}


def second_rows(run_id: str, clip_id: str, attempt: int, quality: ClipReport) -> list[dict[str, Any]]:
    """The clip's rows of the per-second table (pipeline.metrics.SECONDS_SCHEMA)."""
    ids = {"run_id": run_id, "clip_id": clip_id, "attempt": attempt}
    return [ids | dataclasses.asdict(second) for second in quality.seconds]


def prompt_columns(stats: ClipStats) -> dict[str, Any]:
    """Set once the prompt is encoded, so a clip that fails later still records them."""
    return {"prompt_tokens": stats.prompt_tokens, "truncated": stats.truncated}


def video_columns(stored: StoredObject, encode_s: float, upload_s: float) -> dict[str, Any]:
    return {
        "status": "ok",
        "t_encode_s": encode_s,  # encoding not hidden behind generation
        "t_upload_s": upload_s,
        "bytes": stored.bytes,
        "video_uri": stored.uri,
        "sha256": stored.sha256,
        "checksum": stored.checksum,
    }


def skipped_columns(holder: str) -> dict[str, Any]:
    """A clip another run owns (worker/claims.py): reported to the driver, never written to the table."""
    return {"status": "skipped", "error_type": "ClaimedByAnotherRun", "error": holder}


def failure_columns(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "error_type": type(exc).__name__, "error": str(exc)[:MAX_ERROR_CHARS]}


def last_resort_row(
    clip: Any, run_id: str, model: str, preset: ModelPreset, node: str, exc: BaseException
) -> dict[str, Any]:
    """A failed row for a clip whose own row could not be built or stored: only the clip's values that
    fit the schema are kept, the rest are zero or empty, and the error says what the clip asked for."""
    try:
        started_row(clip, run_id, model, None, preset, node, None)
        asked = repr(clip)
    except Exception:  # the clip record itself is broken: say what it is
        asked = f"{type(clip).__name__} {vars(clip) if hasattr(clip, '__dict__') else clip!r}"
    clip_id = getattr(clip, "clip_id", None)
    if not is_valid_id(clip_id):
        clip_id = "invalid-" + hashlib.sha256(asked.encode()).hexdigest()[:16]
    prompt = getattr(clip, "prompt", "")
    prompt = prompt if isinstance(prompt, str) else ""
    fields = {
        "seed": getattr(clip, "seed", 0),
        "num_latent_frames": getattr(clip, "num_latent_frames", 0),
        "config_hash": getattr(clip, "config_hash", ""),
        "cache_policy": getattr(getattr(clip, "cache", None), "policy", ""),
    }
    row = {
        "run_id": run_id,
        "clip_id": clip_id,
        "attempt": 0,
        "prompt": prompt,
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
        "model": model,
        "num_frames": 0,
        "width": preset.width,
        "height": preset.height,
        "fps": float(preset.fps),
        "node": node,
        "worker_pid": os.getpid(),
        "started_at": now(),
        "finished_at": now(),
        **failure_columns(exc),
        "error": f"{type(exc).__name__}: {exc}; the clip asked for {asked}"[:MAX_ERROR_CHARS],
    }
    for name, value in fields.items():  # each kept only where the schema can hold it
        try:
            rows_to_table([{**row, name: value}])
            row[name] = value
        except ValueError:
            row[name] = 0 if name in ("seed", "num_latent_frames") else ""
    if row["num_latent_frames"]:
        row["num_frames"] = preset.pixel_frames(row["num_latent_frames"])
    return row


def telemetry_json(telemetry: dict[str, Any]) -> str:
    return json.dumps(telemetry, sort_keys=True, default=str)
