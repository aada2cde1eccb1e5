"""`rolling-sink`: Rolling Forcing's anchor on Self Forcing (docs/cache_policies.md §4).

Rolling Forcing keeps the first chunk's keys un-rotated and re-applies RoPE to them at each call so
that they sit immediately before the oldest key of the working window. Our keys arrive already
rotated at the positions they were made at (0..S-1), and a temporal phase shift from that pristine copy
is the same as re-applying RoPE (spatial channels never change): the sink is placed at [p0 - S, p0),
p0 being the oldest tail frame in the window, so [sink ‖ tail ‖ chunk] is one contiguous run of
`window_frames` positions. Before the window first fills, p0 = S and the sink stays at [0, S).
The tail is the full Self Forcing FIFO (window - S frames), not RF's 3-frame working cache.
"""

from __future__ import annotations

from pipeline.cache.sink_window import SinkWindowCache
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry, RollingSinkParams


class RollingSinkCache(SinkWindowCache):
    name = RollingSinkParams.policy

    def __init__(
        self,
        geometry: CacheGeometry,
        rope: RotaryEmbedding3D,
        params: RollingSinkParams = RollingSinkParams(),
    ):
        params.check(geometry.chunk_frames)
        sink_frames = params.sink_frames_for(geometry.chunk_frames)
        super().__init__(geometry, rope, sink_frames, params.window_frames)

    def sink_target(self, first_frame: int) -> int:
        # The tail holds frames [end - tail_slots, end) once full: the sink goes just before them.
        end = first_frame + self.geometry.chunk_frames
        return max(0, end - self.window_frames)
