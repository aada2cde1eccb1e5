"""Per-segment signals (pipeline/quality/meter.py) and the jump at each switch (flicker.py): a storyboard's
segments, each measured as a clip of its own from the clip's own tracks, on synthetic streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quality_videos import FPS, analyse, flashing, pan, saturation_ramp, still, through_encoder
from test_meter import assert_same

from pipeline.quality import ClipAnalysis, QualityMeter, SegmentQuality


def test_a_frozen_segment_shows_in_its_own_signals_only(tmp_path: Path, ffmpeg_bin: str) -> None:
    moving = pan(8, px_per_frame=2)  # 4 s of pan, 4 s frozen on its last frame, then the pan goes on
    frames = np.concatenate([moving[:64], np.repeat(moving[63:64], 64, axis=0), moving[64:]])
    report = analyse(through_encoder(frames, tmp_path, ffmpeg_bin), switch_frames=[64, 128])

    first, frozen, last = report.segments
    assert [(s.first_frame, s.last_frame) for s in report.segments] == [(0, 63), (64, 127), (128, 191)]
    assert frozen.signals.motion_level is not None and frozen.signals.motion_level < 1.0
    assert (frozen.signals.dynamic_degree, frozen.signals.moving_fraction) == (0.0, 0.0)
    assert frozen.signals.temporal_flickering == pytest.approx(1.0, abs=0.001)
    for segment in (first, last):
        assert segment.signals.motion_level == pytest.approx(2 * FPS, rel=0.1)
        assert (segment.signals.dynamic_degree, segment.signals.moving_fraction) == (1.0, 1.0)
        assert segment.signals.motion_decay == pytest.approx(0.0, abs=0.05)
    assert report.clip.dynamic_degree == 1.0  # the clip as a whole hides the frozen third
    for segment in (frozen, last):  # stopping and starting again are no cuts
        assert segment.switch is not None and segment.switch.cut is False
    assert first.switch is None


def test_a_hard_cut_at_a_switch_is_flagged_and_a_smooth_one_is_not(tmp_path: Path, ffmpeg_bin: str) -> None:
    scene = pan(8, px_per_frame=2)  # two segments over one continuing pan, then another scene
    frames = np.concatenate([scene, pan(4, px_per_frame=2, seed=7)])
    report = analyse(through_encoder(frames, tmp_path, ffmpeg_bin), switch_frames=[64, 128])

    _, smooth, cut = report.segments
    assert smooth.switch is not None and cut.switch is not None
    assert (smooth.switch.frame, cut.switch.frame) == (64, 128)
    assert smooth.switch.cut is False and smooth.switch.ratio is not None and smooth.switch.ratio < 2
    assert cut.switch.cut is True and cut.switch.ratio is not None and cut.switch.ratio > 4
    assert cut.switch.step is not None and smooth.switch.step is not None
    assert cut.switch.step > 4 * smooth.switch.step
    # The jump is the switch's, not a segment's: inside every segment the steps are smooth
    assert [s.signals.flicker_spikes for s in report.segments] == [0, 0, 0]
    assert report.clip.flicker_spikes == 1  # the clip's own count sees it, as it sees any jump


def test_each_segment_is_measured_as_a_clip_of_its_own() -> None:
    # Switches on even frames, so the segments' 8 fps samples are the ones a clip of their own takes
    parts = [pan(2, px_per_frame=3), flashing(3, every_s=1.0, gain=50), saturation_ramp(3, 0.2, 0.7)]
    frames = np.concatenate(parts)
    report = analyse(frames, switch_frames=[32, 80])

    start = 0
    assert len(report.segments) == 3
    for part, segment in zip(parts, report.segments, strict=True):
        alone = analyse(frames[start : start + len(part)])
        assert (segment.first_frame, segment.last_frame) == (start, start + len(part) - 1)
        assert_same(segment.signals, alone.clip)
        start += len(part)
    assert report.segments[1].signals.flicker_spikes == 4  # the flashes at 1 and 2 s: into and out of each


def test_a_segment_under_ten_seconds_compares_its_halves() -> None:
    frames = np.concatenate([still(12), saturation_ramp(4, 0.2, 0.6)])
    report = analyse(frames, switch_frames=[192])

    long, short = report.segments
    assert long.signals.saturation_drift == pytest.approx(0.0, abs=1e-6)  # 12 s: the 5 s windows
    # 4 s: its last 2 s against its first 2 s, half the ramp's rise
    assert short.signals.saturation_drift == pytest.approx(0.2, abs=0.02)


def test_a_clip_of_one_prompt_is_one_segment_with_the_clips_own_signals() -> None:
    frames = pan(3, px_per_frame=2)
    report = analyse(frames)
    assert report.segments == [SegmentQuality(0, len(frames) - 1, report.clip, None)]


def test_the_meter_thread_splits_the_clip_where_it_was_told() -> None:
    frames = np.concatenate([pan(2, px_per_frame=2), still(2)])
    meter = QualityMeter(FPS, len(frames), switch_frames=[32])
    for start in range(0, len(frames), 12):
        meter.update(frames[start : start + 12])
    report = meter.result()
    assert report is not None
    assert report.segments == analyse(frames, switch_frames=[32]).segments


@pytest.mark.parametrize(
    ("switch_frames", "num_frames", "message"),
    [
        (
            [0, 10],
            40,
            r"switch_frames=\[0, 10\] must rise from 1 \(the first frame of each segment after the first",
        ),
        ([20, 10], 40, r"switch_frames=\[20, 10\] must rise"),
        ([20, 20], 40, r"switch_frames=\[20, 20\] must rise"),
        ([10, 40], 40, r"switch_frames=\[10, 40\] must be under num_frames=40"),
    ],
)
def test_switch_frames_are_checked_naming_the_value(
    switch_frames: list[int], num_frames: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ClipAnalysis(FPS, num_frames, switch_frames=switch_frames)


def test_a_segment_the_clip_never_reached_has_no_entry() -> None:
    analysis = ClipAnalysis(FPS, switch_frames=[16, 200])  # length unknown: the switches cannot be checked
    analysis.add(pan(2, px_per_frame=2))
    report = analysis.finish()
    assert report is not None
    assert [(s.first_frame, s.last_frame) for s in report.segments] == [(0, 15), (16, 31)]
