"""Render a prompt file into videos and a metrics table, on a Ray cluster or on this machine.

    ray job submit --working-dir . -- python jobs/render.py prompts.jsonl --out s3://bucket/run1 \\
        --model self-forcing-1.3b --model-dir s3://bucket/models/self-forcing
    python jobs/render.py examples/prompts.jsonl        # embedded local Ray, ./renders, tiny model

The recipe: parse the options -> check what the run needs (weights, ffmpeg, output, S3) and every prompt
line, then skip the clips already done (`--dry-run` stops here with the plan) -> one clip per Ray Data
block -> `map_batches(RenderWorker)` on an actor pool, one actor per GPU -> progress (a bar on a
terminal, else a line per finished clip) -> compact the run's metrics -> summary -> the run record
(runs/<run_id>.json, also on Ctrl-C and on failure: pipeline/runs.py). Exit code 0 when every
clip is ok (or was already done), 1 when any clip failed or the pipeline stopped, 2 when the input or
options are invalid (nothing rendered), 130 on Ctrl-C (one line says what finished; the same command
resumes). The driver never imports torch: the model loads inside the actors.

Its parts: pipeline/driver/ (options, planning, the cluster, progress). The prompt file format, seeds
and clip ids: pipeline/prompts.py. What a worker does with a clip: pipeline/worker/actor.py.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python jobs/render.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from pipeline.driver.cluster import (  # noqa: E402
    Resources,
    actor_runtime_env,
    clips_per_batch,
    ray_session,
    worker_config,
)
from pipeline.driver.config import RenderConfig  # noqa: E402
from pipeline.driver.options import config_from_args, parse_args  # noqa: E402
from pipeline.driver.plan import describe_plan, plan, read_clips, resumed_count  # noqa: E402
from pipeline.driver.preflight import preflight  # noqa: E402
from pipeline.driver.progress import RunReport  # noqa: E402
from pipeline.driver.ray_notices import configure_ray_data  # noqa: E402
from pipeline.driver.record import run_record, save_run_record  # noqa: E402
from pipeline.metrics import compact_run  # noqa: E402
from pipeline.spec.clip import ClipSpec  # noqa: E402
from pipeline.storage import OutputTarget, StorageError, open_target  # noqa: E402
from pipeline.worker import RenderWorker  # noqa: E402
from pipeline.worker.faults import started_clip_ids  # noqa: E402
from pipeline.worker.groups import order_for_groups  # noqa: E402

logger = logging.getLogger("render")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")  # no-op if logging is set up
    for name in ("render", "pipeline"):
        logging.getLogger(name).setLevel(args.log_level)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        return refuse([str(exc)])
    try:
        problems = [str(problem) for problem in preflight(cfg)]  # 1. weights, ffmpeg, output, S3
        try:
            clips, lines = read_clips(cfg)  # 2. every line validated before anything starts
        except (ValueError, OSError, StorageError) as exc:
            problems.insert(0, str(exc))
        if not problems:  # the output answered the pre-flight: look for what is done there
            try:
                target = open_target(cfg.worker.out, cfg.worker.s3)
                todo, skipped = plan(clips, target, cfg.force)  # 3. resume
                resumed = resumed_count(skipped, target, cfg.run_id)
            except (ValueError, OSError, StorageError) as exc:
                problems.append(str(exc))
    except KeyboardInterrupt:
        logger.warning("interrupted before rendering started; nothing was rendered")
        return EXIT_INTERRUPTED
    if problems:
        return refuse(problems)
    if cfg.dry_run:
        logger.info("%s", describe_plan(cfg, todo, skipped, target))
        return EXIT_OK
    run = RunReport(cfg.run_id, target.uri, total=len(todo), skipped=len(skipped))
    exit_code = EXIT_FAILED  # what the run record says should the driver itself fail
    try:
        exit_code = execute(todo, clips, cfg, target, run)
    except KeyboardInterrupt:  # after the rendering (compaction, summary): still a run to record
        exit_code = EXIT_INTERRUPTED
        raise
    finally:  # 8. the run record, whatever happened once the run was planned
        record = run_record(
            cfg, run, prompt_lines=lines, clips=len(clips), resumed=resumed, exit_code=exit_code
        )
        save_run_record(target, record)
    return exit_code


def execute(
    todo: list[ClipSpec], clips: list[ClipSpec], cfg: RenderConfig, target: OutputTarget, run: RunReport
) -> int:
    """Render the planned clips, compact the run's metrics, log the summary; the exit code."""
    if todo:
        logger.info("run %s: if it stops, --run-id %s continues it as the same run", cfg.run_id, cfg.run_id)
        try:
            with ray_session(cfg, len(todo)) as resources:  # 4. the cluster, or an embedded local Ray
                render(todo, cfg, resources, run)  # 5. one clip per block, progress per clip
        except ValueError as exc:  # the cluster cannot run this (no GPUs, local --out on many nodes)
            return refuse([str(exc)])
        except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; the clips that finished are kept
            logger.warning("%s", run.interrupted_line())
            return EXIT_INTERRUPTED
    try:  # 6. one metrics file per run, with what an earlier, stopped attempt of the run left
        run.metrics_uri = compact_run(target, cfg.run_id)
    except (StorageError, OSError, ValueError) as exc:  # the per-clip files are still all there
        logger.warning("compacting the metrics of run %s failed (per-clip files remain): %s", cfg.run_id, exc)
    run.log_summary({clip.clip_id: clip for clip in clips})  # 7. summary
    return EXIT_OK if run.all_ok else EXIT_FAILED


def refuse(problems: list[str]) -> int:
    """Report every problem once, and that nothing ran."""
    for problem in problems:
        logger.error("%s", problem)
    logger.error("nothing was rendered: fix the above and run the same command again")
    return EXIT_INVALID


def render(todo: list[ClipSpec], cfg: RenderConfig, resources: Resources, run: RunReport) -> None:
    """Ray Data: one clip per block, a pool of RenderWorker actors; rows come back as clips finish.

    Clips that can share DiT forwards are put next to each other and a batch holds as many as a worker
    renders as one group, so each batch is one group (worker/groups.py)."""
    import ray.data  # Ray is imported once the run is checked and its session set up (cluster.py)
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    configure_ray_data(context)  # our own progress display; no Ray warnings on a good run
    context.execution_no_progress_timeout_s = cfg.no_progress_timeout_s or max(
        2 * cfg.worker.clip_timeout_s, 3600.0
    )
    ordered = order_for_groups(todo)
    batch_size = clips_per_batch(cfg, resources, len(todo))
    worker = worker_config(cfg, resources, todo)
    clips = ray.data.from_items(
        [{"clip": clip.to_bytes()} for clip in ordered], override_num_blocks=len(ordered)
    )
    rows = clips.map_batches(
        RenderWorker,
        fn_constructor_kwargs={"config": worker},
        batch_size=batch_size,
        compute=ActorPoolStrategy(
            size=resources.workers,  # actors start as resources appear; rendering begins with the first
            # Two calls per actor: one generates while the other encodes and uploads (worker/actor.py).
            max_tasks_in_flight_per_actor=2,
            max_concurrent_calls_per_actor=2,
            enable_true_multi_threading=True,
        ),
        num_gpus=resources.num_gpus,
        num_cpus=resources.num_cpus,
        runtime_env=actor_runtime_env(),
    )
    logger.info(
        "rendering %d clip(s) on %d worker(s) (%s GPU, %s CPU each, up to %d clip(s) per batch, %s conv "
        "search) into %s, run %s",
        len(todo),
        resources.workers,
        resources.num_gpus,
        resources.num_cpus,
        batch_size,
        "full" if worker.search_all_conv_algorithms else "quick",
        run.out,
        run.run_id,
    )
    lines = {clip.clip_id: clip.line for clip in todo}
    run.gpus_per_clip, run.workers = resources.num_gpus, resources.workers
    with _progress(run, todo, cfg):
        try:
            for row in rows.iter_rows():
                run.add(row, lines.get(row["clip_id"]))
        except Exception as exc:  # the pipeline itself stopped (no GPUs, actors failing to start, timeout)
            run.pipeline_error = f"{type(exc).__name__}: {exc}"
            logger.error("the Ray pipeline stopped: %s", run.pipeline_error)


def _progress(run: RunReport, todo: list[ClipSpec], cfg: RenderConfig) -> AbstractContextManager[None]:
    """A live bar on a terminal; log lines and a heartbeat otherwise (`ray job submit`, log files)."""
    if not sys.stderr.isatty():
        return run.heartbeat(cfg.progress_interval_s)
    target = open_target(cfg.worker.out, cfg.worker.s3)
    todo_ids = {clip.clip_id for clip in todo}
    return run.live_bar(sys.stderr, started=lambda: started_clip_ids(target, cfg.run_id) & todo_ids)


if __name__ == "__main__":
    sys.exit(main())
