"""pipeline/model/attention.py: the self-attention kernels against plain SDPA."""

import time

import pytest
import torch
import torch.nn.functional as F

from pipeline.model.attention import (
    FastestAttention,
    FlashAttention3,
    FlashAttention4,
    KeySplitAttention,
    OptionalKernel,
    attention_over_key_splits,
    merge_key_splits,
    sdpa,
)
from pipeline.model.dit import LayerCursor, OwnKeysValues, attend_with_cache


@pytest.mark.parametrize("splits", [2, 3])
def test_attention_over_key_splits_equals_whole_attention(splits):
    q, k, v = (torch.randn(1, 4, n, 32, dtype=torch.float64) for n in (50, 60, 60))
    merged = merge_key_splits(*attention_over_key_splits(q.float(), k.float(), v.float(), splits))
    torch.testing.assert_close(merged.double(), F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_attention_stays_whole_for_batches_uneven_keys_and_masked_sequences():
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    cursor = LayerCursor(OwnKeysValues(), KeySplitAttention(splits=2))
    assert attend_with_cache(cursor, q, k, v, None)[1] is not None  # one video, 8 keys: two runs of 4
    assert attend_with_cache(cursor, q, k, v, torch.ones(8, 8, dtype=torch.bool))[1] is None
    assert KeySplitAttention(splits=3)(q, k, v)[1] is None  # 8 keys do not split in three
    assert KeySplitAttention(splits=2)(*(t.expand(2, -1, -1, -1) for t in (q, k, v)))[1] is None


class SlowedKernel:
    """SDPA, `delay_s` slower at the key counts in `slow_at`: a kernel whose rank moves with the shape."""

    def __init__(self, delay_s: float, slow_at: set[int]):
        self.delay_s, self.slow_at, self.calls = delay_s, slow_at, 0

    def __call__(self, q, k, v):
        self.calls += 1
        if k.shape[2] in self.slow_at:
            time.sleep(self.delay_s)
        return sdpa(q, k, v)


def test_fastest_attention_times_each_call_shape_once_and_keeps_the_fastest():
    fast_short = SlowedKernel(0.02, slow_at={64})  # slow at 64 keys
    fast_long = SlowedKernel(0.02, slow_at={32})  # slow at 32 keys
    fastest = FastestAttention({"a": fast_short, "b": fast_long}, timed_calls=3)
    q = torch.randn(1, 2, 16, 8)
    for keys, winner in ((32, "a"), (64, "b")):
        k, v = torch.randn(1, 2, keys, 8), torch.randn(1, 2, keys, 8)
        out, lse = fastest(q, k, v)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
        assert lse is None and fastest.choices[(1, 16, keys)] == winner
        timings = fastest.timings[(1, 16, keys)]
        assert timings[winner] == min(timings.values()) and max(timings.values()) > 0.02
    calls = fast_short.calls, fast_long.calls
    assert calls == (2 * (1 + 3) + 1, 2 * (1 + 3) + 1)  # per shape: untimed + timed each, then the winner
    fastest(q, torch.randn(1, 2, 32, 8), torch.randn(1, 2, 32, 8))  # a known shape: no timing again
    assert (fast_short.calls, fast_long.calls) == (calls[0] + 1, calls[1])
    assert set(fastest.choices) == {(1, 16, 32), (1, 16, 64)}


def test_fastest_attention_times_split_kernels_with_their_merge_and_returns_the_partials():
    fastest = FastestAttention({"split": KeySplitAttention(splits=2)}, timed_calls=2)
    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 32, 8), torch.randn(1, 2, 32, 8)
    out, lse = fastest(q, k, v)
    assert lse is not None  # merged by the block, as without the dispatcher
    torch.testing.assert_close(merge_key_splits(out, lse), F.scaled_dot_product_attention(q, k, v))
    with pytest.raises(ValueError, match="at least one kernel"):
        FastestAttention({}, timed_calls=2)


@pytest.mark.parametrize("kernel", [FlashAttention3, FlashAttention4])
def test_flash_kernels_say_why_they_cannot_run_here(kernel: type[OptionalKernel], monkeypatch):
    assert kernel.unavailable_reason(torch.device("cpu"), 12, 128) == "it needs a CUDA device, not cpu"
    # on a Hopper GPU without the package, the reason names the extra that brings it
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    reason = kernel.unavailable_reason(torch.device("cuda"), 12, 128)
    install = f"pip install 'deepforcing-render[{kernel.extra}]'"
    assert reason == f"the {kernel.package} package is not installed ({install})"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# flash-attn-4 and its CuTe DSL warn about their own deprecations on import and on the first compile
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize(
    ("kernel", "num_splits"), [(FlashAttention3, 1), (FlashAttention3, 2), (FlashAttention4, 1)]
)
def test_flash_kernels_match_sdpa_over_cache_views(kernel: type[OptionalKernel], num_splits: int):
    device = torch.device("cuda")
    if (reason := kernel.unavailable_reason(device, heads=12, head_dim=128)) is not None:
        pytest.skip(reason)
    q = torch.randn(1, 4680, 12, 128, device=device, dtype=torch.bfloat16).transpose(1, 2)
    cache = torch.randn(2, 1, 12, 24 * 1560, 128, device=device, dtype=torch.bfloat16)
    k, v = cache[0, :, :, : 19 * 1560], cache[1, :, :, : 19 * 1560]  # prefix views, as the cache gives
    out, lse = kernel(num_splits)(q, k, v)
    assert lse is None and out.shape == q.shape
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert ((out.float() - exact).norm() / exact.norm()).item() < 5e-3  # bf16: about 2.3e-3
