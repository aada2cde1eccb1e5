"""The interface between the causal DiT's self-attention and a KV cache policy.

The generator drives a clip chunk by chunk. For each chunk it runs several DiT forwards over the same
3 latent frames: the first denoising step (t=1000), the later steps, and the clean context pass (t=0)
whose keys/values are the ones later chunks see. Before each forward it calls `begin_forward`, which
tells the policy which forward this is and returns the temporal RoPE position of the chunk's first
frame. Inside the forward every self-attention layer calls `keys_values` with its chunk q/k/v (RoPE
already applied) and attends to what comes back. Everything a policy keeps lives behind this
interface; the model never sees cache indices.

At a storyboard's prompt switch the generator asks the cache for a re-cache pass
(`recache_session`, pipeline/cache/recache.py): the frames it holds run again through the DiT with the
new prompt, their keys/values replacing the cached ones where they sit. For that the cache keeps the
clean latents of the chunks it still references (`keep_latents`), while a switch lies ahead.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry

if TYPE_CHECKING:  # recache.py builds on this module
    from pipeline.cache.recache import Recache


class ForwardKind(enum.Enum):
    FIRST_STEP = "first_step"  # first denoising step of a new chunk: the chunk enters the cache
    STEP = "step"  # a later denoising step: the chunk's slot is overwritten
    CONTEXT = "context"  # clean pass at t=0: the chunk's final keys/values, seen by later chunks


@dataclass(frozen=True)
class CachedFrame:
    """A whole frame whose keys/values the cache holds: its buffer slot and where its keys sit in time."""

    frame: int  # absolute latent frame
    slot: int  # frame-sized slot of the buffers
    position: int  # temporal RoPE position of its keys now (moved, for a sink)
    sink: bool  # part of the sink: re-cached only when the recache mode is `all`


class KVCache(ABC):
    """Self-attention memory for one clip. Subclasses are the policies in this package."""

    name: str

    def __init__(self, geometry: CacheGeometry, rope: RotaryEmbedding3D):
        self.geometry = geometry
        self.rope = rope
        self.chunk_index = -1
        self.kind = ForwardKind.CONTEXT
        self.latents: dict[int, torch.Tensor] = {}  # chunk -> its clean latents, for a re-cache

    def reset(self) -> None:
        """Forget everything: called at the start of every clip. Buffers may be kept for reuse."""
        self.chunk_index = -1
        self.kind = ForwardKind.CONTEXT
        self.latents = {}

    def begin_forward(self, chunk_index: int, kind: ForwardKind) -> int:
        """Announce the next DiT forward; returns the RoPE frame position of the chunk's first frame."""
        if kind is ForwardKind.FIRST_STEP:
            if chunk_index != self.chunk_index + 1:
                raise ValueError(f"chunk {chunk_index} started after chunk {self.chunk_index}; reset() first")
            self.chunk_index = chunk_index
            self._start_chunk()
        elif chunk_index != self.chunk_index:
            raise ValueError(
                f"{kind.value} forward for chunk {chunk_index} while chunk {self.chunk_index} is open"
            )
        self.kind = kind
        return self.query_position()

    def _start_chunk(self) -> None:
        """Hook: the previous chunk is final; decide what to keep before the new one arrives."""

    def query_position(self) -> int:
        """Temporal RoPE position of the current chunk's first frame (absolute frame index by default)."""
        return self.chunk_index * self.geometry.chunk_frames

    @abstractmethod
    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this chunk's k/v for `layer`; return the keys/values the chunk attends to.

        q, k, v: (B, heads, chunk_tokens, head_dim) with RoPE applied. The result includes the chunk
        itself (it attends to itself bidirectionally) and is valid until the next call for this layer.
        """

    def telemetry(self, item: int | None = None) -> dict[str, Any]:
        """Per-clip counters for the metrics table (policy specific, JSON-serialisable): those of batch
        item `item` (a clip of a group, `ClipGenerator.stream_group`), or of all items together (None)."""
        return {}

    # -- prompt switches (pipeline/cache/recache.py) -----------------------------------------------

    @abstractmethod
    def cached_frames(self) -> list[CachedFrame]:
        """The whole frames the cache holds once the current chunk's forwards are done."""

    @abstractmethod
    def filled_slots(self) -> int:
        """Frame-sized slots in use once the current chunk's forwards are done (the current chunk's too)."""

    @abstractmethod
    def recache_session(self, mode: str) -> Recache:
        """A re-cache pass over what the cache holds now (after the current chunk), for recache `mode`."""

    def referenced_chunks(self) -> set[int]:
        """Chunks with a frame the cache may still reference: a re-cache runs them again."""
        return {cached.frame // self.geometry.chunk_frames for cached in self.cached_frames()}

    def keep_latents(self, latents: torch.Tensor) -> None:
        """Keep the current chunk's clean latents (B, C, chunk_frames, H, W) for a later re-cache, and
        drop those of chunks the cache no longer references (their keys are gone)."""
        self.latents[self.chunk_index] = latents
        referenced = self.referenced_chunks()
        for chunk in [chunk for chunk in self.latents if chunk not in referenced]:
            del self.latents[chunk]

    def drop_latents(self) -> None:
        """No switch lies ahead: the latents are no longer needed."""
        self.latents = {}


class FrameBuffers:
    """Per-layer key/value buffers of a fixed number of frames, allocated on first use.

    Each buffer is a (B, heads, frames*tokens_per_frame, head_dim) view of memory laid out token by
    token, (B, tokens, heads, head_dim): the layout the DiT's projections make and FlashAttention reads.
    So a chunk's write is one run of memory per clip (a transposing copy took twice as long, measured in
    benchmarks/README.md), and a prefix slice goes to SDPA and FlashAttention without a copy.
    """

    def __init__(self, geometry: CacheGeometry, capacity_frames: int):
        self.geometry = geometry
        self.capacity_frames = capacity_frames
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def ensure(self, like: torch.Tensor) -> None:
        """Allocate (or re-allocate for a new batch size, device or dtype) from a (B, H, L, D) tensor."""
        B = like.shape[0]
        if self.keys and (self.keys[0].shape[0], self.keys[0].device, self.keys[0].dtype) == (
            B,
            like.device,
            like.dtype,
        ):
            return
        g = self.geometry
        shape = (B, self.capacity_frames * g.tokens_per_frame, g.num_heads, g.head_dim)

        def buffer() -> torch.Tensor:  # (B, H, L, D) view
            return torch.empty(shape, device=like.device, dtype=like.dtype).transpose(1, 2)

        self.keys = [buffer() for _ in range(g.num_layers)]
        self.values = [buffer() for _ in range(g.num_layers)]

    def tokens(self, frames: int) -> int:
        return frames * self.geometry.tokens_per_frame

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Copy a run of tokens' keys and values (B, H, n, D) into `layer`'s buffers from token `start`.

        Clip by clip: each clip's run is one stretch of memory in both, so each copy is a device memcpy;
        one copy of several clips is a strided copy at under half the rate (benchmarks/README.md)."""
        end = start + k.shape[2]
        for buffer, run in ((self.keys[layer], k), (self.values[layer], v)):
            for item in range(buffer.shape[0]):
                buffer[item, :, start:end].copy_(run[item])

    def prefix(self, layer: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.tokens(frames)
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
