"""Cheap per-clip quality telemetry, computed on downsampled frames as they stream past.

Long autoregressive videos fail in recognisable ways: they freeze (motion dies out), they flicker
(sudden whole-frame jumps, e.g. every 5 s with a 21-frame window, docs/cache_policies.md §8), and
they drift (colour and brightness wander away from the opening). These numbers make that visible in
the metrics table without a second pass over the video. Memory is constant in clip length: a few
floats and one downsampled frame.

All values are on the 0-255 luma scale (BT.709 weights) of frames subsampled by `stride`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # BT.709, as the encoder tags


@dataclass(frozen=True)
class ClipQuality:
    motion_mean: float  # mean |Δluma| between consecutive frames: ~0 means a frozen video
    motion_max: float  # the largest such step: spikes far above the mean are flicker or cuts
    luma_drift: float  # |mean luma of the last window - of the first window|: slow drift


class QualityMeter:
    """Feed frame chunks in order with `update`; read `result` at the end of the clip."""

    def __init__(self, fps: float, window_s: float = 5.0, stride: int = 8):
        if stride < 1 or window_s <= 0 or fps <= 0:
            raise ValueError(f"stride={stride} must be >= 1, window_s={window_s} and fps={fps} > 0")
        self.stride = stride
        self.window = max(1, round(window_s * fps))  # frames in the opening / closing windows
        self.first_luma: list[float] = []  # mean luma of the first `window` frames
        self.last_luma: deque[float] = deque(maxlen=self.window)  # ... and of the latest ones
        self.previous: np.ndarray | None = None  # last downsampled luma frame
        self.steps = 0
        self.motion_sum = 0.0
        self.motion_max = 0.0

    def update(self, frames: np.ndarray) -> None:
        """frames: (T, H, W, 3) uint8 RGB, the next T frames of the clip."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
        small = frames[:, :: self.stride, :: self.stride].astype(np.float32)  # (T, h, w, 3)
        luma = small @ LUMA_WEIGHTS  # (T, h, w)
        # with the previous chunk's last frame in front, so steps across chunk borders count too
        luma_seq = luma if self.previous is None else np.concatenate([self.previous[None], luma])
        if len(luma_seq) > 1:
            steps = np.abs(np.diff(luma_seq, axis=0)).mean(axis=(1, 2))  # (T or T-1,)
            self.steps += len(steps)
            self.motion_sum += float(steps.sum())
            self.motion_max = max(self.motion_max, float(steps.max()))
        means = luma.mean(axis=(1, 2))  # (T,)
        room = self.window - len(self.first_luma)
        self.first_luma.extend(float(m) for m in means[:room])
        self.last_luma.extend(float(m) for m in means)
        self.previous = luma[-1]

    def result(self) -> ClipQuality | None:
        """None before any frame arrived; motion is 0 for a single frame."""
        if not self.first_luma:
            return None
        drift = abs(float(np.mean(self.last_luma)) - float(np.mean(self.first_luma)))
        motion_mean = self.motion_sum / self.steps if self.steps else 0.0
        return ClipQuality(motion_mean=motion_mean, motion_max=self.motion_max, luma_drift=drift)
