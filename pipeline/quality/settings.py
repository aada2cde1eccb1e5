"""Every constant of the quality signals, in one frozen settings object.

The VBench numbers (8 fps flow sampling, the top 5% of flow magnitudes, 6 pixels at a 256-pixel short
side, 4 moving pairs per 16 frames) are VBench's own dynamic-degree rule; the 5 s windows are the Deep
Forcing paper's drift windows (the first and the last five seconds of a clip).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FarnebackParams:
    """cv2.calcOpticalFlowFarneback's arguments: OpenCV's documented example values."""

    pyr_scale: float = 0.5  # each pyramid level halves the image
    levels: int = 3  # 3 levels follow motions of ~20 px per pair at the analysis size
    winsize: int = 15  # averaging window: larger is smoother and more robust to noise
    iterations: int = 3
    poly_n: int = 5  # pixel neighbourhood of the polynomial expansion
    poly_sigma: float = 1.2  # its Gaussian (1.1 for poly_n 5 in OpenCV's notes; 1.2 is its example)


@dataclass(frozen=True)
class QualitySettings:
    window_s: float = 5.0  # drift windows: the first and the last 5 s, at most half the clip each
    analysis_short_side: int = 120  # frames are area-downsampled by an integer factor to about this
    flicker_stride: int = 4  # flicker on every 4th pixel each way: an unbiased sample of the full-frame MAE
    flow_fps: float = 8.0  # VBench: frames sampled at about 8 fps for the dynamic degree
    flow_top_fraction: float = 0.05  # VBench: the mean of the top 5% flow magnitudes of a pair
    flow_threshold_px: float = 6.0  # VBench: a pair moves above 6 px at a 256-px short side ...
    flow_threshold_side: int = 256  # ... scaled by min(H, W) / 256
    flow_pairs_per_16_frames: float = (
        4.0  # VBench: a clip is dynamic with round(4 * frames / 16) moving pairs
    )
    farneback: FarnebackParams = FarnebackParams()
    still_fraction: float = 0.1  # motion under 10% of that threshold is none: decay 0 between two stills
    spike_ratio: float = 3.0  # a flicker spike: a step over 3x the median step of the surrounding second
    spike_floor: float = 4.0  # ... and over 4 levels: encoding noise on a still video stays far below
    sharpness_floor: float = 1.0  # Laplacian variance below which a frame is flat (relative drift's divisor)
    signature_width: int = 32  # roll-back: frames compared as 32-px-wide luma signatures
    flat_signature_std: float = 0.5  # a signature with less spread (grey levels) is a flat frame
    rollback_noise: float = 0.05  # a smaller return to the start is noise: no rollback_second for it
    thumbnail_width: int = 256  # thumbnails: first, middle and last frame, JPEG
    jpeg_quality: int = 85
    max_queued_chunks: int = 4  # chunks waiting for the analysis thread before update() blocks

    def __post_init__(self) -> None:
        positive = {
            "window_s": self.window_s,
            "flow_fps": self.flow_fps,
            "flow_threshold_px": self.flow_threshold_px,
            "spike_ratio": self.spike_ratio,
            "sharpness_floor": self.sharpness_floor,
            "still_fraction": self.still_fraction,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"QualitySettings.{name}={value} must be > 0")
        at_least_one = {
            "analysis_short_side": self.analysis_short_side,
            "flicker_stride": self.flicker_stride,
            "flow_threshold_side": self.flow_threshold_side,
            "signature_width": self.signature_width,
            "thumbnail_width": self.thumbnail_width,
            "max_queued_chunks": self.max_queued_chunks,
        }
        for name, count in at_least_one.items():
            if count < 1:
                raise ValueError(f"QualitySettings.{name}={count} must be at least 1")
        if not 0 < self.flow_top_fraction <= 1:
            raise ValueError(f"QualitySettings.flow_top_fraction={self.flow_top_fraction} must be in (0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"QualitySettings.jpeg_quality={self.jpeg_quality} must be in 1..100")
