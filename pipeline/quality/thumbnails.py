"""The first, middle and last frame of a clip, kept small as the frames pass, JPEG at the end."""

from __future__ import annotations

import numpy as np

from pipeline.quality.frames import jpeg, thumbnail
from pipeline.quality.settings import QualitySettings

POSITIONS = ("first", "middle", "last")


class ThumbnailTrack:
    def __init__(self, settings: QualitySettings, num_frames: int | None):
        self.settings = settings
        self.middle = None if num_frames is None else num_frames // 2  # unknown length: no middle
        self.kept: dict[str, np.ndarray] = {}

    def add(self, start_index: int, frames: np.ndarray) -> None:
        """frames: the chunk whose first frame is frame `start_index` of the clip."""
        width = self.settings.thumbnail_width
        if start_index == 0:
            self.kept["first"] = thumbnail(frames[0], width)
        if self.middle is not None and start_index <= self.middle < start_index + len(frames):
            self.kept["middle"] = thumbnail(frames[self.middle - start_index], width)
        self.kept["last"] = thumbnail(frames[-1], width)

    def finish(self) -> dict[str, bytes]:
        """Position -> JPEG bytes, in POSITIONS order, for the positions the clip reached."""
        quality = self.settings.jpeg_quality
        return {
            position: jpeg(self.kept[position], quality) for position in POSITIONS if position in self.kept
        }
