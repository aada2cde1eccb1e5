"""Per-clip quality telemetry on streamed frames."""

import numpy as np
import pytest

from pipeline.quality import ClipQuality, QualityMeter


def clip(values: list[int], h: int = 32, w: int = 48) -> np.ndarray:
    """One grey frame per value: (T, h, w, 3) uint8."""
    return np.stack([np.full((h, w, 3), v, dtype=np.uint8) for v in values])


def measure(frames: np.ndarray, chunks: list[int], fps: float = 4.0, window_s: float = 1.0) -> ClipQuality:
    meter = QualityMeter(fps=fps, window_s=window_s, stride=4)
    start = 0
    for size in chunks:
        meter.update(frames[start : start + size])
        start += size
    result = meter.result()
    assert result is not None
    return result


def test_a_frozen_clip_has_no_motion_and_no_drift():
    assert measure(clip([100] * 12), [3, 4, 5]) == ClipQuality(0.0, 0.0, 0.0)


def test_one_flash_shows_as_a_motion_spike_far_above_the_mean():
    values = [100] * 20
    values[10] = 200  # one bright frame: two steps of 100 grey levels among 19 steps
    result = measure(clip(values), [9, 11])
    assert result.motion_max == pytest.approx(100.0, abs=0.5)
    assert result.motion_mean == pytest.approx(200 / 19, abs=0.1)


def test_a_slow_brightening_shows_as_drift_between_the_first_and_last_window():
    values = list(range(50, 130, 4))  # 20 frames, +4 grey levels per frame
    result = measure(clip(values), [5, 5, 5, 5])  # windows: first 4 and last 4 frames at 4 fps, 1 s
    assert result.luma_drift == pytest.approx(4 * 16, abs=0.5)  # the windows' means are 16 frames apart
    assert result.motion_mean == pytest.approx(4.0, abs=0.1)


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(33, 32, 48, 3), dtype=np.uint8)
    whole = measure(frames, [33])
    for chunks in ([9, 12, 12], [1] * 33):
        parts = measure(frames, chunks)
        assert parts.motion_max == whole.motion_max  # the same per-step values, float32 sums in another order
        assert parts.motion_mean == pytest.approx(whole.motion_mean, rel=1e-6)
        assert parts.luma_drift == pytest.approx(whole.luma_drift, rel=1e-6, abs=1e-4)


def test_no_frames_gives_no_result_and_bad_shapes_are_named():
    meter = QualityMeter(fps=16)
    assert meter.result() is None
    with pytest.raises(ValueError, match=r"frames must be \(T, H, W, 3\) RGB, got shape \(4, 8, 8\)"):
        meter.update(np.zeros((4, 8, 8), dtype=np.uint8))
