"""The per-clip quality signals, for the people and programs that read them: what each one means, its
range, which end is bad, and which per-second column shows it over time. The report and its `rank`
command take their choices from here; README.md documents the same list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Worst = Literal["high", "low", "abs"]  # the bad end: large values, small values, large either way


@dataclass(frozen=True)
class Signal:
    name: str  # the metrics column
    title: str  # what the worst clips are, as a heading
    range: str
    worst: Worst
    series: str  # the per-second column that shows it over time
    meaning: str

    def badness(self, value: float) -> float:
        """Larger is worse, whatever the signal's direction."""
        return {"high": value, "low": -value, "abs": abs(value)}[self.worst]


SIGNALS: tuple[Signal, ...] = (
    Signal(
        "temporal_flickering",
        "Most flickering (VBench temporal flickering)",
        "0-1, 1 = frames never change",
        "low",
        "flicker_mae",
        "VBench's score: (255 - mean absolute difference of consecutive frames) / 255",
    ),
    Signal(
        "flicker_spikes",
        "Most flicker spikes",
        "0..frames-1 steps",
        "high",
        "flicker_mae",
        "frame steps over 3x the median step of the surrounding second and over 4 grey levels",
    ),
    Signal(
        "dynamic_degree",
        "Least dynamic (VBench dynamic degree)",
        "0 or 1; its mean over clips is VBench's score",
        "low",
        "motion_level",
        "1 if at least round(4 x sampled frames / 16) pairs at 8 fps move (top-5% flow over "
        "6 px x min(H, W) / 256)",
    ),
    Signal(
        "moving_fraction",
        "Least moving",
        "0-1",
        "low",
        "motion_level",
        "share of 8 fps frame pairs that move by VBench's threshold",
    ),
    Signal(
        "motion_level",
        "Least motion",
        ">= 0 full-frame px per second",
        "low",
        "motion_level",
        "mean of the top-5% optical-flow magnitude per 8 fps pair",
    ),
    Signal(
        "motion_decay",
        "Motion dying out most",
        "-1..1; 1 = stopped, 0 = steady, < 0 = speeding up",
        "high",
        "motion_level",
        "(early - late) / max(early, late) of the motion level in the first and last 5 s",
    ),
    Signal(
        "saturation_drift",
        "Most saturation drift",
        "-1..1 (HSV saturation, 0-1 scale)",
        "abs",
        "saturation",
        "mean saturation of the last 5 s minus the first 5 s",
    ),
    Signal(
        "brightness_drift",
        "Most brightness drift",
        "-255..255 (BT.709 luma)",
        "abs",
        "brightness",
        "mean luma of the last 5 s minus the first 5 s",
    ),
    Signal(
        "colourfulness_drift",
        "Most colourfulness drift",
        "about -150..150 (Hasler-Suesstrunk M)",
        "abs",
        "colourfulness",
        "colourfulness of the last 5 s minus the first 5 s",
    ),
    Signal(
        "sharpness_drift",
        "Most blurring",
        ">= -1; -0.5 = half the Laplacian variance",
        "low",
        "sharpness",
        "relative change of the Laplacian variance, last 5 s against the first 5 s",
    ),
    Signal(
        "start_similarity",
        "Late frames most like the first",
        "-1..1, 1 = the same picture",
        "high",
        "start_similarity",
        "correlation of the last 5 s frames with their best match in the first 5 s",
    ),
    Signal(
        "rollback",
        "Most roll-back",
        "0..2, ~0 = never came back",
        "high",
        "start_similarity",
        "largest rise of a second's start similarity above its lowest value since the first 5 s",
    ),
)

BY_NAME = {signal.name: signal for signal in SIGNALS}


def get_signal(name: str) -> Signal:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}; choose one of {', '.join(BY_NAME)}") from None
