"""Planning a run without the model: read and check every prompt line, then skip the clips already done."""

from __future__ import annotations

import logging

from pipeline.driver.config import RenderConfig
from pipeline.metrics import done_clip_ids
from pipeline.prompts import load_prompts
from pipeline.spec.clip import ClipSpec
from pipeline.storage import OutputTarget
from pipeline.storage.fetch import read_input

logger = logging.getLogger("render")


def read_clips(cfg: RenderConfig) -> list[ClipSpec]:
    data = read_input(cfg.prompts, cfg.worker.s3)
    clips, invalid = load_prompts(data, cfg.prompts, cfg.defaults, skip_invalid=cfg.skip_invalid)
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
