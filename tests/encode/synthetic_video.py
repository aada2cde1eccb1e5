"""Synthetic frames and small process helpers shared by the encoding tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FPS = 16.0
H, W = 48, 64  # small frames keep each encode well under a second on 2 cores


def moving_gradient(num_frames: int, height: int = H, width: int = W) -> np.ndarray:
    """(T, H, W, 3) uint8: fixed red/green ramps, a blue diagonal ramp that drifts 4 levels per frame."""
    y = np.arange(height)[:, None]  # (H, 1)
    x = np.arange(width)[None, :]  # (1, W)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[..., 0] = x * 255 // max(width - 1, 1)
    frames[..., 1] = y * 255 // max(height - 1, 1)
    drift = (4 * np.arange(num_frames) % 256).astype(np.uint8)[:, None, None]  # (T, 1, 1)
    frames[..., 2] = ((x + y) % 256).astype(np.uint8)[None] + drift  # uint8 addition wraps around
    return frames


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def executable_script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path
