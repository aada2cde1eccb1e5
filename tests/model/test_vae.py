"""Tests for pipeline/model/vae.py: official names and shapes, streaming equivalence, checkpoint loading."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.model.checkpoint import CheckpointError, load_strict, read_state_dict
from pipeline.model.random_init import randomize_
from pipeline.model.vae import VAE_IGNORED_PREFIXES, Elementwise, UpsampleConv, WanVAEDecoder
from pipeline.spec.model import VAEConfig

TINY = VAEConfig(dim=8)  # the `tiny` preset's VAE: widths 32, 32, 32, 16, 8
SEED = 7
LATENT_FRAMES, LATENT_H, LATENT_W = 9, 4, 6


def official_decoder_shapes() -> dict[str, tuple[int, ...]]:
    """The `conv2.*` and `decoder.*` tensors of Wan2.1_VAE.pth, as docs/model.md §5.3 lists them."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, c_out: int, c_in: int, *kernel: int) -> None:
        shapes[f"{name}.weight"] = (c_out, c_in, *kernel)
        shapes[f"{name}.bias"] = (c_out,)

    def residual(name: str, c_in: int, c_out: int) -> None:
        shapes[f"{name}.residual.0.gamma"] = (c_in, 1, 1, 1)
        conv(f"{name}.residual.2", c_out, c_in, 3, 3, 3)
        shapes[f"{name}.residual.3.gamma"] = (c_out, 1, 1, 1)
        conv(f"{name}.residual.6", c_out, c_out, 3, 3, 3)
        if c_in != c_out:
            conv(f"{name}.shortcut", c_out, c_in, 1, 1, 1)

    def upsample(name: str, c: int, temporal: bool) -> None:
        conv(f"{name}.resample.1", c // 2, c, 3, 3)
        if temporal:
            conv(f"{name}.time_conv", 2 * c, c, 3, 1, 1)

    conv("conv2", 16, 16, 1, 1, 1)
    conv("decoder.conv1", 384, 16, 3, 3, 3)
    residual("decoder.middle.0", 384, 384)
    shapes["decoder.middle.1.norm.gamma"] = (384, 1, 1)
    conv("decoder.middle.1.to_qkv", 3 * 384, 384, 1, 1)
    conv("decoder.middle.1.proj", 384, 384, 1, 1)
    residual("decoder.middle.2", 384, 384)
    for index in (0, 1, 2):
        residual(f"decoder.upsamples.{index}", 384, 384)
    upsample("decoder.upsamples.3", 384, temporal=True)
    residual("decoder.upsamples.4", 192, 384)
    for index in (5, 6):
        residual(f"decoder.upsamples.{index}", 384, 384)
    upsample("decoder.upsamples.7", 384, temporal=True)
    for index in (8, 9, 10):
        residual(f"decoder.upsamples.{index}", 192, 192)
    upsample("decoder.upsamples.11", 192, temporal=False)
    for index in (12, 13, 14):
        residual(f"decoder.upsamples.{index}", 96, 96)
    shapes["decoder.head.0.gamma"] = (96, 1, 1, 1)
    conv("decoder.head.2", 3, 96, 3, 3, 3)
    return shapes


def random_decoder() -> WanVAEDecoder:
    model = WanVAEDecoder(TINY)
    randomize_(model, SEED)
    return model.eval()


@pytest.fixture(scope="module")
def decoder() -> WanVAEDecoder:
    return random_decoder()


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, TINY.z_dim, LATENT_FRAMES, LATENT_H, LATENT_W, generator=gen)  # (B, z, T, h, w)


@pytest.fixture(scope="module")
def whole_video(decoder: WanVAEDecoder, latents: torch.Tensor) -> torch.Tensor:
    """All latents decoded in a single call: the reference the streamed decodes must match."""
    pixels = decoder.decode(latents, decoder.start_stream())
    # Random weights must leave most pixels inside (-1, 1), or the clamp would hide mismatches.
    assert pixels.abs().lt(1.0).float().mean() > 0.5
    return pixels


def test_decoder_has_the_official_names_and_shapes() -> None:
    with torch.device("meta"):
        model = WanVAEDecoder(VAEConfig())
    built = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    expected = official_decoder_shapes()
    assert len(expected) == 108
    assert built == expected
    assert sum(math.prod(shape) for shape in expected.values()) == 73_295_603
    assert sum(p.numel() for p in model.parameters()) == 73_295_603


def test_default_config_strides_are_8_in_space_and_4_in_time() -> None:
    assert (VAEConfig().spatial_stride, VAEConfig().temporal_stride) == (8, 4)


def test_whole_video_gives_4t_minus_3_frames_at_8x_size(whole_video: torch.Tensor) -> None:
    assert whole_video.shape == (1, 3, 4 * LATENT_FRAMES - 3, 8 * LATENT_H, 8 * LATENT_W)


@pytest.mark.slow  # 4 s (3-frame chunks) to 12 s (1-frame chunks) on 2 cores: out of the quick loop
@pytest.mark.parametrize(("chunk", "frame_counts"), [(3, [9, 12, 12]), (1, [1] + [4] * 8)])
def test_streamed_chunks_equal_one_call_decode(
    decoder: WanVAEDecoder,
    latents: torch.Tensor,
    whole_video: torch.Tensor,
    chunk: int,
    frame_counts: list[int],
) -> None:
    # chunk=1 is upstream's own loop (one latent per decoder call, 'Rep' on the first call).
    stream = decoder.start_stream()
    pieces = [decoder.decode(latents[:, :, t : t + chunk], stream) for t in range(0, LATENT_FRAMES, chunk)]
    assert [piece.shape[2] for piece in pieces] == frame_counts
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole_video, rtol=0.0, atol=1e-5)


@pytest.mark.slow  # over 10 s on a loaded 2-core machine: out of the quick loop
def test_new_stream_after_a_video_decodes_like_a_fresh_module(
    decoder: WanVAEDecoder, latents: torch.Tensor
) -> None:
    first_video, second_video = latents[:, :, :4], latents[:, :, 4:].flip(2)
    stream = decoder.start_stream()
    decoder.decode(first_video[:, :, :2], stream)
    decoder.decode(first_video[:, :, 2:], stream)
    after_first = decoder.decode(second_video, decoder.start_stream())
    fresh = random_decoder()
    torch.testing.assert_close(
        after_first, fresh.decode(second_video, fresh.start_stream()), rtol=0.0, atol=0.0
    )


def test_decode_returns_the_module_dtype_clamped() -> None:
    model = random_decoder().to(torch.bfloat16)
    latents = torch.randn(1, TINY.z_dim, 2, 2, 2)  # float32 in, like a DiT kept in float32
    pixels = model.decode(latents, model.start_stream())
    assert pixels.dtype == torch.bfloat16
    assert pixels.shape == (1, 3, 5, 16, 16)
    assert pixels.abs().max() <= 1.0


def test_decode_rejects_latents_with_the_wrong_channel_count(decoder: WanVAEDecoder) -> None:
    with pytest.raises(ValueError) as info:
        decoder.decode(torch.zeros(1, 4, 3, 4, 6), decoder.start_stream())
    assert str(info.value) == "latents of shape (1, 4, 3, 4, 6) must be (B, 16, T, h, w), T >= 1"


def test_config_rejects_a_temporal_flag_per_missing_upsample() -> None:
    with pytest.raises(ValueError) as info:
        VAEConfig(temporal_upsample=(True, True))
    assert str(info.value) == (
        "temporal_upsample=(True, True) needs one flag per upsample, "
        "len(dim_mult) - 1 = 3 for dim_mult=(1, 2, 4, 4)"
    )


def official_style_file(decoder: WanVAEDecoder) -> dict[str, torch.Tensor]:
    """The decoder's tensors plus encoder tensors, as in Wan2.1_VAE.pth (which we must skip)."""
    tensors = {name: tensor.clone() for name, tensor in decoder.state_dict().items()}
    tensors["encoder.conv1.weight"] = torch.ones(8, 3, 3, 3, 3)
    tensors["encoder.head.0.gamma"] = torch.ones(32, 1, 1, 1)
    tensors["conv1.weight"] = torch.ones(32, 32, 1, 1, 1)
    tensors["conv1.bias"] = torch.zeros(32)
    return tensors


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip_skips_encoder_tensors(
    decoder: WanVAEDecoder, latents: torch.Tensor, whole_video: torch.Tensor, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"Wan2.1_VAE{suffix}"
    if suffix == ".safetensors":
        save_file(official_style_file(decoder), str(path))
    else:
        torch.save(official_style_file(decoder), path)
    with torch.device("meta"):
        loaded = WanVAEDecoder(TINY)
    load_strict(loaded, read_state_dict(path), path, ignore_prefixes=VAE_IGNORED_PREFIXES)
    torch.testing.assert_close(loaded.decode(latents, loaded.start_stream()), whole_video, rtol=0.0, atol=0.0)


def test_checkpoint_missing_a_decoder_tensor_names_file_and_key(
    decoder: WanVAEDecoder, tmp_path: Path
) -> None:
    path = tmp_path / "Wan2.1_VAE.pth"
    tensors = official_style_file(decoder)
    del tensors["decoder.head.2.bias"]
    torch.save(tensors, path)
    with torch.device("meta"):
        loaded = WanVAEDecoder(TINY)
    with pytest.raises(CheckpointError) as info:
        load_strict(loaded, read_state_dict(path), path, ignore_prefixes=VAE_IGNORED_PREFIXES)
    assert str(info.value) == (
        f"{path} does not match WanVAEDecoder (108 tensors expected):\n  1 missing: decoder.head.2.bias"
    )


def test_cpu_decodes_run_every_conv_through_onednn_not_the_im2col_kernel(
    decoder: WanVAEDecoder, latents: torch.Tensor
) -> None:
    # PyTorch picks its im2col conv3d for small batch-1 videos, 3-10x slower than oneDNN at these sizes
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiled:
        decoder.decode(latents, decoder.start_stream())
    ops = {event.key for event in profiled.key_averages()}
    assert "aten::mkldnn_convolution" in ops
    assert not {op for op in ops if op.startswith("aten::slow_conv")}


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_an_upsample_conv_as_four_phases_of_its_input_is_the_same_conv(layout: torch.memory_format) -> None:
    # odd sizes: the phases' windows run over the input's zero padding on every side
    conv = randomize_(UpsampleConv(6), seed=1)
    conv2d = conv[1]
    assert isinstance(conv2d, torch.nn.Conv2d)
    conv2d.weight.data = conv2d.weight.data.contiguous(memory_format=layout)
    frames = torch.randn(3, 6, 5, 7).contiguous(memory_format=layout)
    upsampled = conv(frames, Elementwise())
    conv.use_phase_weights()
    phases = conv(frames, Elementwise())
    torch.testing.assert_close(phases, upsampled, rtol=1e-5, atol=1e-5)
    assert phases.shape == (3, 3, 10, 14) and phases.is_contiguous(memory_format=layout)
    assert "phase_weight" not in conv.state_dict()  # derived, never saved or loaded
    moved = conv.to(torch.float64).phase_weight  # a buffer: it moves with the module
    assert moved is not None and moved.dtype == torch.float64


def test_a_decoder_with_phase_convs_decodes_the_same_video(
    decoder: WanVAEDecoder, latents: torch.Tensor, whole_video: torch.Tensor
) -> None:
    phased = copy.deepcopy(decoder)
    phased.use_phase_weights()
    torch.testing.assert_close(
        phased.decode(latents, phased.start_stream()), whole_video, rtol=1e-5, atol=1e-5
    )


def test_phase_convs_fold_weights_loaded_after_them_again() -> None:
    decoder, other = random_decoder(), randomize_(WanVAEDecoder(TINY), seed=SEED + 1)
    decoder.use_phase_weights()
    decoder.load_state_dict(other.state_dict())  # into a parent of the upsample convs
    upsamples = [
        (m, t) for m, t in zip(decoder.modules(), other.modules(), strict=True) if isinstance(m, UpsampleConv)
    ]
    assert upsamples
    for mine, theirs in upsamples:
        assert isinstance(mine[1], torch.nn.Conv2d) and isinstance(theirs, UpsampleConv)
        frames = torch.randn(2, mine[1].in_channels, 3, 5)
        torch.testing.assert_close(mine(frames, Elementwise()), theirs(frames, Elementwise()))
