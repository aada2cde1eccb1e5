"""Motion: a proxy of VBench's dynamic degree from dense optical flow, its level per second, its decay.

VBench's rule: sample the video at about 8 fps; for each pair of consecutive samples take the mean of
the largest 5% of flow magnitudes; the pair moves if that exceeds 6 px x min(H, W) / 256 (x 8 / fps
below 8 fps); the video is dynamic if at least round(4 x samples / 16) pairs move. VBench runs RAFT on
full frames; this proxy runs OpenCV's Farneback flow on area-downsampled frames and scales the
magnitudes back to full-frame pixels, so the same threshold applies.

Motion level is that top-5% magnitude in full-frame pixels per second. Decay compares its mean over the
last window with the first: (early - late) / max(early, late), 1 when the motion stopped, 0 when it
held (or both windows are still: under `still_fraction` of the moving threshold), negative when it
grew. Motion stagnating over a long clip is a known failure of attention-sink caches (the Deep Forcing
paper's "motion deceleration").
"""

from __future__ import annotations

import copy
from typing import Any

import cv2
import numpy as np

from pipeline.quality.settings import QualitySettings
from pipeline.quality.timeline import Timeline


class FlowTrack:
    """Farneback flow between consecutive analysis frames (the clip's frames at about flow_fps)."""

    def __init__(
        self,
        settings: QualitySettings,
        fps: float,
        interval: int,
        full_size: tuple[int, int],
        analysis_size: tuple[int, int],
    ):
        self.settings = settings
        (height, width), (_, small_width) = full_size, analysis_size
        self.to_full_px = width / small_width  # analysis pixels -> full-frame pixels
        slow = max(1.0, settings.flow_fps / fps)  # VBench: pairs further apart in time may move further
        self.threshold_px = (
            slow * settings.flow_threshold_px * min(height, width) / settings.flow_threshold_side
        )
        self.interval = interval
        self.pairs_per_s = fps / interval
        self.samples = 0  # analysis frames seen
        self.previous: np.ndarray | None = None
        self.flow = np.zeros((*analysis_size, 2), dtype=np.float32)  # output buffer, reused for every pair
        self.pair_frames: list[int] = []  # frame index of each pair's later frame
        self.top_px: list[float] = []  # mean of the top magnitudes, full-frame px per pair

    def add(self, frame_index: int, small_gray: np.ndarray) -> None:
        self.samples += 1
        if self.previous is not None:
            p = self.settings.farneback
            flow = cv2.calcOpticalFlowFarneback(
                self.previous,
                small_gray,
                self.flow,
                p.pyr_scale,
                p.levels,
                p.winsize,
                p.iterations,
                p.poly_n,
                p.poly_sigma,
                0,
            )  # (h, w, 2): dx, dy in analysis pixels
            magnitude = cv2.magnitude(flow[..., 0], flow[..., 1]).ravel()
            top = max(1, int(magnitude.size * self.settings.flow_top_fraction))
            self.top_px.append(float(np.partition(magnitude, -top)[-top:].mean()) * self.to_full_px)
            self.pair_frames.append(frame_index)
        self.previous = small_gray

    def within(self, first: int, end: int) -> FlowTrack:
        """The pairs of frames [first, end) only, frame indices counted from `first`."""
        part = copy.copy(self)  # the same thresholds; the lists replaced below
        kept = [
            (frame, top)
            for frame, top in zip(self.pair_frames, self.top_px, strict=True)
            if first <= frame - self.interval and frame < end
        ]
        part.pair_frames = [frame - first for frame, _ in kept]
        part.top_px = [top for _, top in kept]
        first_sample = -(-first // self.interval) * self.interval  # the clip samples every interval-th frame
        part.samples = len(range(first_sample, end, self.interval))
        return part

    def finish(self, timeline: Timeline) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(clip columns, per-second columns)."""
        frames = np.asarray(self.pair_frames, dtype=np.int64)
        top = np.asarray(self.top_px, dtype=np.float64)
        moving = (top > self.threshold_px).astype(np.float64)
        level = top * self.pairs_per_s  # full-frame px per second
        seconds = {
            "motion_level": timeline.per_second_mean(frames, level),
            "moving_fraction": timeline.per_second_mean(frames, moving),
        }
        if not len(top):
            empty = ("dynamic_degree", "moving_fraction", "motion_level", "motion_decay")
            return dict.fromkeys(empty), seconds
        # VBench's count; at least one pair (its round() gives 0 for fewer than 3 samples)
        needed = max(1, round(self.settings.flow_pairs_per_16_frames * self.samples / 16))
        clip = {
            "dynamic_degree": 1.0 if moving.sum() >= needed else 0.0,
            "moving_fraction": float(moving.mean()),
            "motion_level": float(level.mean()),
            "motion_decay": self._decay(
                level[timeline.first_window(frames)], level[timeline.last_window(frames)]
            ),
        }
        return clip, seconds

    def _decay(self, early: np.ndarray, late: np.ndarray) -> float | None:
        if not len(early) or not len(late):
            return None
        first, last = float(early.mean()), float(late.mean())
        peak = max(first, last)
        still = self.settings.still_fraction * self.threshold_px * self.pairs_per_s
        return (first - last) / peak if peak > still else 0.0
