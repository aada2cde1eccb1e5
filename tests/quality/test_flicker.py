"""pipeline/quality/flicker.py: VBench's temporal flickering and its spikes, on encoded synthetic clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quality_videos import FPS, analyse, flashing, still, through_encoder


def test_a_still_clip_scores_one_and_has_no_spikes(tmp_path: Path, ffmpeg_bin: str) -> None:
    report = analyse(through_encoder(still(6), tmp_path, ffmpeg_bin))
    assert report.clip.temporal_flickering == pytest.approx(1.0, abs=0.001)  # encoding noise only
    assert report.clip.flicker_spikes == 0
    assert report.clip.motion_mean < 0.1 and report.clip.motion_max < 1.0


def test_a_flash_every_second_is_two_spikes_each_in_its_second(tmp_path: Path, ffmpeg_bin: str) -> None:
    frames = through_encoder(flashing(12, every_s=1.0, gain=60), tmp_path, ffmpeg_bin)
    report = analyse(frames)
    flashes = 11  # frames 16, 32, ..., 176
    assert report.clip.flicker_spikes == 2 * flashes  # the step up into the flash and back down
    per_second = [s.flicker_spikes for s in report.seconds]
    assert per_second == [0] + [2] * flashes  # both steps of the flash at frame 16k fall in second k
    # VBench's score: the two 60-level steps per second among 15 near-zero ones
    expected = 1 - (2 * flashes * 60 / (len(frames) - 1)) / 255
    assert report.clip.temporal_flickering == pytest.approx(expected, abs=0.003)
    assert report.seconds[3].flicker_mae == pytest.approx(2 * 60 / FPS, abs=0.5)


def test_smooth_change_is_not_a_spike_however_large() -> None:
    ramp = np.stack([np.full((32, 48, 3), 4 * i, dtype=np.uint8) for i in range(60)])  # +4 levels a frame
    report = analyse(ramp)
    assert report.clip.flicker_spikes == 0
    assert report.clip.temporal_flickering == pytest.approx(1 - 4 / 255)
    assert report.clip.motion_mean == pytest.approx(4.0, abs=0.01)
