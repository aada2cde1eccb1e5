"""What the meter reports for a clip: its signals, one record per second, each segment's signals and
switch, its thumbnails.

Field names are the metrics columns (pipeline/metrics.py) they fill; None where a signal is undefined
(e.g. motion for a one-frame clip). Definitions and ranges: the modules of each family and README.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipQuality:
    # the v2 columns: 0-255 luma steps between consecutive frames, and |brightness drift|
    motion_mean: float
    motion_max: float
    luma_drift: float | None
    # flicker.py
    temporal_flickering: float | None
    flicker_spikes: int
    # motion.py
    dynamic_degree: float | None
    moving_fraction: float | None
    motion_level: float | None
    motion_decay: float | None
    # appearance.py
    saturation_drift: float | None
    brightness_drift: float | None
    colourfulness_drift: float | None
    sharpness_drift: float | None
    # repetition.py
    start_similarity: float | None
    rollback: float | None
    rollback_second: int | None


@dataclass(frozen=True)
class SecondQuality:
    """One second of the clip: frames [second * fps, (second + 1) * fps)."""

    second: int
    frames: int
    flicker_mae: float | None  # mean step into this second's frames, 0-255
    flicker_spikes: int
    motion_level: float | None  # full-frame px per second
    moving_fraction: float | None
    saturation: float | None
    brightness: float | None
    colourfulness: float | None
    sharpness: float | None
    start_similarity: float | None
    best_match_second: int | None
    best_match_similarity: float | None


@dataclass(frozen=True)
class SwitchQuality:
    """The step into a segment's first frame against the steps around it (flicker.py)."""

    frame: int  # the segment's first frame
    step: float | None  # mean absolute difference from the frame before, all channels, 0-255
    ratio: float | None  # step / the median step within half a second (floored: flicker.py)
    cut: bool | None  # ratio over spike_ratio: a jump flicker_spikes would count, a visible cut


@dataclass(frozen=True)
class SegmentQuality:
    """A storyboard segment, frames [first_frame, last_frame], measured as a clip of its own."""

    first_frame: int
    last_frame: int
    signals: ClipQuality
    switch: SwitchQuality | None  # None for the first segment


@dataclass(frozen=True)
class ClipReport:
    clip: ClipQuality
    seconds: list[SecondQuality]
    segments: list[SegmentQuality]  # one for a clip of one prompt: the clip's own signals
    thumbnails: dict[str, bytes]  # "first" / "middle" / "last" -> JPEG
    cpu_s: float  # CPU seconds the analysis took (its own thread's time)
