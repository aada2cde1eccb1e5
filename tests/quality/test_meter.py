"""pipeline/quality/meter.py: chunks in any size, the analysis thread, failures that never fail a clip."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from quality_videos import FPS, analyse, pan, still

from pipeline.quality import ClipAnalysis, QualityMeter


def test_the_chunking_does_not_change_any_signal() -> None:
    frames = pan(5, px_per_frame=3)
    whole = ClipAnalysis(FPS, len(frames))
    whole.add(frames)
    expected = whole.finish()
    assert expected is not None
    for sizes in ([9] + [12] * 6, [1] * len(frames), [7, 13, 5, 55]):
        analysis = ClipAnalysis(FPS, len(frames))
        start = 0
        for size in sizes:
            analysis.add(frames[start : start + size])
            start += size
        report = analysis.finish()
        assert report is not None
        assert_same(report.clip, expected.clip)
        assert len(report.seconds) == len(expected.seconds) == 5
        for got, want in zip(report.seconds, expected.seconds, strict=True):
            assert_same(got, want)
        assert report.thumbnails == expected.thumbnails


def assert_same(got: object, want: object) -> None:
    """Equal dataclasses, floats up to summation order."""
    for name, value in dataclasses.asdict(want).items():  # type: ignore[call-overload]
        expected = value if value is None else pytest.approx(value, rel=1e-6, abs=1e-9)
        assert getattr(got, name) == expected, name


def test_the_meter_thread_reports_what_the_analysis_does() -> None:
    frames = pan(3, px_per_frame=2)
    meter = QualityMeter(FPS, len(frames))
    for start in range(0, len(frames), 12):
        meter.update(frames[start : start + 12])
    report = meter.result()
    assert report is not None
    assert report.clip == analyse(frames).clip
    assert report.cpu_s > 0
    assert [s.second for s in report.seconds] == [0, 1, 2] and sum(s.frames for s in report.seconds) == 48
    with pytest.raises(RuntimeError, match="after result"):
        meter.update(frames[:1])


def test_bad_chunks_are_refused_with_their_shape() -> None:
    meter = QualityMeter(FPS)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) RGB array, got shape \(4, 8, 8\)"):
        meter.update(np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        meter.update(np.zeros((4, 8, 8, 3), dtype=np.float32))
    assert meter.result() is None  # no frame arrived
    with pytest.raises(ValueError, match="fps=0 must be > 0"):
        QualityMeter(0)


def test_a_failing_analysis_is_logged_and_gives_no_report_without_blocking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = QualityMeter(FPS)
    meter.update(still(1, 32, 48))
    for _ in range(10):  # the size changed: the thread fails on the first, then drains the rest
        meter.update(still(1, 16, 24))
    with caplog.at_level(logging.ERROR, logger="pipeline.quality"):
        assert meter.result(timeout_s=10) is None
    assert "a clip keeps one frame size" in caplog.text


def test_close_stops_the_thread_without_waiting() -> None:
    meter = QualityMeter(FPS)
    meter.update(still(1))
    meter.close()
    meter.close()  # idempotent
    meter._thread.join(timeout=5)
    assert not meter._thread.is_alive()
