"""The command line of `jobs/render.py`, and the `RenderConfig` it parses into."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from pipeline.driver.config import CPU_CPUS_PER_WORKER, CPU_WORKERS, GPU_CPUS_PER_WORKER, RenderConfig
from pipeline.encode import EncoderSettings
from pipeline.prompts import DEFAULT_CLIP_SECONDS, DEFAULT_MAX_SECONDS, MAX_SECONDS_LIMIT, RenderDefaults
from pipeline.spec.cache import DEFAULT_POLICY, POLICY_PARAMS
from pipeline.spec.clip import ID_RULE, is_valid_id
from pipeline.spec.model import PRESETS, SELF_FORCING_1_3B, get_preset
from pipeline.spec.storyboard import DEFAULT_RECACHE, RECACHE_MODES
from pipeline.storage.cli import add_s3_options, s3_settings_from_args
from pipeline.worker import WorkerConfig
from pipeline.worker.config import (
    CONV_SEARCHES,
    FULL_CONV_SEARCH_SAVING_S_PER_CHUNK,
    FULL_CONV_SEARCH_WARMUP_S,
    MAX_AUTO_CLIPS_PER_FORWARD,
)

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="render.py",
        description="Render every prompt of a JSONL file into an mp4 and a metrics row (line format: "
        "pipeline/prompts.py). Clips already done in --out are skipped, so rerunning resumes.",
    )
    parser.add_argument("prompts", help="prompt file (JSONL): a local path or s3://bucket/key")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out", default="renders", help="local folder or s3://bucket/prefix (default: %(default)s)"
    )
    out.add_argument(
        "--run-id",
        help="names the metrics partition metrics/run_id=<id>/ (default: UTC start time + random suffix); "
        "rerun with the same id to resume a run as one",
    )
    out.add_argument("--force", action="store_true", help="render clips again even if they are done")
    clips = parser.add_argument_group("clip defaults (a line's own fields win)")
    length = clips.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help=_seconds_help())
    length.add_argument(
        "--latent-frames",
        type=int,
        help=f"clip length in latent frames, a multiple of {SELF_FORCING_1_3B.chunk_frames} "
        "(L latent frames decode to 1 + 4(L-1) frames)",
    )
    clips.add_argument(
        "--seed", type=int, help="seed for lines without one (default: derived from each line)"
    )
    clips.add_argument(
        "--cache-policy",
        default=DEFAULT_POLICY,
        help=f"KV cache policy for lines without one: {', '.join(sorted(POLICY_PARAMS))} "
        "(default: %(default)s)",
    )
    clips.add_argument(
        "--cache-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of --cache-policy (repeatable); VALUE is read as JSON, else as a string",
    )
    clips.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help=f"longest clip a line may ask for (default: %(default)g, 30 min; at most {MAX_SECONDS_LIMIT:g})",
    )
    clips.add_argument(
        "--recache",
        default=DEFAULT_RECACHE,
        choices=RECACHE_MODES,
        help="what a storyboard line's cache re-computes at a prompt switch, for lines without one: none, "
        "window (all but the sink), all (default: %(default)s; README: Storyboards)",
    )
    clips.add_argument(
        "--skip-invalid", action="store_true", help="render the valid lines when some are invalid"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything a run needs (lines, options, model folder, ffmpeg, output, S3), print the "
        "plan and its estimated GPU-hours, and stop before Ray starts",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", default="tiny", choices=sorted(PRESETS), help="model preset (default: %(default)s)"
    )
    model.add_argument("--model-dir", help="weights folder or s3:// URI (presets that need weights)")
    model.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights instead of --model-dir: the videos are noise, the cost is real "
        "(load tests, throughput benchmarks)",
    )
    model.add_argument(
        "--clips-per-forward",
        default="auto",
        metavar="N|auto",
        help="clips of the same length and cache parameters that each GPU renders as one batch: more "
        "frames per second, each clip's frames as if alone; auto: as many as the GPU's free memory "
        f"holds, at most {MAX_AUTO_CLIPS_PER_FORWARD} (1 on CPUs) (default: %(default)s)",
    )
    model.add_argument(
        "--conv-search",
        default="auto",
        choices=CONV_SEARCHES,
        help="how long each GPU worker lets cuDNN search for the VAE's fastest conv kernels: full (about "
        f"{FULL_CONV_SEARCH_WARMUP_S:.0f} s more start-up per worker, then "
        f"{FULL_CONV_SEARCH_SAVING_S_PER_CHUNK * 1e3:.1f} ms less decode per chunk), quick (PyTorch's "
        "default), auto: full when a worker's share of the run pays it back (default: %(default)s)",
    )
    encoding = parser.add_argument_group("encoding")
    defaults = EncoderSettings()
    encoding.add_argument("--crf", type=int, default=defaults.crf, help="x264 CRF (default: %(default)s)")
    encoding.add_argument(
        "--x264-preset",
        default=defaults.preset,
        choices=X264_PRESETS,
        help="x264 speed/size trade-off, fastest first: %(choices)s (default: %(default)s)",
    )
    encoding.add_argument("--ffmpeg", help="ffmpeg binary (default: $FFMPEG_BINARY, imageio-ffmpeg's, PATH)")
    add_s3_options(parser)
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)"
    )
    cluster.add_argument(
        "--workers", type=int, help=f"render actors (default: one per GPU, {CPU_WORKERS} without GPUs)"
    )
    cluster.add_argument(
        "--gpus", type=int, help="GPUs to use; 0 for CPU actors (default: the cluster's GPUs now)"
    )
    cluster.add_argument(
        "--cpus-per-worker",
        type=float,
        help=f"CPUs each actor reserves (default: {GPU_CPUS_PER_WORKER} with a GPU, "
        f"{CPU_CPUS_PER_WORKER} without)",
    )
    timeouts = parser.add_argument_group("timeouts (seconds)")
    worker_defaults = WorkerConfig(out="", run_id="")
    timeouts.add_argument(
        "--clip-timeout",
        type=float,
        default=worker_defaults.clip_timeout_s,
        help="a clip still generating after this fails (checked between chunks; default: %(default)s)",
    )
    timeouts.add_argument(
        "--hang-timeout",
        type=float,
        default=worker_defaults.hang_timeout_s,
        help="no frames for this long: the worker restarts (default: %(default)s)",
    )
    timeouts.add_argument(
        "--no-progress-timeout",
        type=float,
        help="stop when no clip finished for this long (default: max(2 x clip timeout, 3600))",
    )
    timeouts.add_argument(
        "--progress-interval",
        type=float,
        default=RenderConfig.progress_interval_s,
        help="heartbeat log interval (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="driver and worker log level; DEBUG adds each ffmpeg command line and metrics write "
        "(default: %(default)s)",
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RenderConfig:
    """Options -> RenderConfig; ValueError naming the option for values that cannot work."""
    preset = get_preset(args.model)
    if args.random_weights and args.model_dir:
        raise ValueError("--random-weights and --model-dir exclude each other; pass one")
    if preset.needs_weights and not (args.model_dir or args.random_weights):
        raise ValueError(
            f"--model {args.model} needs weights: pass --model-dir (a folder or s3:// URI), "
            "or --random-weights to measure throughput"
        )
    if not preset.needs_weights and args.model_dir:
        raise ValueError(
            f"--model-dir was given but --model {args.model} uses random weights; "
            "add --model self-forcing-1.3b to render with the weights in --model-dir"
        )
    for name in ("workers", "gpus"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "workers" else 0):
            raise ValueError(f"--{name}={value} must be >= {1 if name == 'workers' else 0}")
    clips_per_forward = parse_clips_per_forward(args.clips_per_forward)
    s3 = s3_settings_from_args(args)
    if args.run_id is not None and not is_valid_id(args.run_id):
        raise ValueError(
            f"--run-id {args.run_id!r} must be {ID_RULE}: it names the folder metrics/run_id=<id>/; "
            "e.g. --run-id run-2026-12-01"
        )
    run_id = args.run_id or f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    worker = WorkerConfig(
        out=args.out,
        run_id=run_id,
        model=args.model,
        model_dir=args.model_dir,
        random_weights=args.random_weights,
        s3=s3,
        encoder=EncoderSettings(crf=args.crf, preset=args.x264_preset),
        ffmpeg=args.ffmpeg,
        clip_timeout_s=args.clip_timeout,
        hang_timeout_s=args.hang_timeout,
        log_level=args.log_level,
        planned_at=time.time(),
        force=args.force,
        clips_per_forward=clips_per_forward,
    )
    defaults = RenderDefaults(
        preset=preset,
        model_source=args.model_dir or "random",
        seed=args.seed,
        seconds=None
        if args.latent_frames is not None
        else (args.seconds if args.seconds is not None else DEFAULT_CLIP_SECONDS),
        latent_frames=args.latent_frames,
        cache_policy=args.cache_policy,
        cache_params=dict(_parse_param(text) for text in args.cache_param),
        max_seconds=args.max_seconds,
        recache=args.recache,
    )
    return RenderConfig(
        prompts=args.prompts,
        defaults=defaults,
        worker=worker,
        force=args.force,
        skip_invalid=args.skip_invalid,
        dry_run=args.dry_run,
        address=args.address,
        workers=args.workers,
        gpus=args.gpus,
        cpus_per_worker=args.cpus_per_worker,
        no_progress_timeout_s=args.no_progress_timeout,
        progress_interval_s=args.progress_interval,
        log_level=args.log_level,
        conv_search=args.conv_search,
    )


def _seconds_help() -> str:
    preset = SELF_FORCING_1_3B  # every preset shares its fps and chunking
    default = preset.latent_frames_for_seconds(DEFAULT_CLIP_SECONDS)
    chunk_s = preset.vae.temporal_stride * preset.chunk_frames / preset.fps
    return (
        f"clip length in seconds, rounded up to whole chunks of {preset.chunk_frames} latent frames "
        f"({chunk_s:g} s at {preset.fps} fps): {DEFAULT_CLIP_SECONDS:g} s = {default} latent frames = "
        f"{preset.pixel_frames(default)} frames (default: {DEFAULT_CLIP_SECONDS:g})"
    )


def _parse_param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(
            f"--cache-param {text!r} must look like NAME=VALUE, e.g. --cache-param window_frames=15"
        )
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def parse_clips_per_forward(value: str) -> int | None:
    """--clips-per-forward: "auto" -> None, else a count >= 1; ValueError naming the option."""
    if value == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"--clips-per-forward {value!r} must be a whole number >= 1 or 'auto'; "
            "e.g. --clips-per-forward 2, or leave it out for auto"
        )
    return count
