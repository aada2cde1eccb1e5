"""A storyboard clip as the report shows it: its segments, each with its prompt, frames and own signals
(the row's `segments` and `segment_signals`, README "Storyboards"), and its switches, worst jump first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.report.data import Row


@dataclass(frozen=True)
class ShownSegment:
    index: int  # 0-based, in the clip's order
    prompt: str
    first_frame: int
    last_frame: int
    first_second: float  # where it starts in the video
    signals: dict[str, Any] | None  # its entry of segment_signals; None for rows before schema v6

    def value(self, name: str) -> Any:
        """The segment's own value of a signal or switch field (a number, or switch_cut's bool); None
        where it was not measured."""
        return None if self.signals is None else self.signals[name]


@dataclass(frozen=True)
class Switch:
    """Where one of a clip's segments begins, and how large a jump its first frame was."""

    row: Row
    segment: ShownSegment  # the segment it switches to

    @property
    def ratio(self) -> float | None:
        return self.segment.value("switch_ratio")

    @property
    def cut(self) -> bool | None:
        return self.segment.value("switch_cut")


def segments_of(row: Row) -> list[ShownSegment]:
    """The clip's segments if it is a storyboard (two or more), else none."""
    segments = row.get("segments") or []
    if len(segments) < 2:
        return []
    signals = row.get("segment_signals") or [None] * len(segments)
    return [
        ShownSegment(
            index=index,
            prompt=segment["prompt"],
            first_frame=segment["first_frame"],
            last_frame=segment["last_frame"],
            first_second=segment["first_frame"] / row["fps"],
            signals=measured,
        )
        for index, (segment, measured) in enumerate(zip(segments, signals, strict=True))
    ]


def switches(rows: list[Row]) -> list[Switch]:
    """Every switch of the ok storyboard clips: the largest jump first, unmeasured ones last."""
    found = [
        Switch(row, segment) for row in rows if row["status"] == "ok" for segment in segments_of(row)[1:]
    ]
    found.sort(
        key=lambda s: (s.ratio is None, -(s.ratio or 0.0), s.row["run_id"], s.row["clip_id"], s.segment.index)
    )
    return found
