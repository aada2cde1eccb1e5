"""Roll-back and repetition: how much late frames look like the first ones, and like earlier seconds.

A cache that keeps the first frames as a sink can make a long video revert to them ("roll-back, where
previously sinked frames are regenerated", the Deep Forcing paper) or repeat itself. Each analysis frame
becomes a small luma signature, mean-removed and unit-length, so the similarity of two frames is the
cosine of their signatures (their correlation, -1..1): 1 for the same picture, ~0 for unrelated ones,
blind to a global brightness change (that is drift, measured elsewhere). Frames flat to within
`flat_signature_std` grey levels match only other flat frames.

    start_similarity   each late frame's best match among the first window's frames, averaged over
                       the last window (per second: that second's best match to the first window)
    rollback           the largest return towards the start after the first window: a second's start
                       similarity minus the lowest one seen between the first window and it (0..2;
                       ~0 for a video that drifts away or stays put, near 1 for one that came back),
                       and the second by which it had come halfway back (none for a
                       return within `rollback_noise`)
    best match         per second, the most similar earlier second at least a window's length before
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from pipeline.quality.frames import resize
from pipeline.quality.settings import QualitySettings
from pipeline.quality.timeline import Timeline


class RepetitionTrack:
    def __init__(self, settings: QualitySettings, analysis_size: tuple[int, int]):
        self.settings = settings
        height, width = analysis_size
        self.width = min(settings.signature_width, width)
        self.height = max(1, round(height * self.width / width))
        self.frames: list[int] = []
        self.signatures: list[np.ndarray] = []  # (height * width,) float32, unit length or zero (flat)
        self.flat: list[bool] = []

    def add(self, frame_index: int, small_gray: np.ndarray) -> None:
        signature = resize(small_gray, self.height, self.width).astype(np.float32).ravel()
        signature -= signature.mean()
        flat = bool(signature.std() < self.settings.flat_signature_std)
        self.frames.append(frame_index)
        self.signatures.append(np.zeros_like(signature) if flat else signature / np.linalg.norm(signature))
        self.flat.append(flat)

    def within(self, first: int, end: int) -> RepetitionTrack:
        """The signatures of frames [first, end) only, frame indices counted from `first`."""
        part = copy.copy(self)
        kept = [i for i, frame in enumerate(self.frames) if first <= frame < end]
        part.frames = [self.frames[i] - first for i in kept]
        part.signatures = [self.signatures[i] for i in kept]
        part.flat = [self.flat[i] for i in kept]
        return part

    def finish(self, timeline: Timeline) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(clip columns, per-second columns)."""
        n_seconds = timeline.num_seconds
        seconds = {
            "start_similarity": np.full(n_seconds, np.nan),
            "best_match_second": np.full(n_seconds, -1, dtype=np.int64),  # -1: none
            "best_match_similarity": np.full(n_seconds, np.nan),
        }
        clip: dict[str, Any] = {"start_similarity": None, "rollback": None, "rollback_second": None}
        if not self.frames:
            return clip, seconds
        frames = np.asarray(self.frames, dtype=np.int64)
        similarity = self._similarity()  # (n, n) frame by frame
        first = timeline.first_window(frames)
        to_start = similarity[:, first].max(axis=1)  # (n,) each frame's best match in the first window
        clip["start_similarity"] = float(to_start[timeline.last_window(frames)].mean())

        present, starts = np.unique(timeline.second_of(frames), return_index=True)  # frames in time order
        by_second = np.maximum.reduceat(np.maximum.reduceat(similarity, starts, axis=0), starts, axis=1)
        start = seconds["start_similarity"]
        start[present] = np.maximum.reduceat(to_start, starts)
        gap = timeline.window_seconds
        for row, second in enumerate(present):
            earlier = np.flatnonzero(present <= second - gap)
            if len(earlier):
                best = earlier[np.argmax(by_second[row, earlier])]
                seconds["best_match_second"][second] = present[best]
                seconds["best_match_similarity"][second] = by_second[row, best]
        clip.update(
            _rollback(start, present[timeline.after_first_window(present)], self.settings.rollback_noise)
        )
        return clip, seconds

    def _similarity(self) -> np.ndarray:
        signatures = np.stack(self.signatures)  # (n, d)
        similarity = signatures @ signatures.T
        flat = np.asarray(self.flat)
        similarity[np.ix_(flat, flat)] = 1.0  # two flat frames are the same picture
        return similarity


def _rollback(start: np.ndarray, later: np.ndarray, noise: float) -> dict[str, Any]:
    """Largest rise of start similarity over its lowest value so far, over the seconds `later`."""
    if len(later) < 2:
        return {"rollback": None, "rollback_second": None}
    values = start[later]
    lowest_before = np.minimum.accumulate(values)[:-1]
    rise = values[1:] - lowest_before
    rollback = float(rise.max())
    if rollback <= noise:
        return {"rollback": max(rollback, 0.0), "rollback_second": None}
    halfway = int(np.argmax(rise >= rollback / 2))  # the first such second: where a sudden return happened
    return {"rollback": rollback, "rollback_second": int(later[halfway + 1])}
