"""The report as one self-contained HTML page: every figure and thumbnail inlined as a data: URI, no
script, no request to anywhere, so it opens offline, from a mail attachment or a bucket."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

import jinja2

from pipeline.metrics import THUMBNAIL_POSITIONS
from pipeline.quality import SIGNALS, Signal
from pipeline.report import plots, rank, storyboards, summary
from pipeline.report.data import Row, RunData
from pipeline.report.storyboards import ShownSegment

DEFAULT_WORST = 5  # clips shown per signal


@dataclass(frozen=True)
class ShownClip:
    row: Row
    thumbnails: dict[str, str]  # position -> data: URI
    segments: list[ShownSegment]  # a storyboard's segments; empty for a clip of one prompt


@dataclass(frozen=True)
class SignalSection:
    signal: Signal
    worst: list[ShownClip]
    distribution_png: str | None
    curves_png: str | None


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else spec % value


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline.report"),
    autoescape=True,  # prompts and error texts are user input
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENVIRONMENT.globals["number"] = _number


def _switch_text(segment: ShownSegment) -> str:
    """How a segment began: the clip's start, or its switch's jump against the steps around it."""
    if segment.index == 0:
        return "clip start"
    ratio, cut = segment.value("switch_ratio"), segment.value("switch_cut")
    if ratio is None:
        return "not measured"
    return f"{'cut' if cut else 'smooth'}, jump {ratio:.2g}x"


_ENVIRONMENT.globals["switch_text"] = _switch_text


def render(data: RunData, usd_per_gpu_hour: float | None = None, worst_count: int = DEFAULT_WORST) -> str:
    """The whole report for the loaded runs."""
    rows, ok = data.rows, data.ok
    compared = sorted({row["cache_policy"] for row in ok})  # policies with ok clips to compare
    return _ENVIRONMENT.get_template("report.html.j2").render(
        target=data.target.uri,
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary.summarise(rows, usd_per_gpu_hour, data.records),
        records=sorted(
            (record for record in data.records.values() if record is not None), key=lambda r: r.started_at
        ),
        workers=summary.workers(rows),
        throughput_png=data_uri(plots.throughput(rows), "image/png") if rows else None,
        failures=summary.failures(rows),
        signals=[_signal_section(data, ok, signal, worst_count) for signal in SIGNALS],
        storyboard_clips=sum(1 for row in ok if storyboards.segments_of(row)),
        switches=storyboards.switches(ok),
        worst_count=worst_count,
        positions=THUMBNAIL_POSITIONS,
        signal_list=SIGNALS,
        policies=summary.policies(rows),
        comparison_png=data_uri(plots.policy_comparison(ok, compared), "image/png")
        if len(compared) > 1
        else None,
    )


def _signal_section(data: RunData, ok: list[Row], signal: Signal, count: int) -> SignalSection:
    worst = rank.worst(ok, signal, count)
    if not worst:
        return SignalSection(signal, [], None, None)
    measured = [row for row in ok if row[signal.name] is not None]
    shown = [
        ShownClip(
            row,
            {p: data_uri(jpeg, "image/jpeg") for p, jpeg in data.thumbnails(row).items()},
            storyboards.segments_of(row),
        )
        for row in worst
    ]
    return SignalSection(
        signal,
        shown,
        data_uri(
            plots.distribution(measured, signal, sorted({r["cache_policy"] for r in measured})), "image/png"
        ),
        data_uri(plots.curves(data, worst, signal), "image/png"),
    )
