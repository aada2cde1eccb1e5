"""pipeline/quality/thumbnails.py: the first, middle and last frame, small JPEGs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.quality import QualitySettings
from pipeline.quality.thumbnails import ThumbnailTrack


def grey_frames(count: int, height: int = 120, width: int = 208) -> np.ndarray:
    """Frame i is uniformly grey at level 2 * i: its thumbnail says which frame it was."""
    return np.stack([np.full((height, width, 3), 2 * i, dtype=np.uint8) for i in range(count)])


def decoded(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


@pytest.mark.parametrize("sizes", [[9, 12, 12, 12], [45]])
def test_first_middle_and_last_frames_are_kept_whatever_the_chunks(sizes: list[int]) -> None:
    frames = grey_frames(45)
    track = ThumbnailTrack(QualitySettings(thumbnail_width=64), num_frames=45)
    start = 0
    for size in sizes:
        track.add(start, frames[start : start + size])
        start += size
    thumbs = track.finish()
    assert list(thumbs) == ["first", "middle", "last"]
    levels = {position: float(decoded(jpeg).mean()) for position, jpeg in thumbs.items()}
    assert levels == pytest.approx({"first": 0, "middle": 44, "last": 88}, abs=1.5)  # frames 0, 22, 44
    assert decoded(thumbs["first"]).shape == (37, 64, 3)  # 120 x 64 / 208, aspect kept


def test_a_clip_of_unknown_length_has_no_middle_and_small_frames_are_not_enlarged() -> None:
    track = ThumbnailTrack(QualitySettings(thumbnail_width=256), num_frames=None)
    track.add(0, grey_frames(3, 32, 48))
    thumbs = track.finish()
    assert list(thumbs) == ["first", "last"]
    assert decoded(thumbs["last"]).shape == (32, 48, 3)
