"""pipeline/driver/progress.py: the line per finished clip, the heartbeat and the summary."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest

from pipeline.driver import progress
from pipeline.driver.progress import RunReport


def ok_row(clip_id: str) -> dict:
    return {
        "clip_id": clip_id,
        "status": "ok",
        "num_frames": 33,
        "t_total_s": 2.0,
        "gen_fps": 16.5,
        "bytes": 1_500_000,
        "fps": 16.0,
    }


def failed_row(clip_id: str, error: str) -> dict:
    return {"clip_id": clip_id, "status": "failed", "error_type": "EncodeError", "error": error}


def test_each_finished_clip_logs_one_line_with_counts_and_the_summary_lists_failures_and_losses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="render")
    report = RunReport("run-1", "/out", total=3, skipped=2)

    report.add(ok_row("a"), line=1)
    report.add(failed_row("b", "ffmpeg exited with code 1\nstderr tail..."), line=4)
    report.pipeline_error = "RayTaskError: the pipeline stopped\n...\nValueError: the cause"
    report.log_summary({})

    first, second, summary = caplog.messages
    assert first.startswith("[1/3] ok     clip a (line 1): 33 frames in 2.0 s (generation 16.5 fps), 1.50 MB")
    assert first.endswith("| ok 1, failed 0, 2 left, " + first.split(", 2 left, ")[1])
    assert second.startswith(
        "[2/3] failed clip b (line 4): EncodeError: ffmpeg exited with code 1 | ok 1, failed 1"
    )
    assert "  ok            1       33      2.1     16.5     1.50" in summary
    assert "  failed        1" in summary and "  skipped       2   (done in an earlier run)" in summary
    assert "  lost          1   (never came back: ValueError: the cause)" in summary
    assert "  failed: clip b: EncodeError: ffmpeg exited with code 1" in summary
    assert summary.endswith("  rerun the same command to retry failed clips; finished ones are skipped")
    assert not report.all_ok


def test_the_heartbeat_speaks_only_while_no_clip_finishes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="render")
    report = RunReport("run-1", "/out", total=1, skipped=0)
    with report.heartbeat(0.05):
        time.sleep(0.3)
    beats = [m for m in caplog.messages if m.startswith("still rendering: 0 of 1 clip(s) done after ")]
    assert len(beats) >= 2


class Terminal(io.StringIO):
    """What tqdm writes to a terminal, kept."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_live_bar_counts_ok_failed_running_rate_eta_and_gpu_hours(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "BAR_REFRESH_S", 0.02)
    caplog.set_level(logging.INFO, logger="render")
    report = RunReport("run-1", "/out", total=4, skipped=0, gpus_per_clip=1)
    terminal = Terminal()

    with report.live_bar(terminal, started=lambda: {"a", "b", "c"}):
        report.add(ok_row("a") | {"t_load_s": 30.0, "t_generate_s": 1500.0, "t_decode_s": 270.0}, line=1)
        report.add(failed_row("b", "ffmpeg exited with code 1\nstderr tail..."), line=2)
        time.sleep(0.2)

    last = terminal.getvalue().split("\r")[-1]
    assert last.startswith("2/4 clips |")
    assert re.search(
        r"ok 1 \| failed 1 \| running 1 \| \d+ clips/h \| ETA \d+:\d\d:\d\d \| 0\.50 GPU-h", last
    )
    # a failed clip also gets a line (above the bar); an ok one only moves the bar
    assert caplog.messages == ["failed clip b (line 2): EncodeError: ffmpeg exited with code 1"]


def test_ctrl_c_tells_what_finished_and_that_the_same_command_resumes() -> None:
    report = RunReport("run-1", "s3://b/out", total=5, skipped=0)
    report.add(ok_row("a"), line=1)
    assert report.interrupted_line() == (
        "interrupted after 1 of 5 clip(s) of run run-1 (ok 1, failed 0; their videos and metrics are in "
        "s3://b/out); rerun the same command to resume: clips already done are skipped"
    )
