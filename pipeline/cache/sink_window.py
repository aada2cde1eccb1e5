"""The window shared by the sink policies: the first S frames for the whole clip, then a FIFO of the rest.

Slots (one per frame, `window_frames` in all, allocated once):

    [ sink: frames 0..S-1 | tail: a ring of window - S slots ]

Frame i < S sits in slot i; frame i >= S in slot S + (i - S) mod (window - S), so a new chunk overwrites
the oldest tail frames in place: nothing is ever moved, and the chunk's k/v go straight into their slots.
Attention takes no mask and so does not care about the order of the keys; the filled slots are
always a prefix of the buffer, which SDPA reads as a view. Subclasses choose only where the sink sits
in time (`sink_start`): the tail keys keep the positions they were made at.

A re-cache (`recache.Recache`) rewrites the sink frames (mode `all`) and the tail frames in their slots,
the sink at the position it was moved to.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.cache.base import CachedFrame, FrameBuffers, KVCache
from pipeline.cache.phase import PristineShift
from pipeline.cache.recache import Recache
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry


class SinkWindowCache(KVCache):
    """Sink of `sink_frames` + FIFO tail, `window_frames` in all (the current chunk included).

    Subclasses check their parameters (`pipeline.spec.cache`) before calling this.
    """

    def __init__(
        self, geometry: CacheGeometry, rope: RotaryEmbedding3D, sink_frames: int, window_frames: int
    ):
        super().__init__(geometry, rope)
        self.sink_frames = sink_frames
        self.window_frames = window_frames
        self.tail_slots = window_frames - sink_frames
        self.buffers = FrameBuffers(geometry, window_frames)
        self.sink_shift = PristineShift(rope, geometry.num_layers, sink_frames * geometry.tokens_per_frame)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.sink_start = 0  # temporal position of the sink's first frame (made at 0)
        self.rolls = 0  # chunks whose arrival evicted tail frames
        self.sink_shifts = 0  # chunks at which the sink moved in time
        self.filled_frames = 0  # slots in use, the current chunk included
        self.chunk_runs: list[tuple[int, int, int]] = []  # (token in chunk, buffer token, tokens)
        self.layer_chunk = [-1] * self.geometry.num_layers  # last chunk each layer has seen
        self.sink_shift.reset()

    def sink_target(self, first_frame: int) -> int:
        """Where the sink's first frame sits while the chunk starting at `first_frame` is generated."""
        return 0

    def _slot(self, frame: int) -> int:
        if frame < self.sink_frames:
            return frame
        return self.sink_frames + (frame - self.sink_frames) % self.tail_slots

    def _start_chunk(self) -> None:
        g = self.geometry
        first = self.chunk_index * g.chunk_frames
        end = first + g.chunk_frames
        if end > self.window_frames:
            self.rolls += 1
        self.filled_frames = min(end, self.window_frames)
        # Runs of consecutive slots for the chunk's frames: one, or two where the ring wraps
        runs: list[tuple[int, int, int]] = []
        for j in range(g.chunk_frames):
            slot = self._slot(first + j)
            if runs and runs[-1][1] + runs[-1][2] == slot:
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((j, slot, 1))
        tpf = g.tokens_per_frame
        self.chunk_runs = [(j * tpf, slot * tpf, n * tpf) for j, slot, n in runs]
        target = self.sink_target(first)
        if target != self.sink_start:
            if first < self.sink_frames:
                raise AssertionError(f"{self.name}: sink moved at frame {first}, before it was complete")
            self.sink_start = target
            self.sink_shifts += 1

    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.buffers.ensure(k)
        if self.layer_chunk[layer] != self.chunk_index:  # first forward of the chunk for this layer
            self.layer_chunk[layer] = self.chunk_index
            self.sink_shift.move_to(layer, self.buffers.keys[layer], self.sink_start)
        for src, dst, n in self.chunk_runs:
            self.buffers.write(layer, dst, k[:, :, src : src + n], v[:, :, src : src + n])
        return self.buffers.prefix(layer, self.filled_frames)

    def cached_frames(self) -> list[CachedFrame]:
        end = (self.chunk_index + 1) * self.geometry.chunk_frames  # frames made so far
        sink = [CachedFrame(f, f, self.sink_start + f, True) for f in range(min(self.sink_frames, end))]
        tail = range(max(self.sink_frames, end - self.tail_slots), end)
        return sink + [CachedFrame(f, self._slot(f), f, False) for f in tail]

    def filled_slots(self) -> int:
        return self.filled_frames

    def recache_session(self, mode: str) -> Recache:
        return Recache(self, self.buffers, self.sink_shift, mode)

    def telemetry(self, item: int | None = None) -> dict[str, Any]:
        """The schedule's counters: the same for every batch item."""
        first = max(self.chunk_index, 0) * self.geometry.chunk_frames
        return {
            "rolls": self.rolls,
            "evicted_frames": max(0, first + self.geometry.chunk_frames - self.window_frames),
            "sink_shifts": self.sink_shifts,
            "sink_start": self.sink_start,
        }
