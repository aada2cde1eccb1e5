"""Speed switches keep outputs within tolerance of the plain model (tiny preset, CPU)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.cache import make_cache
from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle
from pipeline.model.presets import TINY
from pipeline.model.speed import SpeedConfig, accelerate, accelerate_vae
from pipeline.model.vae import CausalConv3d, WanVAEDecoder


def frames(bundle: ModelBundle) -> np.ndarray:
    cache = make_cache("deep-forcing", bundle.preset.cache_geometry(), bundle.dit.rope)
    return np.concatenate(list(ClipGenerator(bundle).stream("a lighthouse at dusk", 5, 27, cache)))


def test_compiled_blocks_render_the_same_frames_and_share_one_graph_across_layers():
    # More layers than dynamo's recompile limit (8): a graph per layer would leave most layers eager.
    deep = replace(TINY, dit=replace(TINY.dit, num_layers=10))
    torch._dynamo.reset()
    plain = frames(ModelBundle.random(deep, "cpu", torch.float32, seed=4))
    dit_only = SpeedConfig(compile_backend="aot_eager", vae_channels_last=False, compile_vae=False)
    fast = accelerate(ModelBundle.random(deep, "cpu", torch.float32, seed=4), dit_only)
    np.testing.assert_array_equal(frames(fast), plain)
    # one graph before and one after the eager cache lookup, shared by every block and chunk
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


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


def decode_video(vae: WanVAEDecoder, latents: torch.Tensor) -> torch.Tensor:
    stream = vae.start_stream()
    chunks = [vae.decode(latents[:, :, i : i + 3], stream) for i in range(0, latents.shape[2], 3)]
    return torch.cat(chunks, dim=2)


def test_fast_vae_decodes_the_same_pixels_without_recompiling_per_video():
    torch._dynamo.reset()
    bundle = ModelBundle.random(TINY, "cpu", torch.float32, seed=3)
    latents = torch.randn(1, TINY.vae.z_dim, 9, TINY.latent_height, TINY.latent_width)
    plain = decode_video(bundle.vae, latents)
    vae = accelerate_vae(bundle.vae, SpeedConfig(compile_backend="aot_eager"))
    assert vae.channels_last
    inputs: list[torch.Tensor] = []
    for module in vae.modules():
        if isinstance(module, CausalConv3d):
            module.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    torch.testing.assert_close(decode_video(vae, latents), plain, rtol=1e-5, atol=1e-5)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch.testing.assert_close(decode_video(vae, latents), plain, rtol=1e-5, atol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # a new video: no new graphs
    # CPU Conv3d returns NCDHW whatever it gets, so only the convs fed by channels-last 2D ops (the
    # upsamples) see channels-last here; on CUDA every one does (benchmarks/check_full_size.py).
    assert any(
        x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous() for x in inputs
    )


def test_shipped_speed_settings_render_the_same_frames():
    torch._dynamo.reset()
    plain = frames(ModelBundle.random(TINY, "cpu", torch.float32, seed=4))
    shipped = SpeedConfig(compile_backend="aot_eager")
    fast = frames(accelerate(ModelBundle.random(TINY, "cpu", torch.float32, seed=4), shipped))
    # float32 convs in another layout sum in another order: at most one uint8 step, rarely
    assert np.abs(fast.astype(int) - plain).max() <= 1
    assert (fast != plain).mean() < 1e-3
