"""pipeline/quality/motion.py: the dynamic-degree proxy, motion level and decay, on encoded clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quality_videos import FPS, analyse, pan, series, still, through_encoder, value


@pytest.mark.parametrize(
    ("height", "width", "px_per_frame", "moving"),
    [
        (96, 160, 2, True),  # 4 px per 8 fps pair against VBench's 6 x 96 / 256 = 2.25 px
        (240, 320, 2, False),  # the same 4 px, now under 6 x 240 / 256 = 5.6 px; analysed at half size
        (240, 320, 4, True),  # 8 px: moving again
    ],
)
def test_a_pan_has_its_known_flow_and_vbench_threshold(
    tmp_path: Path, ffmpeg_bin: str, height: int, width: int, px_per_frame: int, moving: bool
) -> None:
    report = analyse(through_encoder(pan(4, px_per_frame, height, width), tmp_path, ffmpeg_bin))
    speed = px_per_frame * FPS  # full-frame pixels per second, whatever the analysis size
    assert report.clip.motion_level == pytest.approx(speed, rel=0.06)
    assert series(report, "motion_level") == pytest.approx([speed] * 4, rel=0.1)
    assert report.clip.moving_fraction == (1.0 if moving else 0.0)
    assert report.clip.dynamic_degree == (1.0 if moving else 0.0)
    assert report.clip.motion_decay == pytest.approx(0.0, abs=0.05)


def test_a_still_clip_has_no_motion(tmp_path: Path, ffmpeg_bin: str) -> None:
    report = analyse(through_encoder(still(6), tmp_path, ffmpeg_bin))
    assert value(report, "motion_level") < 1.0  # px/s of encoding noise
    assert report.clip.dynamic_degree == 0.0 and report.clip.moving_fraction == 0.0
    assert report.clip.motion_decay == 0.0  # both windows still: no decay, not noise over noise


def test_motion_that_stops_decays_to_one(tmp_path: Path, ffmpeg_bin: str) -> None:
    moving = pan(6, px_per_frame=2)
    frames = np.concatenate([moving, np.repeat(moving[-1:], 6 * FPS, axis=0)])  # then held for 6 s
    report = analyse(through_encoder(frames, tmp_path, ffmpeg_bin))
    assert report.clip.motion_decay == pytest.approx(1.0, abs=0.03)
    levels = series(report, "motion_level")
    assert all(level > 25 for level in levels[:6]) and all(level < 2 for level in levels[7:])
    assert report.clip.moving_fraction == pytest.approx(0.5, abs=0.03)
    assert report.clip.dynamic_degree == 1.0  # VBench's rule: a quarter of the pairs moving is enough


def test_a_one_frame_clip_has_no_motion_signals() -> None:
    report = analyse(still(1 / FPS))
    clip = report.clip
    assert (clip.dynamic_degree, clip.moving_fraction, clip.motion_level, clip.motion_decay) == (None,) * 4
    assert report.seconds[0].motion_level is None
