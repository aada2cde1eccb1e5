"""Participative Compression's token scores: φ_j = <Σ_r q_r, k_j> summed over heads (paper Eq. 7).

`candidate_scores` reads the candidate keys where the cache keeps them. On CPUs (and for any layout
but the cache's own) it is one float32 einsum; on GPUs a Triton kernel reads each bf16 key once and
multiplies in float32, where the einsum first wrote a float32 copy of every candidate and read it back:
~0.55 ms a layer at two clips a forward on an H200, 30 layers every other chunk
(benchmarks/README.md). Both sum in float32; only their order of summation differs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

ScoreKernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def candidate_scores(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """query (B, H, D) float32 (or float64), candidates (B, H, L, D) -> (B, L) scores in query's dtype."""
    B, H, L, D = candidates.shape
    token_major = candidates.stride(3) == 1 and candidates.stride(1) == D and candidates.stride(2) == H * D
    if candidates.is_cuda and token_major and query.dtype == torch.float32 and L > 0:
        fused = _fused_kernel()
        if fused is not None:
            return fused(query, candidates)
    return torch.einsum("bhd,bhld->bl", query, candidates.to(query.dtype))


@functools.cache
def _fused_kernel() -> ScoreKernel | None:
    try:
        from pipeline.cache.scores_kernel import fused_candidate_scores
    except ImportError as exc:  # no Triton: the einsum, as on CPUs
        logger.info("compression scores without the Triton kernel (%r)", exc)
        return None
    return fused_candidate_scores
