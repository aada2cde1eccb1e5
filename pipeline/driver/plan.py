"""Planning a run without the model: read and check every prompt line, skip the clips already done, and
say what the rest will cost."""

from __future__ import annotations

import logging

import pyarrow.compute as pc

from pipeline.driver.config import RenderConfig
from pipeline.metrics import done_clip_ids, read_metrics
from pipeline.prompts import load_prompts
from pipeline.spec.clip import ClipSpec
from pipeline.spec.model import REFERENCE_FPS_PER_GPU, get_preset
from pipeline.storage import OutputTarget
from pipeline.storage.fetch import read_input

logger = logging.getLogger("render")


def read_clips(cfg: RenderConfig) -> tuple[list[ClipSpec], int]:
    """The prompt file's valid clips, and its number of lines (as an editor counts them)."""
    try:
        data = read_input(cfg.prompts, cfg.worker.s3)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"prompt file {cfg.prompts} not found ({exc}); pass the path or s3:// URI of a JSONL file"
        ) from None
    clips, invalid = load_prompts(data, cfg.prompts, cfg.defaults, skip_invalid=cfg.skip_invalid)
    for line, reason in invalid:
        logger.warning("%s line %d skipped (--skip-invalid): %s", cfg.prompts, line, reason)
    logger.info(
        "%s: %d clip(s)%s",
        cfg.prompts,
        len(clips),
        f", {len(invalid)} invalid line(s) skipped" * bool(invalid),
    )
    unterminated = bool(data) and not data.endswith(b"\n")  # a last line without its newline
    return clips, data.count(b"\n") + unterminated


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


def resumed_count(skipped: list[ClipSpec], target: OutputTarget, run_id: str) -> int:
    """How many of the skipped clips this run itself finished, in an earlier invocation of the same
    run id: they are this run's rows, not another run's work (the run record keeps them apart)."""
    if not skipped:
        return 0
    table = read_metrics(target, run_id)
    ok = set(table.filter(pc.equal(table.column("status"), "ok")).column("clip_id").to_pylist())
    return sum(clip.clip_id in ok for clip in skipped)


def describe_plan(
    cfg: RenderConfig, todo: list[ClipSpec], skipped: list[ClipSpec], target: OutputTarget
) -> str:
    """What a run would do, for --dry-run: clips to render and to skip, video length, GPU time."""
    preset = get_preset(cfg.worker.model)
    frames = sum(preset.pixel_frames(clip.num_latent_frames) for clip in todo)
    video_min = frames / preset.fps / 60
    fps, source = _throughput(cfg, target)
    lines = [
        f"plan for run {cfg.run_id} -> {target.uri} (model {preset.name}):",
        f"  to render  {len(todo):>7} clip(s), {frames} frames, {video_min:.1f} min of video",
        f"  done       {len(skipped):>7} clip(s), skipped (--force renders them again)",
    ]
    if fps is None:
        lines.append(f"  GPU time   unknown: no measured throughput for model {preset.name} on a GPU")
    else:
        lines.append(
            f"  GPU time   {frames / fps / 3600:.2f} GPU-hours at {fps:.1f} frames/s per GPU ({source})"
        )
    lines.append("nothing was rendered (--dry-run)")
    return "\n".join(lines)


def _throughput(cfg: RenderConfig, target: OutputTarget) -> tuple[float | None, str]:
    """Frames per second per GPU: measured on this output's earlier clips of the model, else the
    benchmark's reference figure."""
    table = read_metrics(target)
    rows = [
        row
        for row in table.to_pylist()
        if row["status"] == "ok" and row["model"] == cfg.worker.model and row["gpu"] and row["t_total_s"]
    ]
    if rows:
        fps = sum(row["num_frames"] for row in rows) / sum(row["t_total_s"] for row in rows)
        return fps, f"measured on {len(rows)} earlier clip(s) in this output"
    reference = REFERENCE_FPS_PER_GPU.get(cfg.worker.model)
    return reference, "the benchmark figure in benchmarks/README.md"
