"""A storyboard's KV re-cache: at a prompt switch the cached frames run again through the DiT with the new
prompt, and their keys/values replace the cached ones at the same positions (docs/cache_policies.md §10).

The pass runs chunk by chunk, in the order the chunks were generated, at the clean-context timestep:
each chunk a frame of the cache belongs to is one group, all its frames together (as it was made, so
the shapes are a generation chunk's and compiled graphs are reused). A group attends to its own frames
and to the cache's keys of earlier chunks, as the cache holds them, with the keys re-cached by earlier
groups already in place: one block-causal pass over the cache, so a frame sees what the cache keeps and
no more (the window the model was trained on). Each frame runs at the temporal position its keys sit
at in the cache (a moved sink where it was moved to), so every re-cached key lands where the one it
replaces was and the pass sees the geometry the next chunk will see. The cache's own bookkeeping
(what is kept, positions, the chunk counter) does not change.

Which frames are re-cached: none for `none`; for `window` every frame but the sink's; for `all` all of
them. A policy that keeps single tokens (deep-forcing's top-C) extends this class for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.cache.base import CachedFrame, FrameBuffers, KVCache
from pipeline.cache.phase import PristineShift


@dataclass(frozen=True)
class RecacheGroup:
    """One chunk of the re-cache pass: its frames run together at these temporal positions."""

    chunk: int
    positions: tuple[int, ...]  # one per frame of the chunk


class Recache:
    """The KV source of a re-cache pass (`pipeline.model.dit.MaskedKeyValueSource`): before each group's
    forward call `begin(group)`, after the last one `finish()`."""

    def __init__(self, cache: KVCache, buffers: FrameBuffers, sink_shift: PristineShift, mode: str):
        g = cache.geometry
        self.cache = cache
        self.buffers = buffers  # the cache's
        self.sink_shift = sink_shift  # the cache's: moves its sink in time
        self.mode = mode
        self.frames = cache.cached_frames()
        self.rewritten = [f for f in self.frames if mode == "all" or (mode == "window" and not f.sink)]
        chunks = {f.frame // g.chunk_frames for f in self.rewritten} | self._token_chunks()
        where = {f.frame: f.position for f in self.frames}
        self.groups = [
            RecacheGroup(
                c, tuple(where.get(f, f) for f in range(c * g.chunk_frames, (c + 1) * g.chunk_frames))
            )
            for c in sorted(chunks)
        ]
        self.writes: dict[int, list[CachedFrame]] = {}  # chunk -> its re-cached frames
        for cached in self.rewritten:
            self.writes.setdefault(cached.frame // g.chunk_frames, []).append(cached)
        self.slots = cache.filled_slots()
        self.slot_chunk = [-1] * self.slots  # chunk of each slot's frame; -1: single tokens (a subclass's)
        for cached in self.frames:
            self.slot_chunk[cached.slot] = cached.frame // g.chunk_frames
        self.group: RecacheGroup | None = None
        self._slot_chunk_tokens: torch.Tensor | None = None  # (slots * tokens_per_frame,) on the device
        self._visible: torch.Tensor | None = None  # (1, slot tokens): this group may attend to them
        self._mask: torch.Tensor | None = None

    # -- the generator's side ----------------------------------------------------------------------

    def latents(self, group: RecacheGroup) -> torch.Tensor:
        """The group's clean latents (B, C, chunk_frames, H, W), kept by the cache since it was made."""
        latents = self.cache.latents.get(group.chunk)
        if latents is None:
            raise RuntimeError(
                f"{self.cache.name}: no clean latents of chunk {group.chunk} for the re-cache; "
                "the generator keeps them only while a prompt switch lies ahead"
            )
        return latents

    def begin(self, group: RecacheGroup) -> None:
        self.group = group
        self._visible = None

    def finish(self) -> None:
        """The sink was written again where it sits: that copy is the one later moves start from."""
        if any(cached.sink for cached in self.rewritten):
            for layer in range(self.cache.geometry.num_layers):
                self.sink_shift.rebase(layer)

    def summary(self) -> dict[str, Any]:
        """What the pass re-computed, for the switch's telemetry."""
        return {
            "recached_frames": len(self.rewritten),
            "run_frames": len(self.groups) * self.cache.geometry.chunk_frames,
        }

    # -- the DiT's side ----------------------------------------------------------------------------

    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the group's re-cached frames into their slots; return the cache's keys and the group's."""
        assert self.group is not None, "begin(group) before the group's forward"
        g = self.cache.geometry
        tpf = g.tokens_per_frame
        keys, values = self.buffers.keys[layer], self.buffers.values[layer]  # (B, H, slots*tpf, D)
        first = self.group.chunk * g.chunk_frames
        for cached in self.writes.get(self.group.chunk, ()):
            src, dst = (cached.frame - first) * tpf, cached.slot * tpf
            self.buffers.write(layer, dst, k[:, :, src : src + tpf], v[:, :, src : src + tpf])
        self._write_tokens(layer, q, k, v)
        used = self.slots * tpf
        visible = self._visible_tokens(layer, self._group_visible(k.device))  # (1 or B, used)
        own = torch.ones(visible.shape[0], k.shape[2], dtype=torch.bool, device=k.device)
        self._mask = torch.cat([visible, own], dim=1)[:, None, None, :]  # (1 or B, 1, 1, used + chunk)
        return torch.cat([keys[:, :, :used], k], dim=2), torch.cat([values[:, :, :used], v], dim=2)

    def key_mask(self, layer: int) -> torch.Tensor:
        assert self._mask is not None
        return self._mask

    def _group_visible(self, device: torch.device) -> torch.Tensor:
        """(1, slot tokens): slots holding a whole frame of an earlier chunk than the group's."""
        if self._visible is None:
            if self._slot_chunk_tokens is None or self._slot_chunk_tokens.device != device:
                chunks = torch.tensor(self.slot_chunk, device=device)
                self._slot_chunk_tokens = chunks.repeat_interleave(self.cache.geometry.tokens_per_frame)
            assert self.group is not None
            chunk = self._slot_chunk_tokens
            self._visible = ((chunk >= 0) & (chunk < self.group.chunk))[None, :]
        return self._visible

    # -- hooks for policies that keep single tokens ----------------------------------------------------

    def _token_chunks(self) -> set[int]:
        """Chunks to run for the single tokens the cache keeps (besides whole frames)."""
        return set()

    def _write_tokens(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Re-cache the single tokens of the group's frames."""

    def _visible_tokens(self, layer: int, visible: torch.Tensor) -> torch.Tensor:
        """`visible` with the single-token slots of `layer` decided too: (1 or B, slot tokens)."""
        return visible
