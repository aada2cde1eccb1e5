"""On a GPU, at the real sizes: the policies' forward path never makes the host wait for the device.

`torch.cuda.set_sync_debug_mode("error")` turns every synchronising call (.item(), .tolist(), .cpu(),
nonzero, boolean-mask indexing, ...) into an error. Run on the device machine; skipped elsewhere.
"""

import pytest
import torch
from cache_driver import POLICY_CONFIGS, POLICY_IDS, build_cache

from pipeline.cache.base import ForwardKind
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype feature:UserWarning"),
]

# Full-size layers (12 heads x 128, 1560 tokens a frame), two of them to keep the test short.
GEOMETRY = CacheGeometry(num_layers=2, num_heads=12, head_dim=128, tokens_per_frame=1560, chunk_frames=3)
STEPS = [ForwardKind.FIRST_STEP, ForwardKind.STEP, ForwardKind.STEP, ForwardKind.STEP, ForwardKind.CONTEXT]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_forward_path_never_synchronises_with_the_host(name, params, batch):
    cache = build_cache(name, GEOMETRY, RotaryEmbedding3D(GEOMETRY.head_dim), **params)
    gen = torch.Generator("cuda").manual_seed(0)
    shape = (batch, GEOMETRY.num_heads, GEOMETRY.chunk_tokens, GEOMETRY.head_dim)
    q, k, v = (torch.randn(shape, generator=gen, device="cuda", dtype=torch.bfloat16) for _ in range(3))

    def clip(num_chunks: int) -> None:
        cache.reset()
        for chunk in range(num_chunks):
            for kind in STEPS:
                cache.begin_forward(chunk, kind)
                for layer in range(GEOMETRY.num_layers):
                    keys, values = cache.keys_values(layer, q, k, v)
                    torch.nn.functional.scaled_dot_product_attention(q, keys, values)

    clip(2)  # allocates the buffers
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        clip(14)  # chunk 7 on: rolls, sink shifts, compressions at 7, 9, 11, 13
    finally:
        torch.cuda.set_sync_debug_mode(0)
    telemetry = cache.telemetry()  # reading telemetry at the clip's end may synchronise
    if name == "deep-forcing":
        assert telemetry["compressions"] == 4
        assert (
            sum(telemetry["topc_age_hist"]) == 4 * GEOMETRY.num_layers * batch * 2 * GEOMETRY.tokens_per_frame
        )
