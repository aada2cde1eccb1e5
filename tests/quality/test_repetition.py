"""pipeline/quality/repetition.py: roll-back to the first frames and the most similar earlier second."""

from __future__ import annotations

from pathlib import Path

import pytest
from quality_videos import analyse, pan, rolled_back, still, through_encoder, value


def test_a_clip_that_returns_to_its_opening_is_a_rollback(tmp_path: Path, ffmpeg_bin: str) -> None:
    report = analyse(through_encoder(rolled_back(away_s=12, back_s=6), tmp_path, ffmpeg_bin))
    assert value(report, "rollback") > 0.6
    assert report.clip.rollback_second == 12  # the replay starts at 12 s
    matches = [s.best_match_second for s in report.seconds]
    assert matches[12:17] == [0, 1, 2, 3, 4]  # each replayed second found where it first played
    assert min(s.best_match_similarity or 0 for s in report.seconds[12:17]) > 0.95
    assert matches[:5] == [None] * 5  # nothing a window's length before them
    assert value(report, "start_similarity") > 0.7


def test_a_clip_that_moves_on_has_no_rollback(tmp_path: Path, ffmpeg_bin: str) -> None:
    report = analyse(through_encoder(pan(14, px_per_frame=3), tmp_path, ffmpeg_bin))
    assert value(report, "rollback") < 0.15 and value(report, "start_similarity") < 0.4


def test_a_still_clip_stays_at_its_start_without_rolling_back(tmp_path: Path, ffmpeg_bin: str) -> None:
    report = analyse(through_encoder(still(12), tmp_path, ffmpeg_bin))
    assert report.clip.start_similarity == pytest.approx(1.0, abs=0.001)
    assert report.clip.rollback == pytest.approx(0.0, abs=0.01) and report.clip.rollback_second is None


def test_a_clip_too_short_to_leave_its_first_window_has_no_rollback() -> None:
    assert analyse(still(1.5)).clip.rollback is None
