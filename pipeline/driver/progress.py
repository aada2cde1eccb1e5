"""What the driver tells its user while a run goes, and the summary at its end.

On a terminal: a live progress bar (tqdm): clips done of total, ok / failed / running, clips per hour,
ETA, GPU-hours so far; failed clips also get a line above it. Elsewhere (`ray job submit`, a log file):
a line per finished clip and a heartbeat when none finished for a while, which read well in
`ray job logs`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.spec.clip import ClipSpec

logger = logging.getLogger("render")

FAILED_CLIPS_SHOWN = 20  # failed clips listed in the summary
BAR_REFRESH_S = 1.0  # the live bar's redraw interval (elapsed time, rate and ETA move on their own)
RUNNING_REFRESH_S = 5.0  # how often the bar lists the run's attempt records to count running clips
BAR_COLUMNS = 120  # the bar's width on a terminal that reports no size
BAR_FORMAT = "{n_fmt}/{total_fmt} clips |{bar:30}| {elapsed}{postfix}"
# Loggers whose console lines print above the bar instead of through it: ours (the root handler).
BAR_LOGGERS = ("",)


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
    gpus_per_clip: int = 0  # GPUs a clip's worker holds (0 on CPUs): GPU-hours = device time x this
    workers: int = 0  # render actors (0 until rendering starts)
    running: int | None = None  # clips generating or finalising now, where known (the live bar)
    _bar: tqdm | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> int:
        return sum(row["status"] == "ok" for row in self.rows)

    @property
    def failed(self) -> int:
        return sum(row["status"] == "failed" for row in self.rows)

    @property
    def held(self) -> int:
        """Clips another run owned when this run reached them (worker/claims.py)."""
        return sum(row["status"] == "skipped" for row in self.rows)

    @property
    def all_ok(self) -> bool:
        return self.ok + self.held == self.total and self.pipeline_error is None

    @property
    def clips_per_hour(self) -> float:
        elapsed = time.monotonic() - self.started
        return len(self.rows) / elapsed * 3600 if elapsed > 0 else 0.0

    @property
    def eta(self) -> str:
        rate = self.clips_per_hour
        return _duration((self.total - len(self.rows)) / rate * 3600) if rate > 0 else "?"

    @property
    def gpu_hours(self) -> float:
        """Device time of the finished clips (model load, generation, decoding) on the GPUs they held."""
        seconds = sum(
            (row.get(name) or 0.0) for row in self.rows for name in ("t_load_s", "t_generate_s", "t_decode_s")
        )
        return seconds * self.gpus_per_clip / 3600

    def add(self, row: dict[str, Any], line: int | None) -> None:
        self.rows.append(row)
        self.last_row = time.monotonic()
        if self._bar is not None:
            self._bar.update(1)
            self._redraw()
            if row["status"] != "ok":
                logger.warning(
                    "failed clip %s%s: %s: %s",
                    row["clip_id"],
                    f" (line {line})" if line else "",
                    row["error_type"],
                    _first_line(row["error"]),
                )
            return
        rate = self.clips_per_hour
        left = self.total - len(self.rows)
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
            self.eta,
        )

    def interrupted_line(self) -> str:
        """What Ctrl-C leaves: the clips that finished are kept, and the same command resumes."""
        return (
            f"interrupted after {len(self.rows)} of {self.total} clip(s) of run {self.run_id} (ok {self.ok}, "
            f"failed {self.failed}; their videos and metrics are in {self.out}); rerun the same command to "
            "resume: clips already done are skipped"
        )

    def bar_text(self) -> str:
        """The live bar's counters: ok, failed, running, clips/h, ETA, GPU-hours."""
        parts = [f"ok {self.ok}", f"failed {self.failed}"]
        if self.running is not None:
            parts.append(f"running {self.running}")
        parts += [f"{self.clips_per_hour:.0f} clips/h", f"ETA {self.eta}"]
        if self.gpus_per_clip:
            parts.append(f"{self.gpu_hours:.2f} GPU-h")
        return " | ".join(parts)

    @contextlib.contextmanager
    def live_bar(self, stream: TextIO, started: Callable[[], set[str]] | None = None) -> Iterator[None]:
        """A progress bar on `stream` (a terminal) while the block runs; log lines print above it.

        `started` gives the clips of this run that have begun; those without a row yet are running.
        """
        stop = threading.Event()

        def refresh() -> None:
            listed = -RUNNING_REFRESH_S  # list at the first refresh
            while not stop.wait(BAR_REFRESH_S):
                if started is not None and time.monotonic() - listed >= RUNNING_REFRESH_S:
                    listed = time.monotonic()
                    with contextlib.suppress(Exception):  # a failed listing only delays the count
                        done = {row["clip_id"] for row in self.rows}
                        self.running = len(started() - done)
                self._redraw()

        sized = shutil.get_terminal_size((0, 0)).columns > 0  # a terminal without a size: a fixed width
        bar = tqdm(
            total=self.total,
            file=stream,
            bar_format=BAR_FORMAT,
            dynamic_ncols=sized,
            ncols=None if sized else BAR_COLUMNS,
            mininterval=0,
        )
        with logging_redirect_tqdm([logging.getLogger(name) for name in BAR_LOGGERS]):
            self._bar = bar
            self._redraw()
            thread = threading.Thread(target=refresh, name="progress-bar", daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()
                self._redraw()
                bar.close()
                self._bar = None

    def _redraw(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self.bar_text(), refresh=True)

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
        if self.held:
            holder = next(row["error"] for row in self.rows if row["status"] == "skipped")
            lines.append(f"  {'held':<8} {self.held:>6}   (another run has them, e.g. {holder}; rerun later)")
        if lost:
            lines.append(f"  {'lost':<8} {lost:>6}   (never came back: {_last_line(self.pipeline_error)})")
        if self.rows:
            lines.append(f"  throughput: {len(self.rows) / elapsed * 3600:.0f} clips/h")
        if self.gpus_per_clip:
            lines.append(f"  GPU time: {self.gpu_hours:.2f} GPU-hours")
        failed = [row for row in self.rows if row["status"] == "failed"]
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
