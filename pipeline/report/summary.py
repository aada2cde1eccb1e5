"""The numbers of a report: the run's outcome and cost, each worker's throughput, failures grouped by
error, and each cache policy's signals and telemetry. Plain values, for the page and for tests.

Clips rendered (ok, failed) are counted from the metrics rows; clips the driver never rendered (skipped,
held, lost) only its run records know (pipeline/runs.py)."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.quality import SIGNALS
from pipeline.report.data import Row
from pipeline.runs import RunRecord

EXAMPLE_CHARS = 400  # error text shown per failure group


def video_seconds(row: Row) -> float:
    return row["num_frames"] / row["fps"]


def mean(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None and not math.isnan(value)]
    return statistics.fmean(present) if present else None


@dataclass(frozen=True)
class WorkerStats:
    """One actor: a process on a node, holding one device, over one run."""

    run_id: str
    node: str
    worker_pid: int
    device: str  # GPU name, or "CPU"
    ok: int
    failed: int
    video_min: float  # minutes of ok video it rendered
    busy_h: float  # first clip's start (less its model load) to last clip's end
    gen_fps: float | None  # mean generation speed of its clips

    @property
    def video_min_per_h(self) -> float | None:
        return self.video_min / self.busy_h if self.busy_h > 0 else None


@dataclass(frozen=True)
class RunSummary:
    runs: list[str]
    clips: int
    ok: int
    failed: int
    retried: int  # clips that needed more than one attempt
    video_min: float
    device_hours: float  # held by the workers: the sum of their busy spans
    devices: list[str]  # the GPU names (or "CPU") that ran
    wall_h: float  # first start to last finish
    gen_fps: float | None
    usd_per_gpu_hour: float | None
    dynamic_degree_pct: float | None  # VBench-style: the share of dynamic clips, %
    temporal_flickering_pct: float | None
    skipped: int | None  # done by an earlier run, so not rendered; None: a run has no record to say
    held: int  # another run had them (in the records there are)
    lost: int  # never came back, or left by Ctrl-C (in the records there are)
    unrecorded: list[str]  # runs without a run record (written before records were, or driver killed)

    @property
    def on_gpu(self) -> bool:
        return any(device != "CPU" for device in self.devices)

    @property
    def usd_per_video_min(self) -> float | None:
        if self.usd_per_gpu_hour is None or self.video_min <= 0:
            return None
        return self.device_hours * self.usd_per_gpu_hour / self.video_min


@dataclass(frozen=True)
class FailureGroup:
    error_type: str
    count: int
    clips: list[str]
    example: str  # the most common error text of the group, shortened


@dataclass(frozen=True)
class PolicyStats:
    policy: str
    clips: int
    ok: int
    gen_fps: float | None
    signals: dict[str, float | None]  # mean of each signal over its ok clips
    telemetry: dict[str, float]  # mean of each numeric cache_telemetry counter


def workers(rows: list[Row]) -> list[WorkerStats]:
    by_worker: dict[tuple[str, str, int], list[Row]] = defaultdict(list)
    for row in rows:
        by_worker[(row["run_id"], row["node"], row["worker_pid"])].append(row)
    stats = []
    for (run_id, node, pid), own in sorted(by_worker.items()):
        span = max(r["finished_at"] for r in own) - min(r["started_at"] for r in own)
        load_s = sum(r["t_load_s"] or 0.0 for r in own)
        ok = [r for r in own if r["status"] == "ok"]
        stats.append(
            WorkerStats(
                run_id=run_id,
                node=node,
                worker_pid=pid,
                device=next((r["gpu"] for r in own if r["gpu"]), "CPU"),
                ok=len(ok),
                failed=len(own) - len(ok),
                video_min=sum(video_seconds(r) for r in ok) / 60,
                busy_h=(span.total_seconds() + load_s) / 3600,
                gen_fps=mean(r["gen_fps"] for r in own),
            )
        )
    return stats


def summarise(
    rows: list[Row], usd_per_gpu_hour: float | None, records: Mapping[str, RunRecord | None] | None = None
) -> RunSummary:
    """The runs of `records` (each with its record, or None), else those of the rows."""
    if records is None:
        records = {row["run_id"]: None for row in rows}
    ok = [row for row in rows if row["status"] == "ok"]
    fleet = workers(rows)
    span = (max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)) if rows else None
    dynamic, flicker = mean(r["dynamic_degree"] for r in ok), mean(r["temporal_flickering"] for r in ok)
    known = [record for record in records.values() if record is not None]
    unrecorded = sorted(run_id for run_id, record in records.items() if record is None)
    return RunSummary(
        runs=sorted(records),
        clips=len(rows),
        ok=len(ok),
        failed=len(rows) - len(ok),
        retried=sum(1 for row in rows if row["attempt"] > 1),
        video_min=sum(video_seconds(row) for row in ok) / 60,
        device_hours=sum(worker.busy_h for worker in fleet),
        devices=sorted({worker.device for worker in fleet}),
        wall_h=span.total_seconds() / 3600 if span is not None else 0.0,
        gen_fps=mean(row["gen_fps"] for row in rows),
        usd_per_gpu_hour=usd_per_gpu_hour,
        dynamic_degree_pct=None if dynamic is None else 100 * dynamic,
        temporal_flickering_pct=None if flicker is None else 100 * flicker,
        skipped=None if unrecorded else sum(record.skipped for record in known),
        held=sum(record.held for record in known),
        lost=sum(record.lost for record in known),
        unrecorded=unrecorded,
    )


def failures(rows: list[Row]) -> list[FailureGroup]:
    """Failed clips by error type, the largest group first."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row["status"] != "ok":
            groups[row["error_type"] or "unknown"].append(row)
    result = []
    for error_type, failed in groups.items():
        texts = [row["error"] or "" for row in failed]
        example = max(set(texts), key=texts.count)
        if len(example) > EXAMPLE_CHARS:
            example = example[:EXAMPLE_CHARS] + "..."
        result.append(
            FailureGroup(error_type, len(failed), sorted(row["clip_id"] for row in failed), example)
        )
    return sorted(result, key=lambda group: (-group.count, group.error_type))


def policies(rows: list[Row]) -> list[PolicyStats]:
    by_policy: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_policy[row["cache_policy"]].append(row)
    result = []
    for policy, own in sorted(by_policy.items()):
        ok = [row for row in own if row["status"] == "ok"]
        result.append(
            PolicyStats(
                policy=policy,
                clips=len(own),
                ok=len(ok),
                gen_fps=mean(row["gen_fps"] for row in own),
                signals={signal.name: mean(row[signal.name] for row in ok) for signal in SIGNALS},
                telemetry=_telemetry_means(own),
            )
        )
    return result


def _telemetry_means(rows: list[Row]) -> dict[str, float]:
    """Mean of every numeric top-level counter in the policy's cache_telemetry JSON (lists skipped)."""
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["cache_telemetry"] is None:
            continue
        for key, value in json.loads(row["cache_telemetry"]).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[key].append(float(value))
    return {key: statistics.fmean(found) for key, found in sorted(values.items())}


def hours_since(start: dt.datetime, when: dt.datetime) -> float:
    return (when - start).total_seconds() / 3600
