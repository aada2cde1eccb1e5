"""The run record the driver leaves under --out (pipeline/runs.py): its plan, what became of it, how it
ended. Written at the end of every run that got past planning, on Ctrl-C and on failure too."""

from __future__ import annotations

import datetime as dt
import logging
import time

from pipeline.driver.config import RenderConfig
from pipeline.driver.progress import RunReport
from pipeline.runs import RunRecord, write_run_record
from pipeline.storage import OutputTarget, StorageError

logger = logging.getLogger("render")


def run_record(
    cfg: RenderConfig, run: RunReport, *, prompt_lines: int, clips: int, resumed: int, exit_code: int
) -> RunRecord:
    """The record of this invocation: `clips` planned from `prompt_lines` lines, `resumed` of the run's
    skipped clips done by an earlier invocation of the same run id, and how the RunReport ended."""
    now = time.time()
    return RunRecord(
        run_id=cfg.run_id,
        prompts=cfg.prompts,
        prompt_lines=prompt_lines,
        clips=clips,
        skipped=run.skipped - resumed,
        resumed=resumed,
        to_render=run.total,
        ok=run.ok,
        failed=run.failed,
        held=run.held,
        lost=run.total - len(run.rows),
        started_at=dt.datetime.fromtimestamp(cfg.worker.planned_at, dt.UTC),
        finished_at=dt.datetime.fromtimestamp(now, dt.UTC),
        wall_s=round(now - cfg.worker.planned_at, 3),
        exit_code=exit_code,
        model=cfg.worker.model,
        cache_policy=cfg.defaults.cache_policy,
        workers=run.workers,
        gpus_per_worker=float(run.gpus_per_clip),
    )


def save_run_record(target: OutputTarget, record: RunRecord) -> str | None:
    """Write the record; a store that fails now costs only the record (the metrics are complete)."""
    try:
        uri = write_run_record(target, record)
    except (StorageError, OSError, ValueError) as exc:
        logger.warning(
            "the run record of run %s could not be written (the metrics are complete): %s", record.run_id, exc
        )
        return None
    logger.debug("run record: %s", uri)  # after the summary, and after Ctrl-C's one line: no more lines
    return uri
