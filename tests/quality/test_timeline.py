"""pipeline/quality/timeline.py: seconds and drift windows, scaled for short clips."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.quality.timeline import Timeline, window_drift


@pytest.mark.parametrize(
    ("frames", "window", "window_seconds", "seconds"),
    [
        (957, 80, 5, 60),  # a 60 s clip: the paper's 5 s windows
        (160, 80, 5, 10),  # 10 s: the windows meet
        (97, 48, 3, 7),  # 6 s: each window is half the clip
        (1, 1, 1, 1),  # one frame: both windows are that frame
    ],
)
def test_windows_are_five_seconds_or_half_the_clip(
    frames: int, window: int, window_seconds: int, seconds: int
) -> None:
    timeline = Timeline(fps=16, num_frames=frames, window_s=5.0)
    assert timeline.window_frames == window
    assert timeline.window_seconds == window_seconds
    assert timeline.num_seconds == seconds


def test_per_second_means_and_drift() -> None:
    timeline = Timeline(fps=4, num_frames=10, window_s=1.0)  # seconds: 0-3, 4-7, 8-9
    frames = np.arange(10)
    values = frames.astype(float)
    assert timeline.per_second_mean(frames, values).tolist() == [1.5, 5.5, 8.5]
    assert timeline.per_second_count(frames[::3]).tolist() == [2, 1, 1]
    assert np.isnan(timeline.per_second_mean(frames[:4], values[:4])[1])
    assert window_drift(timeline, frames, values) == pytest.approx(7.5 - 1.5)  # frames 6-9 vs 0-3
    assert window_drift(timeline, frames[4:6], values[4:6]) is None  # no sample in either window
