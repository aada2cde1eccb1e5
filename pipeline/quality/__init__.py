"""Render-time quality signals on downsampled frames, one module per family of signals.

settings.py     every constant (VBench's dynamic-degree rule, the paper's 5 s drift windows, sizes)
timeline.py     seconds, drift windows and per-second averages of a clip
frames.py       the reduced frames: area-downsampling, luma, thumbnails, JPEG
flicker.py      VBench's temporal flickering and flicker spikes (and the v2 motion columns), the
                jump at a storyboard's switch
motion.py       dynamic degree from Farneback flow at ~8 fps, motion level, its decay
appearance.py   saturation, brightness, colourfulness and sharpness drift
repetition.py   roll-back to the first frames, the most similar earlier second
thumbnails.py   first, middle and last frame
meter.py        ClipAnalysis (the families together, per clip and per segment) and QualityMeter (it,
                in its own thread)
results.py      ClipQuality, SecondQuality, SegmentQuality, SwitchQuality, ClipReport
signals.py      the per-clip signals' meanings, ranges and bad ends, for the report
"""

from pipeline.quality.meter import ClipAnalysis, QualityMeter
from pipeline.quality.results import ClipQuality, ClipReport, SecondQuality, SegmentQuality, SwitchQuality
from pipeline.quality.settings import QualitySettings
from pipeline.quality.signals import SIGNALS, Signal, get_signal

__all__ = [
    "SIGNALS",
    "ClipAnalysis",
    "ClipQuality",
    "ClipReport",
    "QualityMeter",
    "QualitySettings",
    "SecondQuality",
    "SegmentQuality",
    "Signal",
    "SwitchQuality",
    "get_signal",
]
