"""A clip's metrics row (`pipeline.metrics.METRICS_SCHEMA`), filled in as the clip goes: what was asked,
where it ran, where its time went, the stored video or the failure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from pipeline.quality import ClipQuality
from pipeline.spec.clip import ClipSpec
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
        "node": node,
        "gpu": gpu,
        "worker_pid": os.getpid(),
        "started_at": started,
        "finished_at": started,
    }


def generation_columns(stats: ClipStats, preset: ModelPreset) -> dict[str, Any]:
    generate_s, decode_s = sum(stats.dit_s), sum(stats.vae_s)
    frames = preset.pixel_frames(len(stats.dit_s) * preset.chunk_frames)
    return {
        "t_generate_s": generate_s,
        "t_decode_s": decode_s,
        "gen_fps": frames / (generate_s + decode_s) if generate_s + decode_s > 0 else None,
        "peak_gpu_mem_gb": stats.peak_memory_gb,
        "cache_telemetry": telemetry_json(stats.cache_telemetry),
        **prompt_columns(stats),
    }


def prompt_columns(stats: ClipStats) -> dict[str, Any]:
    """Set once the prompt is encoded, so a clip that fails later still records them."""
    return {"prompt_tokens": stats.prompt_tokens, "truncated": stats.truncated}


def quality_columns(quality: ClipQuality | None) -> dict[str, Any]:
    return dataclasses.asdict(quality) if quality is not None else {}


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


def failure_columns(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "error_type": type(exc).__name__, "error": str(exc)[:MAX_ERROR_CHARS]}


def telemetry_json(telemetry: dict[str, Any]) -> str:
    return json.dumps(telemetry, sort_keys=True, default=str)
