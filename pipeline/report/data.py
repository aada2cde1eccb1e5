"""What a report reads: the runs' metrics rows, their per-second rows and thumbnails, and the driver's
record of each run (pipeline/runs.py: the clips it skipped, held or lost), from any target."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics import THUMBNAIL_POSITIONS, read_metrics, read_seconds, thumbnail_key
from pipeline.runs import RunRecord, read_run_record, recorded_run_ids
from pipeline.storage import OutputTarget

logger = logging.getLogger(__name__)

Row = dict[str, Any]


@dataclass
class RunData:
    """The metrics rows of the chosen runs (latest per clip), their per-second rows, their thumbnails,
    their run records."""

    target: OutputTarget
    run_ids: list[str]
    rows: list[Row]  # METRICS_SCHEMA rows, sorted by run and clip
    seconds: pa.Table  # SECONDS_SCHEMA rows of those runs
    records: dict[str, RunRecord | None]  # each run's record; None for a run without one (older runs)
    _thumbnails: dict[tuple[str, str], bytes | None] = field(default_factory=dict)

    @property
    def ok(self) -> list[Row]:
        return [row for row in self.rows if row["status"] == "ok"]

    def curve(self, row: Row, column: str) -> tuple[list[int], list[float | None]]:
        """(seconds, values) of one clip's per-second column; empty if the clip has no per-second rows."""
        mask = pc.and_(
            pc.equal(self.seconds.column("run_id"), row["run_id"]),
            pc.equal(self.seconds.column("clip_id"), row["clip_id"]),
        )
        clip = self.seconds.filter(mask)
        return clip.column("second").to_pylist(), clip.column(column).to_pylist()

    def thumbnails(self, row: Row) -> dict[str, bytes]:
        """The clip's JPEG thumbnails that exist, by position (first, middle, last)."""
        found = {}
        for position in THUMBNAIL_POSITIONS:
            if row.get(f"thumb_{position}_uri") is None:
                continue
            cached = (row["clip_id"], position)
            if cached not in self._thumbnails:
                try:
                    self._thumbnails[cached] = self.target.read_bytes(thumbnail_key(row["clip_id"], position))
                except FileNotFoundError:
                    logger.warning("thumbnail %s of clip %s is missing", position, row["clip_id"])
                    self._thumbnails[cached] = None
            if (jpeg := self._thumbnails[cached]) is not None:
                found[position] = jpeg
        return found


def load_runs(target: OutputTarget, run_ids: Sequence[str] = ()) -> RunData:
    """The named runs (all runs under the target when none are named): those with metrics, and those
    with only a record (a run that had nothing left to render); ValueError naming what exists."""
    if run_ids:
        tables = [read_metrics(target, run_id) for run_id in run_ids]
        records = {run_id: read_run_record(target, run_id) for run_id in run_ids}
        missing = [
            run_id
            for run_id, table in zip(run_ids, tables, strict=True)
            if table.num_rows == 0 and records[run_id] is None
        ]
        if missing:
            present = sorted(
                set(read_metrics(target).column("run_id").to_pylist()) | set(recorded_run_ids(target))
            )
            raise ValueError(
                f"no metrics or run record for run(s) {', '.join(missing)} under {target.uri}; its runs are: "
                f"{', '.join(present) or 'none'}"
            )
        metrics = pa.concat_tables(tables)
        seconds = pa.concat_tables([read_seconds(target, run_id) for run_id in run_ids])
    else:
        metrics, seconds = read_metrics(target), read_seconds(target)
        names = set(metrics.column("run_id").to_pylist()) | set(recorded_run_ids(target))
        if not names:
            raise ValueError(
                f"no metrics under {target.uri} (looked for metrics/run_id=*/*.parquet and runs/*.json); "
                "pass the --out folder or s3:// prefix a render wrote to"
            )
        records = {run_id: read_run_record(target, run_id) for run_id in names}
    return RunData(target, sorted(records), metrics.to_pylist(), seconds, records)
