import math

import pytest
import torch

from pipeline.model.rope import (
    RotaryEmbedding3D,
    RotarySplit,
    RotaryTables,
    apply_rotary,
    shift_temporal_phase,
)


def test_head_dim_128_splits_into_44_temporal_42_height_42_width_channels():
    split = RotarySplit(128)
    assert (split.temporal, split.spatial, split.spatial) == (44, 42, 42)


def test_odd_split_is_rejected_with_the_head_dim_in_the_message():
    with pytest.raises(ValueError, match="head_dim=127 must be even with an even temporal part"):
        RotarySplit(127)


def test_rotation_factors_use_frame_row_and_column_positions_per_channel_group():
    rope = RotaryEmbedding3D(128)
    freqs = rope(torch.tensor([5, 6]), height=3, width=4)  # (2*3*4, 1, 64)
    assert freqs.cos.shape == freqs.sin.shape == (24, 1, 64) and freqs.cos.dtype == torch.float64
    token = 1 * 12 + 2 * 4 + 3  # frame index 1 (position 6), row 2, column 3
    angles = torch.atan2(freqs.sin[token, 0], freqs.cos[token, 0])
    omega_t = 10000.0 ** (-torch.arange(0, 44, 2, dtype=torch.float64) / 44)
    omega_s = 10000.0 ** (-torch.arange(0, 42, 2, dtype=torch.float64) / 42)

    def wrap(a: torch.Tensor) -> torch.Tensor:
        return torch.remainder(a + math.pi, 2 * math.pi) - math.pi

    torch.testing.assert_close(angles[:22], wrap(6 * omega_t))
    torch.testing.assert_close(angles[22:43], wrap(2 * omega_s))
    torch.testing.assert_close(angles[43:], wrap(3 * omega_s))


def test_rotation_pairs_adjacent_channels_as_real_and_imaginary_parts():
    x = torch.zeros(1, 1, 1, 128, dtype=torch.float64)
    x[..., 0] = 1.0  # pair 0 = 1 + 0i
    zeros, ones = torch.zeros(1, 1, 64, dtype=torch.float64), torch.ones(1, 1, 64, dtype=torch.float64)
    out = apply_rotary(x, RotaryTables(cos=zeros, sin=ones))  # a quarter turn
    assert out[0, 0, 0, 0].abs() < 1e-12 and out[0, 0, 0, 1] == pytest.approx(1.0)  # rotated to 0 + 1i


def test_positions_past_the_upstream_1024_table_work_and_stay_relative():
    rope = RotaryEmbedding3D(128)
    q, k = torch.randn(2, 1, 1, 1, 128, dtype=torch.float64)

    def score(pq: int, pk: int) -> torch.Tensor:
        fq, fk = rope(torch.tensor([pq]), 1, 1), rope(torch.tensor([pk]), 1, 1)
        return (apply_rotary(q, fq) * apply_rotary(k, fk)).sum()

    torch.testing.assert_close(score(10, 3), score(100_010, 100_003), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("delta", [5, -3, 1500])
def test_temporal_phase_shift_equals_rope_applied_at_the_shifted_position(delta):
    rope = RotaryEmbedding3D(128)
    raw = torch.randn(1, 2 * 3 * 4, 12, 128, dtype=torch.float64)  # 2 frames on a 3x4 grid
    positions = torch.tensor([7, 8])
    rotated = apply_rotary(raw, rope(positions, 3, 4))
    shifted = shift_temporal_phase(rotated, rope.temporal_phase(delta, rotated.device))
    expected = apply_rotary(raw, rope(positions + delta, 3, 4))
    torch.testing.assert_close(shifted, expected, rtol=1e-10, atol=1e-10)


def test_temporal_phase_shift_leaves_height_and_width_channels_untouched():
    rope = RotaryEmbedding3D(128)
    keys = torch.randn(1, 12, 10, 128).to(torch.bfloat16)
    shifted = shift_temporal_phase(keys, rope.temporal_phase(4, keys.device))
    assert torch.equal(shifted[..., 44:], keys[..., 44:])
    assert not torch.equal(shifted[..., :44], keys[..., :44])
