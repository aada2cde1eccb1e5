"""Temporal flicker: the mean absolute difference of consecutive frames, as VBench computes it, and spikes.

VBench's temporal-flickering score is (255 - MAE) / 255 over all channels of every consecutive pair of
frames: 1 for a still video, lower as frames change. We take the MAE on every `flicker_stride`-th pixel
each way, an unbiased sample of the full-frame MAE. A spike is a step far above the steps around it:
a whole-frame jump (a flash, a cut, the cache policy's periodic jumps, docs/cache_policies.md §8) that
smooth motion never produces. The luma steps feed the v2 columns motion_mean / motion_max.

At a storyboard's switch the step into the new segment's first frame is measured the same way: its
ratio to the steps around it, and whether that makes it a spike (a visible cut where the prompt
changed, which a re-cache should avoid). The steps themselves are the clip's: a segment measured on
its own (`within`) has only the steps between its frames, so its spikes never include its switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.quality.frames import LUMA_WEIGHTS
from pipeline.quality.results import SwitchQuality
from pipeline.quality.settings import QualitySettings
from pipeline.quality.timeline import Timeline


class FlickerTrack:
    """Every step between consecutive frames, chunk borders included."""

    def __init__(self, settings: QualitySettings):
        self.settings = settings
        self.previous: np.ndarray | None = None  # last frame, subsampled: (h, w, 3) int16
        self.mae: list[float] = []  # per step, all channels, 0-255
        self.luma_mae: list[float] = []  # per step, BT.709 luma, 0-255

    def add(self, frames: np.ndarray) -> None:
        """frames: (T, H, W, 3) uint8, the clip's next T frames."""
        stride = self.settings.flicker_stride
        sample = frames[:, ::stride, ::stride].astype(np.int16)  # (T, h, w, 3)
        sequence = sample if self.previous is None else np.concatenate([self.previous[None], sample])
        self.previous = sample[-1]
        if len(sequence) < 2:
            return
        steps = np.abs(np.diff(sequence, axis=0))  # (T', h, w, 3)
        self.mae.extend(steps.mean(axis=(1, 2, 3)).tolist())
        luma = sequence.astype(np.float32) @ LUMA_WEIGHTS  # (T'+1, h, w)
        self.luma_mae.extend(np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2)).tolist())

    def finish(self, timeline: Timeline) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(clip columns, per-second columns)."""
        mae = np.asarray(self.mae, dtype=np.float64)
        step_frames = np.arange(1, len(mae) + 1)  # step k ends at frame k
        spikes = self._spikes(mae, timeline.fps)
        luma = np.asarray(self.luma_mae, dtype=np.float64)
        clip = {
            "motion_mean": float(luma.mean()) if len(luma) else 0.0,
            "motion_max": float(luma.max()) if len(luma) else 0.0,
            "temporal_flickering": float((255.0 - mae.mean()) / 255.0) if len(mae) else None,
            "flicker_spikes": int(spikes.sum()),
        }
        seconds = {
            "flicker_mae": timeline.per_second_mean(step_frames, mae),
            "flicker_spikes": timeline.per_second_count(step_frames[spikes]),
        }
        return clip, seconds

    def within(self, first: int, end: int) -> FlickerTrack:
        """The steps between frames [first, end) only, as a clip of those frames would have them."""
        part = FlickerTrack(self.settings)
        stop = max(first, end - 1)  # step k (index k - 1) ends at frame k: k in first + 1 .. end - 1
        part.mae, part.luma_mae = self.mae[first:stop], self.luma_mae[first:stop]
        return part

    def switches(self, frames: Sequence[int], fps: float) -> list[SwitchQuality]:
        """The step into each of `frames` against the steps around it: a cut is a spike at a switch."""
        mae = np.asarray(self.mae, dtype=np.float64)
        ratios = self._ratios(mae, fps)
        found = []
        for frame in frames:
            step = frame - 1  # the step that ends at `frame`
            if not 0 <= step < len(mae):
                found.append(SwitchQuality(frame, None, None, None))
                continue
            ratio = float(ratios[step])
            found.append(SwitchQuality(frame, float(mae[step]), ratio, ratio > self.settings.spike_ratio))
        return found

    def _spikes(self, mae: np.ndarray, fps: float) -> np.ndarray:
        """Steps above spike_ratio x the median of the steps within half a second, and above spike_floor."""
        return self._ratios(mae, fps) > self.settings.spike_ratio

    def _ratios(self, mae: np.ndarray, fps: float) -> np.ndarray:
        """Each step over the median step within half a second of it, that median floored at
        spike_floor / spike_ratio: so a ratio over spike_ratio is exactly a step over both spike_ratio x
        the median and spike_floor (a still video's noise never makes a ratio large)."""
        if not len(mae):
            return np.zeros(0)
        half = max(1, round(fps / 2))
        local = np.median(sliding_window_view(np.pad(mae, half, mode="edge"), 2 * half + 1), axis=1)
        return mae / np.maximum(local, self.settings.spike_floor / self.settings.spike_ratio)
