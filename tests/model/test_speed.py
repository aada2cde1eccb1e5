"""Speed switches keep outputs within tolerance of the plain model (tiny preset, CPU)."""

from dataclasses import fields, replace
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from pipeline.generate import ClipGenerator
from pipeline.model import vae as vae_module
from pipeline.model.attention import KeySplitAttention, sdpa
from pipeline.model.bundle import ModelBundle
from pipeline.model.speed import SpeedConfig, accelerate, accelerate_vae, self_attention_kernel
from pipeline.model.vae import CausalConv3d, DecodeStream, Elementwise, WanVAEDecoder, cudnn_benchmark_limit
from pipeline.spec.cache import DeepForcingParams
from pipeline.spec.model import TINY


def frames(bundle: ModelBundle) -> np.ndarray:
    return np.concatenate(
        list(ClipGenerator(bundle).stream("a lighthouse at dusk", 5, 27, DeepForcingParams()))
    )


@pytest.mark.slow
def test_compiled_blocks_render_the_same_frames_and_share_one_graph_across_layers():
    # More layers than dynamo's recompile limit (8): a graph per layer would leave most layers eager.
    deep = replace(TINY, dit=replace(TINY.dit, num_layers=10))
    torch._dynamo.reset()
    plain = frames(ModelBundle.random(deep, "cpu", torch.float32, seed=4))
    dit_only = SpeedConfig(
        compile_backend="aot_eager", vae_channels_last=False, compile_vae=False, vae_phase_convs=False
    )
    fast = accelerate(ModelBundle.random(deep, "cpu", torch.float32, seed=4), dit_only)
    np.testing.assert_array_equal(frames(fast), plain)
    # one graph before and one after the eager cache lookup, shared by every block and chunk (and by
    # the context pass's last block, which stops at the lookup: dit.cache_chunk)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


def test_unknown_attention_order_is_rejected_with_the_choices():
    choices = r"\['auto', 'cudnn', 'default', 'flash3', 'flash4'\]"
    with pytest.raises(ValueError, match=rf"attention='fastest'; choose one of {choices}"):
        SpeedConfig(attention="fastest")
    with pytest.raises(ValueError, match=r"attention_key_splits=0 must be >= 1; 1 means no split"):
        SpeedConfig(attention_key_splits=0)


def test_every_attention_choice_leaves_plain_sdpa_on_cpu():
    for choice in ("auto", "flash3", "flash4", "cudnn", "default"):
        assert self_attention_kernel(SpeedConfig(attention=choice), torch.device("cpu"), TINY) is sdpa


@pytest.mark.slow
def test_key_splits_render_the_frames_of_whole_attention_eager_and_compiled():
    # Through a deep-forcing clip, whose key counts change from chunk to chunk; compiled, the merge
    # runs inside the block's graph.
    torch._dynamo.reset()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # reset() keeps the counters
    plain = frames(ModelBundle.random(TINY, "cpu", torch.float32, seed=4))
    split = ModelBundle.random(TINY, "cpu", torch.float32, seed=4)
    split.dit.self_attention = KeySplitAttention(splits=2)  # split the tiny model's few keys
    eager = frames(split)
    dit_only = SpeedConfig(
        compile_backend="aot_eager", vae_channels_last=False, compile_vae=False, vae_phase_convs=False
    )
    accelerate(split, dit_only)
    assert split.dit.self_attention is sdpa  # on CPU accelerate() leaves attention whole ...
    split.dit.self_attention = KeySplitAttention(splits=2)  # ... so split as a GPU would
    for fast in (eager, frames(split)):
        # float32 sums in another order: at most one uint8 step, rarely
        assert np.abs(fast.astype(int) - plain).max() <= 1
        assert (fast != plain).mean() < 1e-3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before == 2  # one pair, all layers


def decode_video(vae: WanVAEDecoder, latents: torch.Tensor) -> tuple[torch.Tensor, DecodeStream]:
    stream = vae.start_stream()
    chunks = [vae.decode(latents[:, :, i : i + 3], stream) for i in range(0, latents.shape[2], 3)]
    return torch.cat(chunks, dim=2), stream


@pytest.mark.slow
def test_fast_vae_decodes_the_same_pixels_without_recompiling_per_video():
    torch._dynamo.reset()
    bundle = ModelBundle.random(TINY, "cpu", torch.float32, seed=3)
    latents = torch.randn(1, TINY.vae.z_dim, 9, TINY.latent_height, TINY.latent_width)
    plain, plain_stream = decode_video(bundle.vae, latents)
    vae = accelerate_vae(bundle.vae, SpeedConfig(compile_backend="aot_eager"))
    assert vae.channels_last
    fast, stream = decode_video(vae, latents)
    # oneDNN sums a channels-last conv's products in another order than an NCDHW one's: float32 rounding,
    # up to ~5e-5 on activations of magnitude ~10 after the decoder's 30-odd convs
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch.testing.assert_close(decode_video(vae, latents)[0], plain, rtol=1e-4, atol=1e-4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # a new video: no new graphs
    with torch.inference_mode():  # as generation calls it: still the same graphs
        decode_video(vae, latents)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    # Every causal conv remembered the same frames for the next chunk (compiled, the copy is made
    # inside the producing kernel) ...
    assert stream.conv_inputs.keys() == plain_stream.conv_inputs.keys()
    for conv, frames in stream.conv_inputs.items():
        torch.testing.assert_close(frames, plain_stream.conv_inputs[conv], rtol=1e-4, atol=1e-4)
    # ... in its input's layout: channels-last end to end, as on CUDA (benchmarks/check_full_size.py)
    assert all(
        x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
        for x in stream.conv_inputs.values()
    )


@pytest.mark.slow
def test_fast_vae_compiles_each_op_between_convs_whole_below_the_recompile_limit():
    # Compiled whole, a residual block split at each eager conv into resumed pieces that traced again
    # per width, layout and chunk kind: ~20 graphs in the full-size decoder, a third of a warm
    # process's first clip, and past dynamo's limit of 8 per function some pieces silently ran eagerly.
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    bundle = ModelBundle.random(TINY, "cpu", torch.float32, seed=3)
    latents = torch.randn(1, TINY.vae.z_dim, 9, TINY.latent_height, TINY.latent_width)
    vae = accelerate_vae(bundle.vae, SpeedConfig(compile_backend="aot_eager"))
    decode_video(vae, latents)
    assert not counters["graph_break"]
    for op in fields(Elementwise):
        graphs = len(_debug_get_cache_entry_list(getattr(vae_module, op.name).__code__))
        if op.name in ("upsample_nearest", "add_bias"):  # the upsample convs' own: the phase convs'
            assert graphs == 0  # interleaving adds their bias
            continue
        # At least one each (the phases' interleaving too: compiled, it runs at memory speed on
        # channels-last frames), and below the limit: a graph per width, and on CPUs, whose convs
        # return NCDHW whatever they get, per width and layout.
        assert 1 <= graphs < torch._dynamo.config.recompile_limit, op.name


def test_only_the_full_resolution_residual_convs_search_all_cudnn_algorithms():
    vae = ModelBundle.random(TINY, "cpu", torch.float32, seed=3).vae
    accelerate_vae(vae, SpeedConfig(compile_vae=False))
    convs = [m for m in vae.modules() if isinstance(m, CausalConv3d)]
    searching = [conv for conv in convs if conv.search_all_algorithms]
    narrowest = min(conv.in_channels for conv in convs)
    assert len(searching) == 2 * (TINY.vae.num_res_blocks + 1)  # two per block of the last stage
    assert all(conv.in_channels == conv.out_channels == narrowest for conv in searching)
    # ... in a video's later chunks: the first chunk's shapes, run once per clip, are not worth it
    limits_seen: list[int] = []
    conv3d = vae_module.conv3d

    def recording_conv3d(*args: Any, **kwargs: Any) -> torch.Tensor:
        limits_seen.append(torch.backends.cudnn.benchmark_limit)
        return conv3d(*args, **kwargs)

    stream = vae.start_stream()
    latents = torch.randn(1, TINY.vae.z_dim, 3, TINY.latent_height, TINY.latent_width)
    with mock.patch.object(vae_module, "conv3d", recording_conv3d), torch.inference_mode():
        vae.decode(latents, stream)
        assert 0 not in limits_seen and limits_seen
        vae.decode(latents, stream)
    assert limits_seen.count(0) == len(searching)  # each searching conv once, in the second chunk
    limit = torch.backends.cudnn.benchmark_limit
    with cudnn_benchmark_limit(0):
        assert torch.backends.cudnn.benchmark_limit == 0
    assert torch.backends.cudnn.benchmark_limit == limit


@pytest.mark.slow
def test_shipped_speed_settings_render_the_same_frames():
    torch._dynamo.reset()
    plain = frames(ModelBundle.random(TINY, "cpu", torch.float32, seed=4))
    shipped = SpeedConfig(compile_backend="aot_eager")
    fast = frames(accelerate(ModelBundle.random(TINY, "cpu", torch.float32, seed=4), shipped))
    # float32 convs in another layout sum in another order: at most one uint8 step, rarely
    assert np.abs(fast.astype(int) - plain).max() <= 1
    assert (fast != plain).mean() < 1e-3


def test_the_ffn_gelu_joins_its_gemm_only_on_a_gpu():
    # cuBLASLt's epilogue GELU is the tanh one the model uses; on CPUs the same op applies the erf GELU
    bundle = accelerate(
        ModelBundle.random(TINY, "cpu", torch.float32, seed=4), SpeedConfig(compile_blocks=False)
    )
    assert [block.ffn.gelu_in_epilogue for block in bundle.dit.block_list] == [False] * TINY.dit.num_layers
