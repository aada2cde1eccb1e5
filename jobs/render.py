"""Render a prompt file into videos and a metrics table, on a Ray cluster or on this machine.

    ray job submit --working-dir . -- python jobs/render.py prompts.jsonl --out s3://bucket/run1 \\
        --model self-forcing-1.3b --model-dir s3://bucket/models/self-forcing
    python jobs/render.py examples/prompts.jsonl        # embedded local Ray, ./renders, tiny model

The recipe: validate every line -> skip clips already done (resume) -> one clip per Ray Data block ->
`map_batches(RenderWorker)` on an actor pool, one actor per GPU -> a progress line per finished clip ->
compact the run's metrics -> summary. Exit code 0 when every clip is ok (or was already done), 1 when
any clip failed or the pipeline stopped, 2 when the input or options are invalid (nothing rendered).

Prompt file format, seeds and clip ids: pipeline/prompts.py. What a worker does: pipeline/worker.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python jobs/render.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import ray  # noqa: E402
from ray.data import ActorPoolStrategy, DataContext  # noqa: E402

from pipeline.cache import POLICIES  # noqa: E402
from pipeline.encode import EncoderSettings  # noqa: E402
from pipeline.metrics import compact_run, done_clip_ids  # noqa: E402
from pipeline.model.presets import PRESETS, get_preset  # noqa: E402
from pipeline.prompts import ClipSpec, RenderDefaults, load_prompts  # noqa: E402
from pipeline.storage import OutputTarget, S3Settings, StorageError, open_target, read_text  # noqa: E402
from pipeline.worker import RenderWorker, WorkerConfig  # noqa: E402

logger = logging.getLogger("render")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
DEFAULT_CACHE_POLICY = "deep-forcing"  # the product's point: minute-long clips without drift
GPU_CPUS_PER_WORKER = 4  # x264 threads + upload + the Python loop beside each GPU (ecosystem §3.5)
CPU_CPUS_PER_WORKER = 1  # a CPU-only actor: torch runs on this many threads
CPU_WORKERS = 2  # default actors on a machine without GPUs
FAILED_CLIPS_SHOWN = 20  # failed clips listed in the summary


@dataclass(frozen=True)
class RenderConfig:
    prompts: str  # prompt file: local path or s3:// URI
    defaults: RenderDefaults  # run-wide values for fields a line leaves out
    worker: WorkerConfig  # everything a RenderWorker needs (output, model, encoder, timeouts)
    force: bool = False  # render clips that are already done
    skip_invalid: bool = False  # render the valid lines of a file with invalid ones
    address: str | None = None  # Ray cluster; None: $RAY_ADDRESS, else an embedded local Ray
    workers: int | None = None  # actors; None: one per GPU, or CPU_WORKERS without GPUs
    gpus: int | None = None  # GPUs to use; None: those the cluster has now (autoscaling: pass it)
    cpus_per_worker: float | None = None  # None: GPU_CPUS_PER_WORKER, or CPU_CPUS_PER_WORKER without GPUs
    no_progress_timeout_s: float | None = None  # Ray Data gives up after this long without a clip
    progress_interval_s: float = 60.0  # a heartbeat line when no clip finished for this long
    log_level: str = "INFO"

    @property
    def run_id(self) -> str:
        return self.worker.run_id


@dataclass(frozen=True)
class Resources:
    """How the actor pool is sized and what each actor asks Ray for."""

    workers: int
    num_gpus: int  # per actor: 1, or 0 on CPU-only machines
    num_cpus: float  # per actor, explicit: a GPU UDF's default of 1 CPU starves other tasks on small nodes


# ---------------------------------------------------------------------------------------------
# 1. The recipe
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")  # no-op if logging is set up
    for name in ("render", "pipeline"):
        logging.getLogger(name).setLevel(args.log_level)
    try:
        cfg = config_from_args(args)
        clips = read_clips(cfg)  # 1. every line validated before anything starts
        target = open_target(cfg.worker.out, cfg.worker.s3)
        todo, skipped = plan(clips, target, cfg.force)  # 2. resume
    except (ValueError, OSError, StorageError) as exc:
        logger.error("%s", exc)
        return EXIT_INVALID
    run = RunReport(cfg.run_id, target.uri, total=len(todo), skipped=len(skipped))
    if todo:
        try:
            with ray_session(cfg, len(todo)) as resources:  # 3. the cluster, or an embedded local Ray
                render(todo, cfg, resources, run)  # 4. one clip per block, progress per clip
        except ValueError as exc:  # the cluster cannot run this (no GPUs, local --out on many nodes)
            logger.error("%s", exc)
            return EXIT_INVALID
        try:
            run.metrics_uri = compact_run(target, cfg.run_id)  # 5. one metrics file per run
        except (StorageError, OSError, ValueError) as exc:  # the per-clip files are still all there
            logger.warning(
                "compacting the metrics of run %s failed (per-clip files remain): %s", cfg.run_id, exc
            )
    run.log_summary({clip.clip_id: clip for clip in clips})  # 6. summary
    return EXIT_OK if run.all_ok else EXIT_FAILED


def render(todo: list[ClipSpec], cfg: RenderConfig, resources: Resources, run: RunReport) -> None:
    """Ray Data: one clip per block, a pool of RenderWorker actors; rows come back as clips finish."""
    context = DataContext.get_current()
    context.enable_progress_bars = False  # our own log lines read better in `ray job logs`
    context.execution_no_progress_timeout_s = cfg.no_progress_timeout_s or max(
        2 * cfg.worker.clip_timeout_s, 3600.0
    )
    clips = ray.data.from_items([clip.row() for clip in todo], override_num_blocks=len(todo))
    rows = clips.map_batches(
        RenderWorker,
        fn_constructor_kwargs={"config": cfg.worker},
        batch_size=1,
        compute=ActorPoolStrategy(
            size=resources.workers,  # actors start as resources appear; rendering begins with the first
            # Two calls per actor: one generates while the other encodes and uploads (worker.py).
            max_tasks_in_flight_per_actor=2,
            max_concurrent_calls_per_actor=2,
            enable_true_multi_threading=True,
        ),
        num_gpus=resources.num_gpus,
        num_cpus=resources.num_cpus,
    )
    logger.info(
        "rendering %d clip(s) on %d worker(s) (%s GPU, %s CPU each) into %s, run %s",
        len(todo),
        resources.workers,
        resources.num_gpus,
        resources.num_cpus,
        run.out,
        run.run_id,
    )
    lines = {clip.clip_id: clip.line for clip in todo}
    with run.heartbeat(cfg.progress_interval_s):
        try:
            for row in rows.iter_rows():
                run.add(row, lines.get(row["clip_id"]))
        except Exception as exc:  # the pipeline itself stopped (no GPUs, actors failing to start, timeout)
            run.pipeline_error = f"{type(exc).__name__}: {exc}"
            logger.error("the Ray pipeline stopped: %s", run.pipeline_error)


# ---------------------------------------------------------------------------------------------
# 2. Input and planning
# ---------------------------------------------------------------------------------------------


def read_clips(cfg: RenderConfig) -> list[ClipSpec]:
    text = read_text(cfg.prompts, cfg.worker.s3)
    clips, invalid = load_prompts(text, cfg.prompts, cfg.defaults, skip_invalid=cfg.skip_invalid)
    for line, reason in invalid:
        logger.warning("%s line %d skipped (--skip-invalid): %s", cfg.prompts, line, reason)
    logger.info(
        "%s: %d clip(s)%s",
        cfg.prompts,
        len(clips),
        f", {len(invalid)} invalid line(s) skipped" * bool(invalid),
    )
    return clips


def plan(clips: list[ClipSpec], target: OutputTarget, force: bool) -> tuple[list[ClipSpec], list[ClipSpec]]:
    """(to render, already done): done = an ok metrics row in any run AND the video object."""
    done = set() if force else done_clip_ids(target)
    todo = [clip for clip in clips if clip.clip_id not in done]
    skipped = [clip for clip in clips if clip.clip_id in done]
    if skipped:
        logger.info(
            "%d of %d clip(s) already done in %s, skipped (pass --force to render them again)",
            len(skipped),
            len(clips),
            target.uri,
        )
    return todo, skipped


# ---------------------------------------------------------------------------------------------
# 3. Ray: connect or start, size the actor pool
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_session(cfg: RenderConfig, clips: int) -> Iterator[Resources]:
    """Connect to the cluster ($RAY_ADDRESS, set by `ray job submit`, or --address) or start a local Ray.

    A local Ray gets more logical CPUs than its actors take, so nothing else starves, and
    PYTHONPATH pointing at this checkout so that actors import the same `pipeline`.
    """
    started = False
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            workers = cfg.workers or CPU_WORKERS
            per_worker = cfg.cpus_per_worker or GPU_CPUS_PER_WORKER
            logical_cpus = max(os.cpu_count() or 1, int(workers * per_worker) + 2)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            )
            ray.init(
                address="local", num_cpus=logical_cpus, include_dashboard=False, logging_level=logging.WARNING
            )
            logger.info(
                "started an embedded local Ray (%d logical CPUs); pass --address to use a cluster",
                logical_cpus,
            )
        started = True
    try:
        resources = size_pool(cfg, ray.cluster_resources(), len(ray.nodes()), clips)
        yield resources
    finally:
        if started:
            ray.shutdown()


def size_pool(cfg: RenderConfig, cluster: dict[str, float], nodes: int, clips: int) -> Resources:
    """Actors (never more than clips) and their resources, from the options and the cluster now."""
    gpus = cfg.gpus if cfg.gpus is not None else int(cluster.get("GPU", 0))
    preset = get_preset(cfg.worker.model)
    if gpus == 0 and cfg.gpus is None and preset.needs_weights:
        raise ValueError(
            f"model {preset.name} needs GPUs but the cluster has none right now; pass --gpus N to wait for "
            "N GPU workers (autoscaling clusters start them on demand), or --gpus 0 to run on CPUs anyway"
        )
    if nodes > 1 and not cfg.worker.out.startswith("s3://"):
        raise ValueError(
            f"--out {cfg.worker.out} is a local folder but the cluster has {nodes} nodes: each would keep "
            "its own videos; pass --out s3://bucket/prefix"
        )
    if gpus > 0:
        return Resources(min(cfg.workers or gpus, clips), 1, cfg.cpus_per_worker or GPU_CPUS_PER_WORKER)
    return Resources(min(cfg.workers or CPU_WORKERS, clips), 0, cfg.cpus_per_worker or CPU_CPUS_PER_WORKER)


# ---------------------------------------------------------------------------------------------
# 4. Progress and summary
# ---------------------------------------------------------------------------------------------


@dataclass
class RunReport:
    """Counts finished clips, logs one line per clip, a heartbeat, and the summary at the end."""

    run_id: str
    out: str
    total: int  # clips to render in this run
    skipped: int  # clips already done
    rows: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    last_row: float = field(default_factory=time.monotonic)
    pipeline_error: str | None = None
    metrics_uri: str | None = None

    @property
    def ok(self) -> int:
        return sum(row["status"] == "ok" for row in self.rows)

    @property
    def failed(self) -> int:
        return len(self.rows) - self.ok

    @property
    def all_ok(self) -> bool:
        return self.ok == self.total and self.pipeline_error is None

    def add(self, row: dict[str, Any], line: int | None) -> None:
        self.rows.append(row)
        self.last_row = time.monotonic()
        elapsed = self.last_row - self.started
        rate = len(self.rows) / elapsed * 3600
        left = self.total - len(self.rows)
        eta = _duration(left / rate * 3600) if rate > 0 else "?"
        where = f"clip {row['clip_id']}" + (f" (line {line})" if line else "")
        if row["status"] == "ok":
            what = (
                f"{row['num_frames']} frames in {row['t_total_s']:.1f} s "
                f"(generation {row['gen_fps'] or 0:.1f} fps), {row['bytes'] / 1e6:.2f} MB"
            )
        else:
            what = f"{row['error_type']}: {_first_line(row['error'])}"
        logger.info(
            "[%d/%d] %-6s %s: %s | ok %d, failed %d, %d left, %.0f clips/h, ETA %s",
            len(self.rows),
            self.total,
            row["status"],
            where,
            what,
            self.ok,
            self.failed,
            left,
            rate,
            eta,
        )

    @contextlib.contextmanager
    def heartbeat(self, interval_s: float) -> Iterator[None]:
        """Log a line when no clip has finished for `interval_s` (actors starting, autoscaler, long clips)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval_s):
                if time.monotonic() - self.last_row >= interval_s:
                    logger.info(
                        "still rendering: %d of %d clip(s) done after %s; waiting for the next one "
                        "(`ray status` shows pending workers)",
                        len(self.rows),
                        self.total,
                        _duration(time.monotonic() - self.started),
                    )

        thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def log_summary(self, clips: dict[str, ClipSpec]) -> None:
        elapsed = time.monotonic() - self.started
        ok_rows = [row for row in self.rows if row["status"] == "ok"]
        lost = self.total - len(self.rows)
        frames = sum(row["num_frames"] for row in ok_rows)
        video_s = sum(row["num_frames"] / row["fps"] for row in ok_rows)
        fps = [row["gen_fps"] for row in ok_rows if row["gen_fps"]]
        lines = [
            f"run {self.run_id} -> {self.out}: {_duration(elapsed)} wall",
            f"  {'status':<8} {'clips':>6} {'frames':>8} {'video s':>8} {'gen fps':>8} {'MB':>8}",
            f"  {'ok':<8} {len(ok_rows):>6} {frames:>8} {video_s:>8.1f} "
            f"{(sum(fps) / len(fps) if fps else 0):>8.1f} {sum(row['bytes'] for row in ok_rows) / 1e6:>8.2f}",
            f"  {'failed':<8} {self.failed:>6}",
            f"  {'skipped':<8} {self.skipped:>6}   (done in an earlier run)",
        ]
        if lost:
            lines.append(f"  {'lost':<8} {lost:>6}   (never came back: {_last_line(self.pipeline_error)})")
        if self.rows:
            lines.append(f"  throughput: {len(self.rows) / elapsed * 3600:.0f} clips/h")
        failed = [row for row in self.rows if row["status"] != "ok"]
        for row in failed[:FAILED_CLIPS_SHOWN]:
            clip = clips.get(row["clip_id"])
            line = f"line {clip.line}, " if clip else ""
            lines.append(
                f"  failed: {line}clip {row['clip_id']}: {row['error_type']}: {_first_line(row['error'])}"
            )
        if len(failed) > FAILED_CLIPS_SHOWN:
            lines.append(
                f"  ... and {len(failed) - FAILED_CLIPS_SHOWN} more failed clip(s): see the metrics table"
            )
        if self.metrics_uri:
            lines.append(f"  metrics: {self.metrics_uri}")
        if failed or lost:
            lines.append("  rerun the same command to retry failed clips; finished ones are skipped")
        logger.info("summary\n%s", "\n".join(lines))


def _duration(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


def _last_line(text: str | None, limit: int = 300) -> str:
    """The last line of a Ray error: its traceback ends with the exception that caused it."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= limit else last[: limit - 3] + "..."


def _first_line(text: str | None, limit: int = 200) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# 5. Command line
# ---------------------------------------------------------------------------------------------


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
    out.add_argument("--run-id", help="names the metrics partition (default: UTC start time + random suffix)")
    out.add_argument("--force", action="store_true", help="render clips again even if they are done")
    clips = parser.add_argument_group("clip defaults (a line's own fields win)")
    length = clips.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="clip length in seconds (default: 60)")
    length.add_argument("--latent-frames", type=int, help="clip length in latent frames (multiple of 3)")
    clips.add_argument(
        "--seed", type=int, help="seed for lines without one (default: derived from each line)"
    )
    clips.add_argument(
        "--cache-policy",
        default=DEFAULT_CACHE_POLICY,
        help=f"KV cache policy for lines without one: {', '.join(sorted(POLICIES))} (default: %(default)s)",
    )
    clips.add_argument(
        "--cache-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of --cache-policy (repeatable); VALUE is read as JSON, else as a string",
    )
    clips.add_argument(
        "--skip-invalid", action="store_true", help="render the valid lines when some are invalid"
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
    encoding = parser.add_argument_group("encoding")
    defaults = EncoderSettings()
    encoding.add_argument("--crf", type=int, default=defaults.crf, help="x264 CRF (default: %(default)s)")
    encoding.add_argument("--preset", default=defaults.preset, help="x264 preset (default: %(default)s)")
    encoding.add_argument("--ffmpeg", help="ffmpeg binary (default: $FFMPEG_BINARY, imageio-ffmpeg's, PATH)")
    storage = parser.add_argument_group(
        "S3 (credentials come only from the AWS chain: env, ~/.aws, instance profile)"
    )
    storage.add_argument("--s3-endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:8333")
    storage.add_argument("--s3-region", help="bucket region (default: the AWS chain's)")
    storage.add_argument("--s3-addressing-style", default="auto", choices=["auto", "path", "virtual"])
    storage.add_argument(
        "--checksum-mode",
        default="when_supported",
        choices=["when_supported", "when_required"],
        help="boto3 request/response checksums; when_required for stores that reject boto3>=1.36 defaults",
    )
    storage.add_argument(
        "--checksum-algorithm",
        default="SHA256",
        help="checksum sent with uploads (CRC32, CRC32C, CRC64NVME, SHA1, SHA256; 'none' to send none)",
    )
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
        "--progress-interval", type=float, default=60.0, help="heartbeat log interval (default: %(default)s)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
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
    s3 = S3Settings(
        endpoint_url=args.s3_endpoint_url,
        region=args.s3_region,
        addressing_style=args.s3_addressing_style,
        checksum_algorithm="" if args.checksum_algorithm.lower() == "none" else args.checksum_algorithm,
        request_checksum_calculation=args.checksum_mode,
        response_checksum_validation=args.checksum_mode,
    )
    run_id = args.run_id or f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    worker = WorkerConfig(
        out=args.out,
        run_id=run_id,
        model=args.model,
        model_dir=args.model_dir,
        random_weights=args.random_weights,
        s3=s3,
        encoder=EncoderSettings(crf=args.crf, preset=args.preset),
        ffmpeg=args.ffmpeg,
        clip_timeout_s=args.clip_timeout,
        hang_timeout_s=args.hang_timeout,
        log_level=args.log_level,
    )
    defaults = RenderDefaults(
        preset=preset,
        model_source=args.model_dir or "random",
        seed=args.seed,
        seconds=None
        if args.latent_frames is not None
        else (args.seconds if args.seconds is not None else 60.0),
        latent_frames=args.latent_frames,
        cache_policy=args.cache_policy,
        cache_params=dict(_parse_param(text) for text in args.cache_param),
    )
    return RenderConfig(
        prompts=args.prompts,
        defaults=defaults,
        worker=worker,
        force=args.force,
        skip_invalid=args.skip_invalid,
        address=args.address,
        workers=args.workers,
        gpus=args.gpus,
        cpus_per_worker=args.cpus_per_worker,
        no_progress_timeout_s=args.no_progress_timeout,
        progress_interval_s=args.progress_interval,
        log_level=args.log_level,
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


if __name__ == "__main__":
    sys.exit(main())
