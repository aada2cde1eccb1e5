"""q's and k's RMSNorm and RoPE in one Triton kernel (GPUs only; imported by speed.py when enabled).

After a block's q and k projections, each token's 1536 channels are normalised together (RMSNorm over
all heads, float32) and every (2i, 2i+1) channel pair of a head is rotated by the token's angle i
(dit.SelfAttention.qkv, rope.apply_rotary). Compiled, inductor fuses both into one looped reduction
that ran at ~0.9 TB/s on an H200, where its plain RMSNorms run at ~3: the pairs, taken apart and
stacked back, are what it loads poorly. Here each program loads whole rows once as (pair, real/imag)
tiles, so every load is contiguous and the rotation is a split of the loaded tile; q and k share one
launch. Everything between the load and the store runs in float32 and is rounded once, as inductor's
fused kernel does (docs/gpu_ceilings.md §2.6: 22 against 67 us a block at one clip a forward).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# Rows (tokens) per program and warps per program; measured on an H200 (benchmarks/README.md)
BLOCK_ROWS = 1
NUM_WARPS = 4


@triton.jit
def _norm_rope_rows(
    x_ptr,  # (rows, DIM) q or k, one row per token of every clip
    weight_ptr,  # (DIM,) the RMSNorm's weight
    cos_ptr,  # (tokens_per_clip, HALF_HEAD) float32
    sin_ptr,
    out_ptr,  # (rows, DIM)
    rows,
    tokens_per_clip,
    eps,
    DIM: tl.constexpr,
    HALF_HEAD: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr,  # DIM // 2 rounded up to a power of two
):
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]  # (R, 1)
    pair = tl.arange(0, BLOCK_PAIRS)[None, :]  # (1, P): channel pair of the row
    mask = (row < rows) & (pair < DIM // 2)  # (R, P)
    part = tl.arange(0, 2)[None, None, :]  # (1, 1, 2): real, imaginary
    offset = (row * DIM + 2 * pair)[:, :, None] + part  # (R, P, 2), contiguous along the row
    x = tl.load(x_ptr + offset, mask=mask[:, :, None], other=0.0).to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(tl.sum(x * x, axis=2), axis=1) / DIM + eps)  # (R,)
    weight = tl.load(weight_ptr + (2 * pair)[:, :, None] + part, mask=(pair < DIM // 2)[:, :, None])
    real, imag = tl.split(x * inv_rms[:, None, None] * weight.to(tl.float32))  # (R, P) each
    angle = (row % tokens_per_clip) * HALF_HEAD + pair % HALF_HEAD  # pair i of every head: angle i
    cos = tl.load(cos_ptr + angle, mask=mask, other=0.0)
    sin = tl.load(sin_ptr + angle, mask=mask, other=0.0)
    rotated = tl.join(real * cos - imag * sin, real * sin + imag * cos)  # (R, P, 2)
    tl.store(out_ptr + offset, rotated.to(out_ptr.dtype.element_ty), mask=mask[:, :, None])


@triton.jit
def qk_norm_rope_kernel(
    q_ptr,
    k_ptr,
    q_weight_ptr,
    k_weight_ptr,
    cos_ptr,
    sin_ptr,
    q_out_ptr,
    k_out_ptr,
    rows,
    tokens_per_clip,
    eps,
    DIM: tl.constexpr,
    HALF_HEAD: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr,
):
    """Grid (row blocks, 2): the second axis picks q or k."""
    if tl.program_id(1) == 0:
        _norm_rope_rows(
            q_ptr, q_weight_ptr, cos_ptr, sin_ptr, q_out_ptr, rows, tokens_per_clip, eps,
            DIM, HALF_HEAD, BLOCK_ROWS, BLOCK_PAIRS,
        )  # fmt: skip
    else:
        _norm_rope_rows(
            k_ptr, k_weight_ptr, cos_ptr, sin_ptr, k_out_ptr, rows, tokens_per_clip, eps,
            DIM, HALF_HEAD, BLOCK_ROWS, BLOCK_PAIRS,
        )  # fmt: skip


def launch(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
    block_rows: int = BLOCK_ROWS,
    num_warps: int = NUM_WARPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k (B, L, C) contiguous; cos, sin (L, 1, C / heads / 2) float32. Returns both normalised and
    rotated, (B, L, C) each. `block_rows` and `num_warps` are open for the benchmark to time."""
    B, L, C = q.shape
    half_head = cos.shape[-1]
    if k.shape != q.shape or cos.shape[0] != L or not (q.is_contiguous() and k.is_contiguous()):
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must be contiguous, with {L} table rows")
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    grid = (triton.cdiv(B * L, block_rows), 2)
    wrap_triton(qk_norm_rope_kernel)[grid](
        q, k, q_weight, k_weight, cos.contiguous(), sin.contiguous(), q_out, k_out, B * L, L, eps,
        DIM=C, HALF_HEAD=half_head, BLOCK_ROWS=block_rows, BLOCK_PAIRS=triton.next_power_of_2(C // 2),
        num_warps=num_warps,
    )  # fmt: skip
    return q_out, k_out


@triton_op("pipeline::qk_norm_rope", mutates_args=())
def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`launch` as an operator torch.compile keeps in the block's graph (inductor calls the kernel)."""
    return launch(q, k, q_weight, k_weight, cos, sin, eps)
