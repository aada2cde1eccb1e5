"""`sink`: LongLive / StreamingLLM-style attention sink on Self Forcing (docs/cache_policies.md §3).

The first `sink_frames` frames stay for the whole clip, the rest is Self Forcing's FIFO, `window_frames`
in all. Nothing is ever re-rotated: the sink keeps the temporal positions it was made at (0, 1, 2), so
its distance to the query grows without bound (LongLive `global_sink`, no RoPE adjustment; the "naive"
StreamingLLM sink of vanilla Self Forcing with `sink_size`).
"""

from __future__ import annotations

from pipeline.cache.sink_window import SinkWindowCache
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry, SinkParams


class SinkCache(SinkWindowCache):
    name = SinkParams.policy

    def __init__(self, geometry: CacheGeometry, rope: RotaryEmbedding3D, params: SinkParams = SinkParams()):
        params.check(geometry.chunk_frames)
        super().__init__(geometry, rope, params.sink_frames, params.window_frames)
