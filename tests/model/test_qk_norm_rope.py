"""The Triton kernel for q's and k's norms and RoPE computes what the block's PyTorch ops compute.

On CPUs the kernel runs in Triton's interpreter (tests/triton_interpreter.py)."""

import logging

import pytest
import torch
from triton_interpreter import needs_triton, run_interpreted

from pipeline.model.bundle import ModelBundle
from pipeline.model.dit import SelfAttention
from pipeline.model.random_init import randomize_
from pipeline.model.speed import fused_norm_rope
from pipeline.spec.model import SELF_FORCING_1_3B, TINY


@needs_triton
def test_the_kernel_gives_the_q_k_v_of_the_pytorch_ops_for_every_clip_and_token():
    # two clips of a chunk of three frames at a later position: rows, tokens and heads all indexed apart
    out = run_interpreted(
        """
        import torch
        from pipeline.model.dit import SelfAttention
        from pipeline.model.qk_norm_rope import launch, qk_norm_rope
        from pipeline.model.random_init import randomize_
        from pipeline.model.rope import RotaryEmbedding3D
        from pipeline.spec.model import TINY

        attention = randomize_(SelfAttention(TINY.dit), seed=2)
        with torch.no_grad():
            attention.norm_q.weight.uniform_(0.5, 1.5)
            attention.norm_k.weight.uniform_(0.5, 1.5)
        grid = (TINY.latent_height // 2, TINY.latent_width // 2)
        tables = RotaryEmbedding3D(TINY.dit.head_dim)(torch.arange(7, 10), *grid).to(torch.float32)
        x = torch.randn(2, 3 * grid[0] * grid[1], TINY.dit.dim)
        with torch.inference_mode():
            expected = attention.qkv(x, tables)
            attention.fused_norm_rope = qk_norm_rope
            fused = attention.qkv(x, tables)
            for got, want in zip(fused, expected, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            # launch sizes the benchmark times: programs of several rows, the last one part empty
            q, k = attention.q(x), attention.k(x)
            weights = attention.norm_q.weight, attention.norm_k.weight
            one_row = launch(q, k, *weights, *tables, attention.norm_q.eps)
            for rows, warps in [(4, 8), (16, 16)]:
                many = launch(q, k, *weights, *tables, attention.norm_q.eps, block_rows=rows, num_warps=warps)
                for a, b in zip(one_row, many, strict=True):
                    torch.testing.assert_close(a, b, rtol=0, atol=0)
            try:
                strided = q.transpose(1, 2).contiguous().transpose(1, 2)  # same shape, channels apart
                launch(strided, k, *weights, *tables, attention.norm_q.eps)
            except ValueError as exc:
                print("rejected:", exc)
        """
    )
    assert "rejected: q (2, 84, 48) and k (2, 84, 48) must be contiguous, with 84 table rows" in out


@needs_triton
def test_speed_settings_take_the_kernel_once_it_matches_the_pytorch_ops():
    out = run_interpreted(
        """
        import torch
        from pipeline.model.bundle import ModelBundle
        from pipeline.model.qk_norm_rope import qk_norm_rope
        from pipeline.model.speed import fused_norm_rope
        from pipeline.spec.model import TINY

        dit = ModelBundle.random(TINY, "cpu", torch.float32, seed=4).dit
        print(fused_norm_rope(dit, TINY) is qk_norm_rope, dit.block_list[0].self_attn.fused_norm_rope)
        """
    )
    assert out.split() == ["True", "None"]  # chosen, and the check left the block as it found it


def test_without_a_working_kernel_the_block_keeps_the_pytorch_ops(caplog: pytest.LogCaptureFixture):
    # Here the kernel cannot run: no Triton, or no GPU driver for it outside the interpreter
    dit = ModelBundle.random(TINY, "cpu", torch.float32, seed=4).dit
    with caplog.at_level(logging.INFO, logger="pipeline.model.speed"):
        assert fused_norm_rope(dit, TINY) is None
    assert "q/k norms and RoPE in one Triton kernel not used" in caplog.text
    assert dit.block_list[0].self_attn.fused_norm_rope is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_kernel_stays_within_bf16_rounding_at_full_size_compiled():
    from pipeline.model.qk_norm_rope import qk_norm_rope
    from pipeline.model.rope import RotaryEmbedding3D

    config = SELF_FORCING_1_3B.dit
    exact = randomize_(SelfAttention(config), seed=2).cuda()
    attention = randomize_(SelfAttention(config), seed=2).cuda().to(torch.bfloat16)
    grid = (SELF_FORCING_1_3B.latent_height // 2, SELF_FORCING_1_3B.latent_width // 2)
    tables = RotaryEmbedding3D(config.head_dim)(torch.arange(16, 19, device="cuda"), *grid).to(torch.float32)
    x = torch.randn(2, 3 * grid[0] * grid[1], config.dim, device="cuda")
    with torch.inference_mode():
        want = exact.qkv(x, tables)
        plain = torch.compile(attention.qkv)(x.bfloat16(), tables)
        attention.fused_norm_rope = qk_norm_rope
        fused = torch.compile(attention.qkv)(x.bfloat16(), tables)
    for got, ops, ref in zip(fused, plain, want, strict=True):
        error, ops_error = ((t.float() - ref).norm() / ref.norm() for t in (got, ops))
        assert error < 1.1 * ops_error < 1e-2  # H200: 0.29% both
