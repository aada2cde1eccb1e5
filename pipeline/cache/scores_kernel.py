"""The Triton kernel behind `scores.candidate_scores` on GPUs (imported only there).

The cache lays keys out token by token (FrameBuffers), so a candidate's H heads of D channels are one
contiguous row of H*D values, and its score is that row's dot product with the query, flattened the
same way. Each program loads a few whole rows once, in their own dtype, and sums in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ROWS_PER_PROGRAM = 4
NUM_WARPS = 8


@triton.jit
def _row_dots(
    keys_ptr,  # candidate rows of one clip after another
    query_ptr,  # (B, WIDTH) float32
    out_ptr,  # (B, rows) float32
    rows,
    clip_stride,  # elements from one clip's first candidate to the next clip's
    row_stride,  # elements from one candidate to the next (H*D: the rows are back to back)
    WIDTH: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_WIDTH: tl.constexpr,  # WIDTH rounded up to a power of two
):
    clip = tl.program_id(1)
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)  # (R,)
    column = tl.arange(0, BLOCK_WIDTH)[None, :]  # (1, W)
    query = tl.load(query_ptr + clip * WIDTH + column, mask=column < WIDTH, other=0.0)
    mask = (row[:, None] < rows) & (column < WIDTH)
    keys = tl.load(keys_ptr + clip * clip_stride + row[:, None] * row_stride + column, mask=mask, other=0.0)
    dots = tl.sum(keys.to(tl.float32) * query, axis=1)  # (R,)
    tl.store(out_ptr + clip * rows + row, dots, mask=row < rows)


def fused_candidate_scores(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """query (B, H, D) float32, candidates (B, H, L, D) token by token -> (B, L) float32."""
    B, H, L, D = candidates.shape
    width = H * D
    flat_query = query.reshape(B, width).contiguous()
    out = torch.empty(B, L, device=candidates.device, dtype=torch.float32)
    grid = (triton.cdiv(L, ROWS_PER_PROGRAM), B)
    _row_dots[grid](
        candidates,
        flat_query,
        out,
        L,
        candidates.stride(0),
        candidates.stride(2),
        WIDTH=width,
        BLOCK_ROWS=ROWS_PER_PROGRAM,
        BLOCK_WIDTH=triton.next_power_of_2(width),
        num_warps=NUM_WARPS,
    )
    return out
