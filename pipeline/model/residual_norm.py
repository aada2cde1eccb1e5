"""A DiT block's residual sum, LayerNorm and per-frame modulation in one Triton kernel (GPUs only).

Three times a block (dit.DiTBlock.forward) a branch's output joins the residual stream and the sum is
normalised for the next branch: x = x + y * gate (or + y), h = LayerNorm(x), then h * (1 + scale) + shift
per frame. Compiled, inductor runs each as a looped reduction at ~1.5 TB/s on an H200 (the profile in
benchmarks/README.md). Here each program reads its rows once, keeps them in registers for both the
statistics and the output, and writes x and h; everything runs in float32 from the bf16 sum on, which
is rounded once as the residual stream stores it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import nn
from torch.library import triton_op, wrap_triton

# Rows (tokens) per program and warps per program; measured on an H200 (benchmarks/README.md)
BLOCK_ROWS = 1
NUM_WARPS = 4


@triton.jit
def residual_norm_kernel(
    x_ptr,  # (rows, DIM) the residual stream
    y_ptr,  # (rows, DIM) the branch output added to it (HAS_RESIDUAL)
    gate_ptr,  # per clip and frame (DIM,) rows scaling y (HAS_GATE)
    weight_ptr,  # (DIM,) LayerNorm's affine weight and bias (AFFINE)
    bias_ptr,
    shift_ptr,  # per clip and frame (DIM,) rows: h * (1 + scale) + shift (MODULATED)
    scale_ptr,
    x_out_ptr,  # (rows, DIM) x + y * gate (HAS_RESIDUAL)
    h_out_ptr,  # (rows, DIM) the normalised, modulated rows
    rows,
    tokens_per_clip,
    tokens_per_frame,
    mod_clip_stride,  # strides of gate/shift/scale between clips and between frames
    mod_frame_stride,
    eps,
    DIM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    HAS_GATE: tl.constexpr,
    AFFINE: tl.constexpr,
    MODULATED: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_DIM: tl.constexpr,  # DIM rounded up to a power of two
):
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]  # (R, 1)
    col = tl.arange(0, BLOCK_DIM)[None, :]  # (1, D)
    col_ok = col < DIM
    mask = (row < rows) & col_ok
    offset = row * DIM + col
    mod_offset = (row // tokens_per_clip) * mod_clip_stride
    mod_offset += (row % tokens_per_clip) // tokens_per_frame * mod_frame_stride + col
    x = tl.load(x_ptr + offset, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        y = tl.load(y_ptr + offset, mask=mask, other=0.0).to(tl.float32)
        if HAS_GATE:
            y = y * tl.load(gate_ptr + mod_offset, mask=mask, other=0.0).to(tl.float32)
        x = (x.to(tl.float32) + y).to(x_out_ptr.dtype.element_ty)  # the stream keeps the rounded sum
        tl.store(x_out_ptr + offset, x, mask=mask)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=1) / DIM  # (R,)
    centred = tl.where(col_ok, x - mean[:, None], 0.0)
    h = centred * tl.rsqrt(tl.sum(centred * centred, axis=1) / DIM + eps)[:, None]
    if AFFINE:
        h = h * tl.load(weight_ptr + col, mask=col_ok).to(tl.float32)
        h += tl.load(bias_ptr + col, mask=col_ok).to(tl.float32)
    if MODULATED:
        h *= 1.0 + tl.load(scale_ptr + mod_offset, mask=mask, other=0.0).to(tl.float32)
        h += tl.load(shift_ptr + mod_offset, mask=mask, other=0.0).to(tl.float32)
    tl.store(h_out_ptr + offset, h.to(h_out_ptr.dtype.element_ty), mask=mask)


def launch(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    gate: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    shift: torch.Tensor | None,
    scale: torch.Tensor | None,
    eps: float,
    block_rows: int = BLOCK_ROWS,
    num_warps: int = NUM_WARPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual (B, L, C) contiguous; gate, shift, scale (B, F, 1, C), one
    row per frame of L / F tokens; weight and bias (C,) together or neither. Returns x + residual * gate
    (an empty tensor without a residual) and the normalised, modulated sum, (B, L, C)."""
    B, L, C = x.shape
    per_frame = next((t for t in (gate, scale) if t is not None), None)
    frames = 1 if per_frame is None else per_frame.shape[1]
    streams = [t for t in (x, residual) if t is not None]
    if any(t.shape != x.shape or not t.is_contiguous() for t in streams) or L % frames:
        raise ValueError(f"x {tuple(x.shape)}, residual: contiguous, alike, of {frames} frames' tokens")
    if (shift is None) != (scale is None) or (weight is None) != (bias is None):
        raise ValueError("shift and scale come together, as do weight and bias")
    strides = {t.stride() for t in (gate, shift, scale) if t is not None}
    if len(strides) > 1 or any(stride[-1] != 1 for stride in strides):
        # the kernel takes one pair of strides for the three (views of one modulation tensor as a rule)
        gate, shift, scale = (None if t is None else t.contiguous() for t in (gate, shift, scale))
        per_frame = next((t for t in (gate, scale) if t is not None), None)
    mod_strides = (0, 0) if per_frame is None else (per_frame.stride(0), per_frame.stride(1))
    x_out = torch.empty_like(x) if residual is not None else x.new_empty(0)  # no sum: nothing to write
    h_out = torch.empty_like(x)
    grid = (triton.cdiv(B * L, block_rows),)
    wrap_triton(residual_norm_kernel)[grid](
        x, x if residual is None else residual, x if gate is None else gate,
        x if weight is None else weight, x if bias is None else bias,
        x if shift is None else shift, x if scale is None else scale,
        x_out, h_out, B * L, L, L // frames, *mod_strides, eps,
        DIM=C, HAS_RESIDUAL=residual is not None, HAS_GATE=gate is not None, AFFINE=weight is not None,
        MODULATED=scale is not None, BLOCK_ROWS=block_rows, BLOCK_DIM=triton.next_power_of_2(C),
        num_warps=num_warps,
    )  # fmt: skip
    return x_out, h_out


@triton_op("pipeline::residual_norm", mutates_args=())
def residual_norm_op(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    gate: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    shift: torch.Tensor | None,
    scale: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`launch` as an operator torch.compile keeps in the block's graph (inductor calls the kernel)."""
    return launch(x, residual, gate, weight, bias, shift, scale, eps)


def fused_residual_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    gate: torch.Tensor | None,
    norm: nn.LayerNorm,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`dit.residual_norm` in one kernel."""
    x_out, h = residual_norm_op(x, residual, gate, norm.weight, norm.bias, shift, scale, norm.eps)
    return (x if residual is None else x_out), h
