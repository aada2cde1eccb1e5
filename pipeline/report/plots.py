"""The report's figures, drawn with matplotlib (object API, no global pyplot state) as PNG bytes."""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipeline.quality import SIGNALS, Signal
from pipeline.report.data import Row, RunData
from pipeline.report.storyboards import segments_of
from pipeline.report.summary import hours_since, video_seconds

DPI = 100
WIDE = (9.0, 3.2)  # inches: 900 x 320 px
HIST_BINS = 20


def _png(draw: Callable[[Figure], None], size: tuple[float, float] = WIDE) -> bytes:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    draw(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def throughput(rows: list[Row]) -> bytes:
    """Minutes of finished video over the run's wall time: one line per worker and their total."""
    start = min(row["started_at"] for row in rows)
    by_worker: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            by_worker[f"{row['node']}:{row['worker_pid']}"].append(row)

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        everything: list[Row] = []
        for name, own in sorted(by_worker.items()):
            _cumulative(axes, own, start, label=name)
            everything += own
        if len(by_worker) > 1:
            _cumulative(axes, everything, start, label="all workers", color="black", linewidth=2)
        axes.set(xlabel="hours since the first clip started", ylabel="minutes of video", title="Throughput")
        axes.grid(alpha=0.3)
        if by_worker:
            axes.legend(fontsize="small", loc="upper left")

    return _png(draw)


def _cumulative(axes: Axes, rows: list[Row], start: dt.datetime, **style: object) -> None:
    ordered = sorted(rows, key=lambda row: row["finished_at"])
    hours = [0.0] + [hours_since(start, row["finished_at"]) for row in ordered]
    minutes = np.cumsum([0.0] + [video_seconds(row) / 60 for row in ordered])
    axes.step(hours, minutes, where="post", **style)  # type: ignore[arg-type]


def distribution(rows: list[Row], signal: Signal, policies: list[str]) -> bytes:
    """Histogram of the signal over ok clips, stacked by cache policy when the run mixes policies."""

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        groups = [[row[signal.name] for row in rows if row["cache_policy"] == p] for p in policies]
        every = [value for group in groups for value in group]
        bins = np.histogram_bin_edges(every, bins=HIST_BINS).tolist()
        if len(policies) > 1:
            axes.hist(groups, bins=bins, stacked=True, label=policies)
            axes.legend(fontsize="small")
        else:
            axes.hist(every, bins=bins, color="tab:blue")
        axes.set(
            xlabel=f"{signal.name} ({signal.range})", ylabel="clips", title=f"Distribution of {signal.name}"
        )
        axes.grid(alpha=0.3)

    return _png(draw, (6.0, 2.8))


def curves(data: RunData, rows: list[Row], signal: Signal) -> bytes:
    """The signal's per-second column over each of `rows` (the worst clips); a storyboard's switches as
    vertical lines in its colour, dashed, solid where the switch was a cut."""

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        marked = False
        for row in rows:
            seconds, values = data.curve(row, signal.series)
            measured = [np.nan if value is None else value for value in values]
            (line,) = axes.plot(
                seconds, measured, marker=".", label=f"{row['clip_id']} ({row['cache_policy']})"
            )
            for segment in segments_of(row)[1:]:
                cut = bool(segment.value("switch_cut"))
                style = {"linestyle": "-", "linewidth": 2.0} if cut else {"linestyle": "--", "linewidth": 1.0}
                axes.axvline(segment.first_second, color=line.get_color(), alpha=0.7, **style)  # type: ignore[arg-type]
                marked = True
        switches = " (vertical lines: storyboard switches, solid = cut)" if marked else ""
        axes.set(
            xlabel="second of the clip",
            ylabel=signal.series,
            title=f"{signal.series} per second, worst clips{switches}",
        )
        axes.grid(alpha=0.3)
        if rows:
            axes.legend(fontsize="small")

    return _png(draw)


def policy_comparison(rows: list[Row], policies: list[str]) -> bytes:
    """One box plot per signal, a box per cache policy (ok clips with the signal measured)."""
    columns = 4
    grid_rows = -(-len(SIGNALS) // columns)

    def draw(figure: Figure) -> None:
        for i, signal in enumerate(SIGNALS):
            axes = figure.add_subplot(grid_rows, columns, i + 1)
            groups = [
                [
                    row[signal.name]
                    for row in rows
                    if row["cache_policy"] == p and row[signal.name] is not None
                ]
                for p in policies
            ]
            axes.boxplot([group or [np.nan] for group in groups], tick_labels=policies)
            axes.set_title(signal.name, fontsize="small")
            axes.tick_params(labelsize="x-small", labelrotation=30)
            axes.grid(alpha=0.3)

    return _png(draw, (12.0, 2.4 * grid_rows))
