"""Speed switches keep outputs within tolerance of the plain model (tiny preset, CPU)."""

import numpy as np
import pytest
import torch

from pipeline.cache import make_cache
from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle
from pipeline.model.presets import TINY
from pipeline.model.speed import SpeedConfig, accelerate


def frames(bundle: ModelBundle) -> np.ndarray:
    cache = make_cache("deep-forcing", TINY.cache_geometry(), bundle.dit.rope)
    return np.concatenate(list(ClipGenerator(bundle).stream("a lighthouse at dusk", 5, 27, cache)))


def test_compiled_blocks_render_the_same_frames_and_share_one_graph_across_layers():
    torch._dynamo.reset()
    plain = frames(ModelBundle.random(TINY, "cpu", torch.float32, seed=4))
    fast = accelerate(
        ModelBundle.random(TINY, "cpu", torch.float32, seed=4), SpeedConfig(compile_backend="aot_eager")
    )
    np.testing.assert_array_equal(frames(fast), plain)
    # one graph before and one after the eager cache lookup, reused by every block: no per-layer copies
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2 * 3


def test_unknown_attention_order_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"attention='fastest'; choose one of \['cudnn', 'default'\]"):
        SpeedConfig(attention="fastest")


def test_text_encoder_placements_give_the_same_embedding():
    bundle = ModelBundle.random(TINY, "cpu", torch.float32, seed=2)
    resident = bundle.encode_prompt("a paper boat")
    for placement in ("cpu", "offload", "device"):
        bundle.place_text_encoder(placement)
        torch.testing.assert_close(bundle.encode_prompt("a paper boat"), resident, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"placement 'gpu'; choose one of \['device', 'cpu', 'offload'\]"):
        bundle.place_text_encoder("gpu")
