"""3D rotary position embedding of the Wan DiT, and the temporal phase shift used by sink caches.

The head dimension d is split into complex pairs: the first d - 4*(d//6) channels rotate with the frame
index, the next 2*(d//6) with the token row, the last 2*(d//6) with the token column (44/42/42 for
d = 128). Channels (2i, 2i+1) form one complex number (interleaved, not rotate-half), as in Wan2.1's
`rope_apply`. Angles are computed in float64 like the upstream tables, but from the positions
themselves rather than a 1024-entry table, so there is no length limit: attention only sees relative
positions, and float64 keeps p * omega exact to ~1e-13 rad even for millions of frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


def rope_frequencies(dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """omega_j = theta^(-2j/dim) for j < dim/2, float64 (Wan2.1 `rope_params`)."""
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)


@dataclass(frozen=True)
class RotarySplit:
    """How one attention head's channels are shared between time, height and width."""

    head_dim: int

    def __post_init__(self) -> None:
        if self.head_dim % 2 or self.temporal % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even with an even temporal part")

    @property
    def spatial(self) -> int:  # channels for height, and again for width
        return 2 * (self.head_dim // 6)

    @property
    def temporal(self) -> int:  # channels that rotate with the frame index (44 of 128)
        return self.head_dim - 2 * self.spatial


class RotaryTables(NamedTuple):
    """cos and sin of every token's rotation angles, (L, 1, head_dim/2), broadcast over heads."""

    cos: torch.Tensor
    sin: torch.Tensor

    def to(self, dtype: torch.dtype) -> RotaryTables:
        return RotaryTables(self.cos.to(dtype), self.sin.to(dtype))


class RotaryEmbedding3D:
    """Builds the complex rotation factors for a block of latent frames on a token grid.

    Holds no tensors (nothing to load or to move between devices): the few frequencies are made on
    the device of the positions at each call.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        self.split = RotarySplit(head_dim)
        self.theta = theta

    def _omega(self, dim: int, device: torch.device) -> torch.Tensor:
        return rope_frequencies(dim, self.theta, device)

    def __call__(self, frame_positions: torch.Tensor, height: int, width: int) -> RotaryTables:
        """Rotation tables for every token of frames at `frame_positions` on a height x width grid.

        float64, shape (F*height*width, 1, head_dim/2): tokens in (f, h, w) row-major order.
        """
        device = frame_positions.device
        omega_t = self._omega(self.split.temporal, device)
        omega_s = self._omega(self.split.spatial, device)
        ang_t = torch.outer(frame_positions.to(torch.float64), omega_t)  # (F, t/2)
        ang_h = torch.outer(torch.arange(height, device=device, dtype=torch.float64), omega_s)  # (H, s/2)
        ang_w = torch.outer(torch.arange(width, device=device, dtype=torch.float64), omega_s)  # (W, s/2)
        F = ang_t.shape[0]
        angles = torch.cat(
            [
                ang_t[:, None, None, :].expand(F, height, width, -1),
                ang_h[None, :, None, :].expand(F, height, width, -1),
                ang_w[None, None, :, :].expand(F, height, width, -1),
            ],
            dim=-1,
        )  # (F, H, W, head_dim/2)
        angles = angles.reshape(-1, 1, angles.shape[-1])  # (L, 1, head_dim/2)
        return RotaryTables(torch.cos(angles), torch.sin(angles))

    def temporal_phase(self, delta_frames: float, device: torch.device) -> torch.Tensor:
        """exp(i * omega_t * delta): complex128 (t/2,), moves keys by `delta_frames` in time."""
        angles = self._omega(self.split.temporal, device) * float(delta_frames)
        return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: torch.Tensor, tables: RotaryTables) -> torch.Tensor:
    """Rotate q or k of shape (B, L, heads, head_dim) by `tables`.

    Tables are made in float64 like upstream's; the rotation itself runs in at least float32 (upstream
    uses float64): for bf16 activations the result differs from upstream's by at most a rounding of
    the bf16 output, and real arithmetic fuses under torch.compile where complex numbers do not.
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    pairs = x.unflatten(-1, (-1, 2)).to(compute)  # (B, L, nh, hd/2, 2)
    real, imag = pairs.unbind(-1)  # (B, L, nh, hd/2) each
    cos, sin = tables.cos.to(compute), tables.sin.to(compute)
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)  # (B, L, nh, hd/2, 2)
    return rotated.flatten(-2).to(x.dtype)


def rotate_pairs(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """x (..., 2n) as n complex pairs (2i, 2i+1), times `phase` (broadcast to (..., n)); dtype of x.

    Runs in complex128 for float64 input and complex64 otherwise (its ~1e-7 error is far below a bf16
    rounding).
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    pairs = torch.view_as_complex(x.to(compute).unflatten(-1, (-1, 2)))  # (..., n)
    return torch.view_as_real(pairs * phase.to(pairs.dtype)).flatten(-2).to(x.dtype)  # (..., 2n)


def shift_temporal_phase(keys: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Move cached keys (..., head_dim) in time by multiplying their temporal pairs by `phase`.

    Keys are stored after RoPE, so multiplying the first len(phase) complex pairs by exp(i*omega*delta)
    is the same, up to one rounding, as re-applying RoPE at position p + delta (Deep Forcing Eq. 6).
    Height and width channels are untouched. Returns a new tensor in the keys' dtype.
    """
    n_t = 2 * phase.numel()
    return torch.cat([rotate_pairs(keys[..., :n_t], phase), keys[..., n_t:]], dim=-1)
