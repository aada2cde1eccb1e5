"""pipeline/quality/signals.py: every signal is a real column with a per-second curve, and documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.quality import SIGNALS, ClipQuality, SecondQuality, get_signal

README = Path(__file__).resolve().parents[2] / "README.md"


def test_each_signal_is_a_clip_column_with_a_per_second_curve() -> None:
    clip_fields = {field.name for field in dataclasses.fields(ClipQuality)}
    second_fields = {field.name for field in dataclasses.fields(SecondQuality)}
    for signal in SIGNALS:
        assert signal.name in clip_fields and signal.series in second_fields, signal


def test_badness_puts_the_bad_end_first() -> None:
    assert get_signal("dynamic_degree").badness(0.0) > get_signal("dynamic_degree").badness(1.0)
    assert get_signal("flicker_spikes").badness(9) > get_signal("flicker_spikes").badness(1)
    drift = get_signal("saturation_drift")
    assert drift.badness(-0.3) > drift.badness(0.2) > drift.badness(0.0)


def test_an_unknown_signal_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown signal 'drift'; choose one of temporal_flickering, "):
        get_signal("drift")


def test_the_readme_defines_every_signal() -> None:
    text = README.read_text()
    missing = [signal.name for signal in SIGNALS if f"`{signal.name}`" not in text]
    assert not missing, f"README.md does not document {missing}"
