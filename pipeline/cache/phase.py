"""Moving cached keys in time without drift: every rotation starts from a pristine copy.

Cached keys carry RoPE at the position they were made at. A sink policy moves them in time by
multiplying their temporal channels by exp(i·ω·Δ) (Deep Forcing Eq. 6; `rope.shift_temporal_phase`).
Done in place, again and again, on bf16 keys, every rotation adds a rounding: 37 shifts per minute of
video, 370 per ten minutes (200 in-place shifts drift by ~100 bf16 ulps). Here each layer keeps the
temporal channels of the keys as they were written (the only channels a shift changes) plus the total
offset, and every new position is one rotation of that copy, rounded once to the keys' dtype.

Angles are computed in float64 like the RoPE tables; the multiplication runs in complex64 for bf16 or
float32 keys (its error, ~1e-7, is far below a bf16 rounding) and complex128 for float64 keys.
"""

from __future__ import annotations

import torch

from pipeline.model.rope import RotaryEmbedding3D, rope_frequencies, rotate_pairs


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class PristineShift:
    """Moves the first `tokens` keys of each layer's buffer to a temporal offset from where they were made.

    The offset is a plain int per layer; the pristine copy (B, heads, tokens, temporal channels) is taken
    the first time a layer's keys leave their base offset, when the buffer still holds them as written.
    The base is 0 (the keys are written where they were made) unless a storyboard's re-cache wrote them
    again where they sat (`rebase`).
    """

    def __init__(self, rope: RotaryEmbedding3D, num_layers: int, tokens: int):
        self.rope = rope
        self.tokens = tokens
        self.temporal_channels = rope.split.temporal  # 44 of 128
        self.pristine: list[torch.Tensor | None] = [None] * num_layers  # kept across clips for reuse
        self.offset = [0] * num_layers
        self.base = [0] * num_layers  # offset at which the buffer's keys were written
        self._phase: tuple[int, torch.device, torch.dtype, torch.Tensor] | None = None  # one per chunk

    def reset(self) -> None:
        """A new clip: its keys are written unmoved, so every layer is back at offset 0."""
        self.offset = [0] * len(self.offset)
        self.base = [0] * len(self.base)

    def rebase(self, layer: int) -> None:
        """The keys of `layer` were just written again at its current offset: they are the pristine copy
        from now on, and later moves rotate them by the difference."""
        self.base[layer] = self.offset[layer]

    def move_to(self, layer: int, keys: torch.Tensor, offset: int) -> bool:
        """Put the keys of `layer` (B, H, L, D) `offset` frames from where they were made; True if moved."""
        if offset == self.offset[layer]:
            return False
        block = keys[:, :, : self.tokens, : self.temporal_channels]  # (B, H, tokens, n_t), a view
        pristine = self.pristine[layer]
        if self.offset[layer] == self.base[layer]:  # the buffer holds the keys as written: the pristine copy
            if pristine is None or (pristine.shape, pristine.dtype, pristine.device) != (
                block.shape,
                block.dtype,
                block.device,
            ):
                pristine = self.pristine[layer] = torch.empty_like(
                    block, memory_format=torch.contiguous_format
                )
            pristine.copy_(block)
        assert pristine is not None
        delta = offset - self.base[layer]
        block.copy_(rotate_pairs(pristine, self._phase_for(delta, keys)) if delta else pristine)
        self.offset[layer] = offset
        return True

    def _phase_for(self, offset: int, keys: torch.Tensor) -> torch.Tensor:
        """exp(i·ω·offset), made once per offset and device (every layer of a chunk shares it)."""
        dtype = complex_dtype(keys.dtype)
        if self._phase is None or self._phase[:3] != (offset, keys.device, dtype):
            self._phase = (
                offset,
                keys.device,
                dtype,
                self.rope.temporal_phase(offset, keys.device).to(dtype),
            )
        return self._phase[3]


def shift_tokens_in_time(pristine: torch.Tensor, delta: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Rotate each token's temporal channels by its own offset, rounded once to the keys' dtype.

    pristine: (B, H, L, n_t) temporal channels of keys as written; delta: (B, L) frames per token;
    omega: (n_t/2,) float64 temporal frequencies. Returns (B, H, L, n_t) in the keys' dtype.
    """
    angles = delta.to(torch.float64)[:, None, :, None] * omega  # (B, 1, L, n_t/2)
    phase = torch.polar(torch.ones_like(angles), angles).to(complex_dtype(pristine.dtype))
    return rotate_pairs(pristine, phase)


def temporal_frequencies(rope: RotaryEmbedding3D, device: torch.device) -> torch.Tensor:
    """ω_j of the temporal channels, float64 (the same numbers `rope.temporal_phase` uses)."""
    return rope_frequencies(rope.split.temporal, rope.theta, device)
