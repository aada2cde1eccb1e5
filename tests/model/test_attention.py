"""pipeline/model/attention.py: the self-attention kernels against plain SDPA."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.model.attention import (
    FlashAttention4,
    KeySplitAttention,
    attention_over_key_splits,
    merge_key_splits,
)
from pipeline.model.dit import LayerCursor, OwnKeysValues, attend_with_cache


@pytest.mark.parametrize("splits", [2, 3])
def test_attention_over_key_splits_equals_whole_attention(splits):
    q, k, v = (torch.randn(1, 4, n, 32, dtype=torch.float64) for n in (50, 60, 60))
    merged = merge_key_splits(*attention_over_key_splits(q.float(), k.float(), v.float(), splits))
    torch.testing.assert_close(merged.double(), F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_attention_stays_whole_below_the_split_threshold_and_for_masked_sequences():
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    cursor = LayerCursor(OwnKeysValues(), KeySplitAttention(splits=2, min_keys=9))
    assert attend_with_cache(cursor, q, k, v, None)[1] is None  # 8 keys < 9
    cursor = LayerCursor(OwnKeysValues(), KeySplitAttention(splits=2, min_keys=8))
    assert attend_with_cache(cursor, q, k, v, None)[1] is not None
    assert attend_with_cache(cursor, q, k, v, torch.ones(8, 8, dtype=torch.bool))[1] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# flash-attn-4 and its CuTe DSL warn about their own deprecations on import and on the first compile
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_flash_attention_4_matches_sdpa_over_cache_views():
    device = torch.device("cuda")
    if (reason := FlashAttention4.unavailable_reason(device, heads=12, head_dim=128)) is not None:
        pytest.skip(reason)
    q = torch.randn(1, 4680, 12, 128, device=device, dtype=torch.bfloat16).transpose(1, 2)
    cache = torch.randn(2, 1, 12, 24 * 1560, 128, device=device, dtype=torch.bfloat16)
    k, v = cache[0, :, :, : 19 * 1560], cache[1, :, :, : 19 * 1560]  # prefix views, as the cache gives
    out, lse = FlashAttention4()(q, k, v)
    assert lse is None and out.shape == q.shape
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert ((out.float() - exact).norm() / exact.norm()).item() < 5e-3  # bf16: about 2.3e-3
    # below its key threshold it is plain SDPA
    below, _ = FlashAttention4(min_keys=k.shape[2] + 1)(q, k, v)
    torch.testing.assert_close(below, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=0)
