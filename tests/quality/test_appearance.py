"""pipeline/quality/appearance.py: colour and sharpness drift between the first and last windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quality_videos import analyse, blurring, saturation_ramp, series, still, through_encoder, value


def ramp_drift(start: float, end: float, frames: int, window: int) -> float:
    """Drift of a linear ramp: its rate times the distance between the windows' centres."""
    return (end - start) / (frames - 1) * (frames - window)


@pytest.mark.parametrize(
    ("seconds", "window"),
    [(12, 80), (4, 32)],  # 5 s windows; a clip shorter than 10 s compares its halves
)
def test_a_saturation_ramp_drifts_by_its_known_amount(
    tmp_path: Path, ffmpeg_bin: str, seconds: int, window: int
) -> None:
    frames = through_encoder(saturation_ramp(seconds, 0.2, 0.8), tmp_path, ffmpeg_bin)
    report = analyse(frames)
    assert report.clip.saturation_drift == pytest.approx(ramp_drift(0.2, 0.8, len(frames), window), abs=0.01)
    assert value(report, "colourfulness_drift") > 30
    per_second = series(report, "saturation")
    assert per_second == sorted(per_second)  # rising second by second


def test_a_brightening_clip_drifts_in_brightness_and_the_v2_luma_drift_agrees(
    tmp_path: Path, ffmpeg_bin: str
) -> None:
    base = still(12).astype(np.int16)
    offsets = np.linspace(0, 60, len(base)).round().astype(np.int16)[:, None, None, None]
    frames = through_encoder((base + offsets).clip(0, 255).astype(np.uint8), tmp_path, ffmpeg_bin)
    report = analyse(frames)
    expected = ramp_drift(0, 60, len(frames), window=80)
    assert report.clip.brightness_drift == pytest.approx(expected, abs=1.0)
    assert report.clip.luma_drift == pytest.approx(abs(value(report, "brightness_drift")), abs=1e-9)


def test_a_blurring_clip_loses_most_of_its_sharpness(tmp_path: Path, ffmpeg_bin: str) -> None:
    report = analyse(through_encoder(blurring(12, max_sigma=3.0), tmp_path, ffmpeg_bin))
    assert value(report, "sharpness_drift") < -0.8
    sharpness = series(report, "sharpness")
    assert sharpness == sorted(sharpness, reverse=True)


def test_a_still_clip_does_not_drift(tmp_path: Path, ffmpeg_bin: str) -> None:
    report = analyse(through_encoder(still(12), tmp_path, ffmpeg_bin))
    assert abs(value(report, "saturation_drift")) < 0.002 and abs(value(report, "brightness_drift")) < 0.1
    assert abs(value(report, "colourfulness_drift")) < 0.1 and abs(value(report, "sharpness_drift")) < 0.1


def test_a_one_frame_clip_compares_that_frame_with_itself() -> None:
    clip = analyse(still(1 / 16)).clip
    assert (clip.saturation_drift, clip.brightness_drift, clip.sharpness_drift, clip.luma_drift) == (0,) * 4
