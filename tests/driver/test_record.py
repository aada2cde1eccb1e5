"""pipeline/driver/record.py: the run record built from a run's plan and progress, and saved even when the
output fails."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from pipeline.driver.options import config_from_args, parse_args
from pipeline.driver.progress import RunReport
from pipeline.driver.record import run_record, save_run_record
from pipeline.runs import read_run_record
from pipeline.storage.local import LocalTarget


def test_the_record_counts_what_the_run_planned_skipped_rendered_held_and_lost(tmp_path: Path) -> None:
    argv = ["prompts.jsonl", "--out", str(tmp_path), "--run-id", "r1", "--cache-policy", "fifo"]
    cfg = config_from_args(parse_args(argv))
    run = RunReport("r1", str(tmp_path), total=5, skipped=4, gpus_per_clip=1, workers=2)
    for status in ("ok", "ok", "failed", "skipped"):  # "skipped" rows: clips another run held
        run.rows.append({"clip_id": status, "status": status})

    record = run_record(cfg, run, prompt_lines=11, clips=9, resumed=1, exit_code=1)

    assert (record.run_id, record.prompts, record.prompt_lines, record.clips) == (
        "r1",
        "prompts.jsonl",
        11,
        9,
    )
    assert (record.skipped, record.resumed, record.to_render) == (3, 1, 5)
    assert (record.ok, record.failed, record.held, record.lost) == (2, 1, 1, 1)
    assert (record.exit_code, record.model, record.cache_policy) == (1, "tiny", "fifo")
    assert (record.workers, record.gpus_per_worker) == (2, 1.0)
    assert record.started_at.timestamp() == pytest.approx(cfg.worker.planned_at)
    assert record.wall_s == pytest.approx(time.time() - cfg.worker.planned_at, abs=1.0)
    assert record.finished_at >= record.started_at and record.started_at.utcoffset() is not None


def test_an_output_that_fails_now_costs_only_the_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config_from_args(parse_args(["prompts.jsonl", "--out", str(tmp_path), "--run-id", "r1"]))
    record = run_record(
        cfg, RunReport("r1", str(tmp_path), 0, 0), prompt_lines=1, clips=1, resumed=0, exit_code=0
    )
    target = LocalTarget(tmp_path)
    (tmp_path / "runs").write_text("a file where the runs/ folder goes")

    with caplog.at_level(logging.WARNING):
        assert save_run_record(target, record) is None
    assert "the run record of run r1 could not be written (the metrics are complete): " in caplog.text

    (tmp_path / "runs").unlink()
    assert save_run_record(target, record) == str(tmp_path / "runs" / "r1.json")
    assert read_run_record(target, "r1") == record
