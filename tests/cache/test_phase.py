"""Moving keys in time from a pristine copy: equal to RoPE at the target, and no bf16 drift."""

import pytest
import torch
from cache_driver import CONTEXT, FIRST_STEP, SyntheticModel, build_cache, key_info, stream

from pipeline.cache.phase import PristineShift, shift_tokens_in_time, temporal_frequencies
from pipeline.model.rope import RotaryEmbedding3D, apply_rotary, shift_temporal_phase
from pipeline.spec.cache import CacheGeometry

ONE_LAYER = CacheGeometry(num_layers=1, num_heads=2, head_dim=16, tokens_per_frame=4, chunk_frames=3)


def pair_ulps(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest error in bf16 ulps of each complex pair's magnitude (channels (2i, 2i+1) rotate together)."""
    a = actual.to(torch.float64).unflatten(-1, (-1, 2))
    b = expected.to(torch.float64).unflatten(-1, (-1, 2))
    ulp = torch.exp2(torch.floor(torch.log2(b.norm(dim=-1, keepdim=True))) - 7)  # bf16: 8 significant bits
    return ((a - b).abs() / ulp).max().item()


@pytest.mark.slow
def test_200_sink_shifts_in_bf16_stay_within_two_ulps_of_one_rotation_to_the_same_position():
    model = SyntheticModel(ONE_LAYER, dtype=torch.bfloat16)
    cache = build_cache("deep-sink", ONE_LAYER, model.rope, sink_frames=10)
    last_chunk = 7 + 200  # the first roll (chunk 7) moves by 0, every later chunk by +3
    sink = {}

    def observe(chunk, step, layer, keys, values):
        if chunk == last_chunk and step == FIRST_STEP:
            for token, info in enumerate(key_info(values)):
                if info.frame < 10:
                    sink[info.frame, info.token] = keys[:, :, token]

    stream(cache, model, 3 * (last_chunk + 1), observe)
    assert (cache.telemetry()["sink_shifts"], cache.telemetry()["sink_start"]) == (200, 600)
    for (frame, token), key in sink.items():
        as_written = model.rotate(model.raw("k", 0, frame, CONTEXT), frame)[:, :, token]  # float64
        written_bf16 = as_written.to(torch.bfloat16)
        once = shift_temporal_phase(written_bf16, model.rope.temporal_phase(600, key.device))
        exact = shift_temporal_phase(as_written, model.rope.temporal_phase(600, key.device))
        assert pair_ulps(key, once) <= 2
        assert pair_ulps(key, exact) <= 2
    # The bound means something: 200 in-place rotations of the same bf16 keys drift far beyond it.
    frame, token = 9, 3
    naive = model.rotate(model.raw("k", 0, frame, CONTEXT), frame)[:, :, token].to(torch.bfloat16)
    for _ in range(200):
        naive = shift_temporal_phase(naive, model.rope.temporal_phase(3, naive.device))
    assert pair_ulps(naive, sink[frame, token]) > 20


def test_pristine_shift_returns_to_the_keys_as_written_and_only_touches_temporal_channels():
    rope = RotaryEmbedding3D(128)
    keys = torch.randn(2, 3, 10, 128).to(torch.bfloat16)
    original = keys.clone()
    shift = PristineShift(rope, num_layers=1, tokens=6)
    assert shift.move_to(0, keys, 37) and not shift.move_to(0, keys, 37)
    assert torch.equal(keys[..., 44:], original[..., 44:]) and torch.equal(keys[:, :, 6:], original[:, :, 6:])
    assert not torch.equal(keys[:, :, :6, :44], original[:, :, :6, :44])
    shift.move_to(0, keys, 0)
    assert torch.equal(keys, original)


def test_per_token_shift_equals_rope_applied_at_each_tokens_target():
    rope = RotaryEmbedding3D(128)
    raw = torch.randn(2, 8, 12, 128, dtype=torch.float64)  # (B, tokens, H, D): 8 tokens, each its own frame
    made_at = torch.tensor([3, 5, 5, 9, 12, 12, 12, 20])
    target = torch.tensor([[30, 30, 30, 30, 31, 31, 31, 31], [29, 30, 31, 32, 33, 34, 35, 36]])
    rotated = torch.stack(
        [apply_rotary(raw[:, i : i + 1], rope(made_at[i : i + 1], 1, 1)) for i in range(8)], 1
    )
    keys = rotated[:, :, 0].transpose(1, 2)  # (B, H, tokens, D)
    moved = shift_tokens_in_time(keys[..., :44], target - made_at, temporal_frequencies(rope, keys.device))
    for b in range(2):
        for i in range(8):
            expected = apply_rotary(raw[b : b + 1, i : i + 1], rope(target[b, i : i + 1], 1, 1))[
                0, 0
            ]  # (H, D)
            torch.testing.assert_close(moved[b, :, i], expected[:, :44], rtol=1e-12, atol=1e-12)
