"""`deep-sink`: Deep Forcing's Deep Sink alone, the release's DS-only mode (docs/cache_policies.md §5).

A deep sink (10 to 14 frames; `DS_inference.sh` uses 14) plus Self Forcing's FIFO tail in a 21-frame
window. Each chunk whose arrival evicts tail frames (chunk 7 on) moves the sink's temporal phase so
that it starts at P = f - window, f the chunk's first frame (`causal_model_DS.py`: target
f - tail_frames - S). The release applies this as Δ = P - P_prev with P_prev := P at the first roll,
so the first roll moves nothing and each later one moves the sink by one chunk (+3): the sink sits at
[f - 21, f - 21 + S), one chunk before the tail's first key (a 3-frame gap, the largest query-key
distance is 23 frames). Tail keys keep the positions they were made at, [f - (18 - S), f + 3).
The shift happens once per chunk, before its first denoising step; later steps and the clean pass
reuse it. Unlike the release, every shift is one rotation of a pristine copy (no bf16 drift) and the
state is per clip (the release carries the sink base into the next prompt).
"""

from __future__ import annotations

from pipeline.cache.sink_window import SinkWindowCache
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry, DeepSinkParams


class DeepSinkCache(SinkWindowCache):
    name = DeepSinkParams.policy

    def __init__(
        self, geometry: CacheGeometry, rope: RotaryEmbedding3D, params: DeepSinkParams = DeepSinkParams()
    ):
        params.check(geometry.chunk_frames)
        super().__init__(geometry, rope, params.sink_frames, params.window_frames)
        chunk = geometry.chunk_frames
        # First chunk whose arrival overflows the window (frame 21 for a 21-frame window)
        self.first_roll_frame = ((params.window_frames - chunk) // chunk + 1) * chunk

    def sink_target(self, first_frame: int) -> int:
        # Release: P = f - window, applied relative to P at the first roll. With a window that is a
        # multiple of the chunk the first roll is at f = window, so this is exactly P = f - window.
        return max(0, first_frame - self.first_roll_frame)
