"""Participative Compression's token scores: the Triton kernel and the einsum give the same scores.

The kernel runs in Triton's interpreter on CPUs (tests/triton_interpreter.py), on candidates laid out as
the cache keeps them: a slice of FrameBuffers' token-by-token memory, two clips apart."""

import pytest
import torch
from triton_interpreter import needs_triton, run_interpreted

from pipeline.cache.scores import candidate_scores
from pipeline.model.attention import relative_error

SCRIPT = """
    import dataclasses
    import torch
    from pipeline.cache.base import FrameBuffers
    from pipeline.cache.scores_kernel import fused_candidate_scores
    from pipeline.spec.model import TINY

    geometry = dataclasses.replace(TINY.cache_geometry(), num_layers=1)
    buffers = FrameBuffers(geometry, 7)
    buffers.ensure(torch.empty(2, 0))
    buffers.keys[0].normal_()
    lo, hi = buffers.tokens(1), buffers.tokens(5)
    candidates = buffers.keys[0][:, :, lo:hi]  # (2, H, L, D), a view of token-by-token memory
    query = torch.randn(2, geometry.num_heads, geometry.head_dim)
    expected = torch.einsum("bhd,bhld->bl", query, candidates)
    got = fused_candidate_scores(query, candidates)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    print("ranked alike:", bool((got.topk(10).indices == expected.topk(10).indices).all()))
    print("rows:", got.shape[1], "of", hi - lo)
"""


@needs_triton
def test_the_kernel_scores_every_candidate_of_every_clip_as_the_einsum_does():
    out = run_interpreted(SCRIPT)
    assert "ranked alike: True" in out
    rows = out.split("rows: ")[1].split()
    assert rows[0] == rows[2]


def test_on_a_cpu_the_scores_are_the_float32_einsum():
    query = torch.randn(2, 3, 8)
    candidates = torch.randn(2, 5, 3, 8, dtype=torch.bfloat16).transpose(1, 2)  # (B, H, L, D)
    expected = torch.einsum("bhd,bhld->bl", query, candidates.float())
    torch.testing.assert_close(candidate_scores(query, candidates), expected, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_kernel_scores_full_size_bf16_candidates_as_accurately_as_the_einsum():
    heads, dim, tokens = 12, 128, 8 * 1560  # a steady compression's eight candidate frames
    buffer = torch.randn(2, tokens + 1560, heads, dim, device="cuda", dtype=torch.bfloat16)
    candidates = buffer.transpose(1, 2)[:, :, 1560:]
    query = torch.randn(2, heads, dim, device="cuda") * 100  # sums of thousands of queries
    exact = torch.einsum("bhd,bhld->bl", query.double(), candidates.double())
    einsum = torch.einsum("bhd,bhld->bl", query, candidates.float())
    got = candidate_scores(query, candidates)
    # Both are float32 sums of 1536 products, in different orders: each ~1e-6 of the scores from exact
    # (elementwise they differ by up to ~0.03 of scores of ~4000, more than assert_close's defaults).
    assert relative_error(got, exact) < 2e-6 and relative_error(einsum, exact) < 2e-6
    picked, wanted = got.topk(1560, dim=1).indices, exact.topk(1560, dim=1).indices
    for clip in range(2):  # only near ties at the boundary may pick differently
        assert (~torch.isin(picked[clip], wanted[clip])).sum() <= 2
