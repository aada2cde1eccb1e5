"""The interface between the causal DiT's self-attention and a KV cache policy.

The generator drives a clip chunk by chunk. For each chunk it runs several DiT forwards over the same
3 latent frames: the first denoising step (t=1000), the later steps, and the clean context pass (t=0)
whose keys/values are the ones later chunks see. Before each forward it calls `begin_forward`, which
tells the policy which forward this is and returns the temporal RoPE position of the chunk's first
frame. Inside the forward every self-attention layer calls `keys_values` with its chunk q/k/v (RoPE
already applied) and attends to what comes back. Everything a policy keeps lives behind this
interface; the model never sees cache indices.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Any

import torch

from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry


class ForwardKind(enum.Enum):
    FIRST_STEP = "first_step"  # first denoising step of a new chunk: the chunk enters the cache
    STEP = "step"  # a later denoising step: the chunk's slot is overwritten
    CONTEXT = "context"  # clean pass at t=0: the chunk's final keys/values, seen by later chunks


class KVCache(ABC):
    """Self-attention memory for one clip. Subclasses are the policies in this package."""

    name: str

    def __init__(self, geometry: CacheGeometry, rope: RotaryEmbedding3D):
        self.geometry = geometry
        self.rope = rope
        self.chunk_index = -1
        self.kind = ForwardKind.CONTEXT

    def reset(self) -> None:
        """Forget everything: called at the start of every clip. Buffers may be kept for reuse."""
        self.chunk_index = -1
        self.kind = ForwardKind.CONTEXT

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

    def telemetry(self) -> dict[str, Any]:
        """Per-clip counters for the metrics table (policy specific, JSON-serialisable)."""
        return {}


class FrameBuffers:
    """Per-layer key/value buffers of a fixed number of frames, allocated on first use.

    Layout (B, heads, frames*tokens_per_frame, head_dim), so a prefix slice goes to SDPA without a copy.
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
        shape = (B, g.num_heads, self.capacity_frames * g.tokens_per_frame, g.head_dim)
        self.keys = [torch.empty(shape, device=like.device, dtype=like.dtype) for _ in range(g.num_layers)]
        self.values = [torch.empty(shape, device=like.device, dtype=like.dtype) for _ in range(g.num_layers)]

    def tokens(self, frames: int) -> int:
        return frames * self.geometry.tokens_per_frame

    def prefix(self, layer: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.tokens(frames)
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
