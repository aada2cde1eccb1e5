"""`fifo`: Self Forcing's rolling window of the last 21 latent frames (the current chunk included)."""

from __future__ import annotations

from typing import Any

from pipeline.cache.sink_window import SinkWindowCache
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry, FifoParams


class FifoCache(SinkWindowCache):
    """The most recent frames only; keys keep the absolute positions they were made at.

    Equivalent to Self Forcing with `local_attn_size=21, sink_size=0`: the chunk attends to itself
    plus the last `window_frames - chunk_frames` clean frames. A sink window without a sink: frames
    live in a ring of slots, so eviction moves nothing.
    """

    name = FifoParams.policy

    def __init__(self, geometry: CacheGeometry, rope: RotaryEmbedding3D, params: FifoParams = FifoParams()):
        params.check(geometry.chunk_frames)
        super().__init__(geometry, rope, sink_frames=0, window_frames=params.window_frames)

    def telemetry(self, item: int | None = None) -> dict[str, Any]:
        stats = super().telemetry(item)
        return {"rolls": stats["rolls"], "evicted_frames": stats["evicted_frames"]}
