"""The reduced frames the signals look at: an integer area-downsampling, luma, thumbnails."""

from __future__ import annotations

import cv2
import numpy as np

LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # BT.709, as the encoder tags


def check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", type(frames).__name__)
        raise ValueError(f"frames must be a (T, H, W, 3) RGB array, got shape {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) RGB, got dtype {frames.dtype}")


def analysis_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) after dividing by the integer factor that brings the short side nearest `short_side`
    from above: 832x480 -> 208x120; frames already that small are kept as they are."""
    factor = max(1, min(height, width) // short_side)
    return height // factor, width // factor


def resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average down to (height, width); the frame itself if it already has that size."""
    if frame.shape[:2] == (height, width):
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def gray(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma (OpenCV's BT.601 weights; for flow, edges, signatures)."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def thumbnail(frame: np.ndarray, width: int) -> np.ndarray:
    """A (H, W, 3) frame area-averaged down to `width` pixels wide, aspect kept (never enlarged)."""
    if width >= frame.shape[1]:
        return frame.copy()  # a copy: the caller's chunk can be released
    return resize(frame, max(1, round(frame.shape[0] * width / frame.shape[1])), width)


def jpeg(frame: np.ndarray, quality: int) -> bytes:
    """A (H, W, 3) uint8 RGB frame as JPEG bytes."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {frame.shape[1]}x{frame.shape[0]} frame as JPEG")
    return encoded.tobytes()
