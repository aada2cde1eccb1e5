"""A clip's frames in time: which second a frame falls in, the drift windows, per-second averages."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timeline:
    """`num_frames` frames at `fps`; frame i is shown at i / fps seconds."""

    fps: float
    num_frames: int
    window_s: float

    @property
    def num_seconds(self) -> int:
        return max(1, math.ceil(self.num_frames / self.fps))

    @property
    def window_frames(self) -> int:
        """Frames in each drift window: `window_s` (the paper's 5 s), at most half the clip, at least 1.

        Clips shorter than two windows compare their first half with their second half, so a 6 s clip
        still reports drift (over the 3 s between the halves' centres) instead of comparing a window
        with itself.
        """
        return max(1, min(round(self.window_s * self.fps), self.num_frames // 2))

    @property
    def window_seconds(self) -> int:
        """The windows' length in whole seconds, rounded up: the gap before a second may match another."""
        return max(1, math.ceil(self.window_frames / self.fps))

    def second_of(self, frames: np.ndarray) -> np.ndarray:
        """The second each frame index falls in."""
        return np.minimum(np.floor(frames / self.fps).astype(np.int64), self.num_seconds - 1)

    def first_window(self, frames: np.ndarray) -> np.ndarray:
        return frames < self.window_frames

    def last_window(self, frames: np.ndarray) -> np.ndarray:
        return frames >= self.num_frames - self.window_frames

    def after_first_window(self, seconds: np.ndarray) -> np.ndarray:
        """Seconds that start after the first window has ended."""
        return seconds * self.fps >= self.window_frames

    def per_second_mean(self, frames: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Mean of `values` (taken at frame indices `frames`) in each second; NaN where none fell."""
        seconds = self.second_of(frames)
        total = np.bincount(seconds, weights=values, minlength=self.num_seconds)
        count = np.bincount(seconds, minlength=self.num_seconds)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def per_second_count(self, frames: np.ndarray) -> np.ndarray:
        return np.bincount(self.second_of(frames), minlength=self.num_seconds)


def window_drift(timeline: Timeline, frames: np.ndarray, values: np.ndarray) -> float | None:
    """Mean of `values` over the last window minus over the first; None if a window has no sample."""
    first, last = values[timeline.first_window(frames)], values[timeline.last_window(frames)]
    if not len(first) or not len(last):
        return None
    return float(last.mean() - first.mean())


def optional(value: float) -> float | None:
    """NaN (nothing measured) -> None, for a nullable column."""
    return None if math.isnan(value) else float(value)
