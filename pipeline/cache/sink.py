"""`sink`: LongLive / StreamingLLM-style attention sink on Self Forcing (deep_forcing_facts.md §5.1, §5.3).

The first `sink_frames` frames stay for the whole clip, the rest is Self Forcing's FIFO, `window_frames`
in all. Nothing is ever re-rotated: the sink keeps the temporal positions it was made at (0, 1, 2), so
its distance to the query grows without bound (LongLive `global_sink`, no RoPE adjustment; the "naive"
StreamingLLM sink of vanilla Self Forcing with `sink_size`).
"""

from __future__ import annotations

from pipeline.cache.base import CacheGeometry
from pipeline.cache.sink_window import SinkWindowCache
from pipeline.model.rope import RotaryEmbedding3D


class SinkCache(SinkWindowCache):
    name = "sink"

    def __init__(
        self,
        geometry: CacheGeometry,
        rope: RotaryEmbedding3D,
        sink_frames: int = 3,  # LongLive keeps the first chunk
        window_frames: int = 21,  # Self Forcing's window (LongLive itself uses 12)
    ):
        super().__init__(geometry, rope, sink_frames, window_frames)
