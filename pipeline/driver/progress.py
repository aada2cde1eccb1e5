"""What the driver tells its user while a run goes: a line per finished clip, a heartbeat, the summary."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.spec.clip import ClipSpec

logger = logging.getLogger("render")

FAILED_CLIPS_SHOWN = 20  # failed clips listed in the summary


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
        return sum(row["status"] == "failed" for row in self.rows)

    @property
    def held(self) -> int:
        """Clips another run owned when this run reached them (worker/claims.py)."""
        return sum(row["status"] == "skipped" for row in self.rows)

    @property
    def all_ok(self) -> bool:
        return self.ok + self.held == self.total and self.pipeline_error is None

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
        if self.held:
            holder = next(row["error"] for row in self.rows if row["status"] == "skipped")
            lines.append(f"  {'held':<8} {self.held:>6}   (another run has them, e.g. {holder}; rerun later)")
        if lost:
            lines.append(f"  {'lost':<8} {lost:>6}   (never came back: {_last_line(self.pipeline_error)})")
        if self.rows:
            lines.append(f"  throughput: {len(self.rows) / elapsed * 3600:.0f} clips/h")
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
