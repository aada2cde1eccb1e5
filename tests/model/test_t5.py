"""Tests for pipeline/model/t5.py: official names and shapes, position buckets, attention math, loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.model.checkpoint import load_strict, read_state_dict
from pipeline.model.random_init import randomize_
from pipeline.model.t5 import T5LayerNorm, UMT5Encoder, relative_position_bucket
from pipeline.spec.model import T5Config

TINY = T5Config.tiny()


def official_shapes() -> dict[str, tuple[int, ...]]:
    """`models_t5_umt5-xxl-enc-bf16.pth`, written out from docs/model.md §6.2."""
    shapes: dict[str, tuple[int, ...]] = {"token_embedding.weight": (256384, 4096)}
    for n in range(24):
        shapes[f"blocks.{n}.norm1.weight"] = (4096,)
        for proj in "qkvo":
            shapes[f"blocks.{n}.attn.{proj}.weight"] = (4096, 4096)
        shapes[f"blocks.{n}.norm2.weight"] = (4096,)
        shapes[f"blocks.{n}.ffn.gate.0.weight"] = (10240, 4096)
        shapes[f"blocks.{n}.ffn.fc1.weight"] = (10240, 4096)
        shapes[f"blocks.{n}.ffn.fc2.weight"] = (4096, 10240)
        shapes[f"blocks.{n}.pos_embedding.embedding.weight"] = (32, 64)
    shapes["norm.weight"] = (4096,)
    return shapes


def documented_bucket(relative: int) -> int:
    """docs/model.md §6.3 in plain maths: 16 buckets per direction, 8 exact, log up to distance 128."""
    offset = 16 if relative > 0 else 0
    distance = abs(relative)
    if distance < 8:
        return offset + distance
    return offset + min(15, 8 + math.floor(math.log(distance / 8) / math.log(128 / 8) * 8))


def tiny_encoder(seed: int = 0) -> UMT5Encoder:
    encoder = UMT5Encoder(TINY)
    randomize_(encoder, seed=seed)
    return encoder.eval()


def tiny_batch(length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, right padded: 40 real tokens and 13 real tokens."""
    ids = torch.randint(3, TINY.vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, 13:] = 0
    return ids, mask


def reference_encoder(
    weights: dict[str, torch.Tensor], config: T5Config, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The encoder written out in float64 from docs/model.md §6.3, attending only to the unmasked keys."""
    B, L = ids.shape
    nh = config.num_heads
    w = {k: v.double() for k, v in weights.items()}

    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + config.eps) * weight

    buckets = torch.tensor(
        [[documented_bucket(key - query) for key in range(L)] for query in range(L)]
    )  # (L, L)
    x = w["token_embedding.weight"][ids]  # (B, L, dim)
    for n in range(config.num_layers):
        p = f"blocks.{n}."
        h = norm(x, w[p + "norm1.weight"])
        q, k, v = (
            (h @ w[f"{p}attn.{proj}.weight"].T).unflatten(-1, (nh, -1))  # (B, L, nh, hd)
            for proj in "qkv"
        )
        position_bias = w[p + "pos_embedding.embedding.weight"][buckets].permute(2, 0, 1)  # (nh, L, L)
        attended = torch.zeros_like(q)
        for b in range(B):
            keep = mask[b].bool()
            logits = (
                torch.einsum("ihd,jhd->hij", q[b], k[b, keep]) + position_bias[:, :, keep]
            )  # no 1/sqrt(hd)
            attended[b] = torch.einsum("hij,jhd->ihd", logits.softmax(-1), v[b, keep])
        x = x + attended.flatten(2) @ w[p + "attn.o.weight"].T
        h = norm(x, w[p + "norm2.weight"])
        gate = F.gelu(h @ w[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + ((h @ w[p + "ffn.fc1.weight"].T) * gate) @ w[p + "ffn.fc2.weight"].T
    return norm(x, w["norm.weight"])


def test_full_encoder_has_the_official_242_names_and_shapes() -> None:
    with torch.device("meta"):
        encoder = UMT5Encoder(T5Config())
    expected = official_shapes()
    assert len(expected) == 242
    assert {name: tuple(t.shape) for name, t in encoder.state_dict().items()} == expected
    assert sum(p.numel() for p in encoder.parameters()) == 5_680_910_336
    assert list(encoder.buffers()) == []  # nothing that a strict load would leave on the meta device


def test_relative_position_bucket_matches_hand_computed_values() -> None:
    # rel -> bucket; keys after the query (rel > 0) are offset by 16.
    # E.g. +20: 8 + floor(ln(20/8) / ln(16) * 8) = 8 + floor(2.64) = 10, plus 16.
    expected = {
        0: 0,
        1: 17,
        -1: 1,
        7: 23,
        -7: 7,
        8: 24,
        -8: 8,
        20: 26,
        -30: 11,
        64: 30,
        -100: 15,
        500: 31,
        -500: 15,
    }
    relative = torch.tensor(list(expected))
    assert relative_position_bucket(relative, 32, 128).tolist() == list(expected.values())


def test_relative_position_bucket_matches_the_documented_formula_over_a_wide_range() -> None:
    relative = torch.arange(-600, 601)
    got = relative_position_bucket(relative, 32, 128).tolist()
    assert got == [documented_bucket(r) for r in relative.tolist()]


def test_encoder_matches_explicit_float64_reference_without_scaling_and_with_masked_keys_ignored() -> None:
    encoder = tiny_encoder().double()
    ids, mask = tiny_batch()
    with torch.no_grad():
        got = encoder(ids, mask)
    expected = reference_encoder(encoder.state_dict(), TINY, ids, mask)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_padded_key_ids_do_not_change_real_token_features() -> None:
    encoder = tiny_encoder()
    ids, mask = tiny_batch()
    other = ids.clone()
    other[1, 13:] = 7  # different ids under mask 0
    with torch.no_grad():
        a, b = encoder(ids, mask), encoder(other, mask)
    torch.testing.assert_close(a[1, :13], b[1, :13], rtol=0, atol=0)


def test_layer_norm_casts_to_half_weight_dtype_and_keeps_float32_otherwise() -> None:
    x = torch.randn(2, 5, 8).bfloat16()
    assert T5LayerNorm(8, 1e-6).bfloat16()(x).dtype == torch.bfloat16
    assert T5LayerNorm(8, 1e-6)(x).dtype == torch.float32


def test_bf16_encoder_stays_close_to_float32_with_the_same_weights() -> None:
    encoder = tiny_encoder().bfloat16().float()  # weights as a bf16 file holds them
    ids, mask = tiny_batch()
    with torch.no_grad():
        full = encoder(ids, mask)
        half = encoder.bfloat16()(ids, mask)
    assert half.dtype == torch.bfloat16
    relative_error = (half.float() - full).norm() / full.norm()
    assert relative_error < 0.03  # bf16 keeps 8 bits of mantissa; measured 0.013


def test_mismatched_ids_and_mask_shapes_name_both() -> None:
    ids, mask = tiny_batch()
    with pytest.raises(ValueError) as info:
        tiny_encoder()(ids, mask[:, :5])
    assert str(info.value) == (
        "ids (2, 40) and mask (2, 5) must both be (batch, tokens); "
        "pass one row of token ids and one row of 0/1 mask per prompt"
    )


def test_config_rejects_heads_that_do_not_divide_dim_attn() -> None:
    with pytest.raises(ValueError) as info:
        T5Config(dim_attn=100, num_heads=64)
    assert str(info.value) == (
        "dim_attn=100 must be a multiple of num_heads=64; the released model uses 4096 = 64 heads x 64"
    )


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_bf16_checkpoint_round_trip_into_meta_encoder(tmp_path: Path, suffix: str) -> None:
    reference = tiny_encoder(seed=3).bfloat16()
    path = tmp_path / f"models_t5_tiny-enc-bf16{suffix}"
    state = {name: t.contiguous() for name, t in reference.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))

    with torch.device("meta"):
        loaded = UMT5Encoder(TINY)
    load_strict(loaded, read_state_dict(path), path)

    assert loaded.dtype == torch.bfloat16
    ids, mask = tiny_batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), reference(ids, mask))
