"""Synthetic videos whose quality properties are known by construction, and the way through the
project's own encoder that a rendered clip takes (encode to H.264, decode back)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from video_probe import decode_rgb

from pipeline.encode import EncoderSettings, VideoEncoder
from pipeline.quality import ClipAnalysis, ClipReport

FPS = 16
H, W = 96, 160  # small frames: each encode takes well under a second on 2 cores
FAST = EncoderSettings(preset="ultrafast")  # crf 18 as rendered clips; only the speed differs


def texture(height: int, width: int, seed: int = 0, cell: int = 12) -> np.ndarray:
    """(height, width, 3) uint8: smooth random colour blobs about `cell` pixels across."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 226, size=(height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
    big = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[cell : cell + height, cell : cell + width])


def still(seconds: float, height: int = H, width: int = W) -> np.ndarray:
    """(T, H, W, 3): one textured picture, held."""
    frame = texture(height, width)
    return np.repeat(frame[None], round(seconds * FPS), axis=0)


def pan(seconds: float, px_per_frame: int, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3): a camera sliding right across a wide texture at `px_per_frame`; never repeats."""
    count = round(seconds * FPS)
    wide = texture(height, width + px_per_frame * count, seed)
    return np.stack([wide[:, i * px_per_frame : i * px_per_frame + width] for i in range(count)])


def flashing(seconds: float, every_s: float, gain: int) -> np.ndarray:
    """A still picture with one frame `gain` grey levels brighter every `every_s` seconds (not frame 0)."""
    frames = still(seconds).astype(np.int16)
    period = round(every_s * FPS)
    frames[period::period] += gain
    return frames.clip(0, 255).astype(np.uint8)


def saturation_ramp(seconds: float, start: float, end: float) -> np.ndarray:
    """Fixed hues and brightness; HSV saturation rising linearly from `start` to `end` (0-1) over the clip."""
    count = round(seconds * FPS)
    hue = np.broadcast_to(np.linspace(0, 179, W, dtype=np.float32)[None], (H, W))  # OpenCV hue: 0-179
    frames = []
    for level in np.linspace(start, end, count):
        hsv = np.stack([hue, np.full((H, W), 255 * level), np.full((H, W), 200.0)], axis=-1)
        frames.append(cv2.cvtColor(hsv.round().astype(np.uint8), cv2.COLOR_HSV2RGB))
    return np.stack(frames)


def blurring(seconds: float, max_sigma: float) -> np.ndarray:
    """A still picture with fine detail, Gaussian-blurred more and more: sigma 0 -> `max_sigma`."""
    count = round(seconds * FPS)
    sharp = texture(H, W, cell=3)
    frames = [sharp]
    for sigma in np.linspace(0, max_sigma, count)[1:]:
        frames.append(cv2.GaussianBlur(sharp, (0, 0), sigma))
    return np.stack(frames)


def rolled_back(away_s: float, back_s: float) -> np.ndarray:
    """Pan away from the opening picture for `away_s`, then play the opening again for `back_s`."""
    away = pan(away_s, px_per_frame=3)
    return np.concatenate([away, away[: round(back_s * FPS)]])


def through_encoder(frames: np.ndarray, folder: Path, ffmpeg: str) -> np.ndarray:
    """The frames as a rendered clip's viewer sees them: H.264 mp4 by VideoEncoder, decoded back."""
    path = folder / "clip.mp4"
    with VideoEncoder(path, frames.shape[2], frames.shape[1], FPS, FAST, binary=ffmpeg) as encoder:
        for chunk in generator_chunks(frames):
            encoder.write(chunk)
        encoder.close()
    return decode_rgb(ffmpeg, path, frames.shape[2], frames.shape[1], max_frames=len(frames))


def generator_chunks(frames: np.ndarray) -> Iterator[np.ndarray]:
    """The chunks the generator yields: 9 frames, then 12 at a time."""
    start = 0
    for size in [9, *[12] * len(frames)]:
        if start >= len(frames):
            return
        yield frames[start : start + size]
        start += size


def analyse(frames: np.ndarray, fps: float = FPS, switch_frames: Sequence[int] = ()) -> ClipReport:
    """The clip's report, fed in the generator's chunks; `switch_frames` splits it into segments."""
    analysis = ClipAnalysis(fps, len(frames), switch_frames=switch_frames)
    for chunk in generator_chunks(frames):
        analysis.add(chunk)
    report = analysis.finish()
    assert report is not None
    return report


def series(report: ClipReport, name: str) -> list[float]:
    """One per-second column of the report, every second measured."""
    values = [getattr(second, name) for second in report.seconds]
    assert None not in values, f"{name} is missing for some seconds: {values}"
    return values


def value(report: ClipReport, name: str) -> float:
    """One clip signal, which must have been measured."""
    measured = getattr(report.clip, name)
    assert measured is not None, f"{name} was not measured"
    return float(measured)
