"""Colour and sharpness drift: the last window against the first (the Deep Forcing paper's 5 s windows).

Long autoregressive videos degrade as "colors drift toward over-saturation, textures blur, and fine
details disappear" (the paper's words for error accumulation). Per analysis frame:

    saturation     mean HSV saturation, 0-1
    brightness     mean BT.709 luma, 0-255
    colourfulness  Hasler and Suesstrunk's M = sigma_rgyb + 0.3 mu_rgyb on 0-255 RGB (0 grey; ~33
                   "moderately", ~59 "quite", 82+ "extremely colourful" on their scale)
    sharpness      variance of the Laplacian of the full-resolution luma (focus measure; 0 for flat)

Drift is the last window's mean minus the first's (for sharpness, relative to the first window's).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.quality.frames import LUMA_WEIGHTS
from pipeline.quality.settings import QualitySettings
from pipeline.quality.timeline import Timeline, window_drift

STATS = ("saturation", "brightness", "colourfulness", "sharpness")


class AppearanceTrack:
    def __init__(self, settings: QualitySettings):
        self.settings = settings
        self.frames: list[int] = []
        self.values: list[tuple[float, float, float, float]] = []  # STATS per analysis frame

    def add(self, frame_index: int, small: np.ndarray, full_gray: np.ndarray) -> None:
        """small: (h, w, 3) uint8 RGB analysis frame; full_gray: (H, W) uint8 luma of the full frame."""
        saturation = cv2.mean(cv2.cvtColor(small, cv2.COLOR_RGB2HSV))[1] / 255.0
        rgb = small.astype(np.float32)
        brightness = float((rgb @ LUMA_WEIGHTS).mean())
        rg = rgb[..., 0] - rgb[..., 1]
        yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
        colourfulness = float(np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
        _, deviation = cv2.meanStdDev(cv2.Laplacian(full_gray, cv2.CV_32F))
        self.frames.append(frame_index)
        self.values.append((saturation, brightness, colourfulness, float(deviation[0, 0]) ** 2))

    def within(self, first: int, end: int) -> AppearanceTrack:
        """The samples of frames [first, end) only, frame indices counted from `first`."""
        part = AppearanceTrack(self.settings)
        kept = [(f, v) for f, v in zip(self.frames, self.values, strict=True) if first <= f < end]
        part.frames = [f - first for f, _ in kept]
        part.values = [v for _, v in kept]
        return part

    def finish(self, timeline: Timeline) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(clip columns, per-second columns)."""
        frames = np.asarray(self.frames, dtype=np.int64)
        values = np.asarray(self.values, dtype=np.float64).reshape(-1, len(STATS))
        columns = dict(zip(STATS, values.T, strict=True))
        seconds = {name: timeline.per_second_mean(frames, column) for name, column in columns.items()}
        clip: dict[str, Any] = {
            f"{name}_drift": window_drift(timeline, frames, columns[name])
            for name in ("saturation", "brightness", "colourfulness")
        }
        sharpness = columns["sharpness"]
        change = window_drift(timeline, frames, sharpness)
        first = sharpness[timeline.first_window(frames)]
        floor = self.settings.sharpness_floor
        clip["sharpness_drift"] = None if change is None else change / max(float(first.mean()), floor)
        brightness = clip["brightness_drift"]
        clip["luma_drift"] = None if brightness is None else abs(brightness)  # the v2 column, same windows
        return clip, seconds
