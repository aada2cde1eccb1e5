"""`fifo`: Self Forcing's rolling window of the last 21 latent frames (the current chunk included)."""

from __future__ import annotations

from typing import Any

import torch

from pipeline.cache.base import CacheGeometry, FrameBuffers, KVCache
from pipeline.model.rope import RotaryEmbedding3D


class FifoCache(KVCache):
    """Keeps the most recent context frames; keys keep the absolute positions they were made at.

    Equivalent to Self Forcing with `local_attn_size=21, sink_size=0`: the chunk attends to
    itself plus the last `window_frames - chunk_frames` clean frames.
    """

    name = "fifo"

    def __init__(self, geometry: CacheGeometry, rope: RotaryEmbedding3D, window_frames: int = 21):
        super().__init__(geometry, rope)
        if window_frames < geometry.chunk_frames:
            raise ValueError(
                f"window_frames={window_frames} must hold at least one chunk "
                f"of {geometry.chunk_frames} frames"
            )
        self.window_frames = window_frames
        self.buffers = FrameBuffers(geometry, window_frames)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.context_frames = 0  # clean frames kept from earlier chunks
        self.evicted_frames = 0

    def _start_chunk(self) -> None:
        if self.chunk_index > 0:  # the previous chunk's context pass is final: it joins the context
            self.context_frames += self.geometry.chunk_frames
        overflow = self.context_frames + self.geometry.chunk_frames - self.window_frames
        if overflow > 0:
            keep = self.context_frames - overflow
            for layer in range(self.geometry.num_layers):
                self.buffers.move_frames(layer, src_frame=overflow, dst_frame=0, frames=keep)
            self.context_frames = keep
            self.evicted_frames += overflow

    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.buffers.ensure(k)
        self.buffers.write(layer, self.context_frames, k, v)
        return self.buffers.prefix(layer, self.context_frames + self.geometry.chunk_frames)

    def telemetry(self) -> dict[str, Any]:
        return {"evicted_frames": self.evicted_frames}
