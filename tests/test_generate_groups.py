"""Clips that share forwards (`ClipGenerator.stream_group`): each clip gets the frames it gets alone.

The tiny preset in float32 on the CPU, random weights. The windows are shrunk to 6-7 frames so that a
12-latent-frame clip (4 chunks) overflows them from chunk 2 on: deep-forcing compresses at chunks 2
and 3, the sink policies roll and move their sinks, so every per-clip decision of a policy (top-C per
batch item, above all) runs on a batch of two.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch

from pipeline.generate import ClipGenerator, ClipRequest
from pipeline.model.bundle import ModelBundle
from pipeline.model.vae import DecodeStream
from pipeline.spec.cache import WINDOW_FRAMES, FifoParams, policy_params
from pipeline.spec.model import SELF_FORCING_1_3B, TINY
from pipeline.spec.storyboard import Segment, Storyboard

GROUP = [
    ClipRequest("a red fox trots through fresh snow", 7),
    ClipRequest("a heron wades in the shallows", 11),
]
SMALL_WINDOWS: dict[str, dict[str, Any]] = {
    "fifo": {"window_frames": 6},
    "sink": {"sink_frames": 3, "window_frames": 6},
    "rolling-sink": {"window_frames": 6},
    "deep-sink": {"sink_frames": 3, "window_frames": 6},
    "deep-forcing": {"sink_frames": 1, "budget_frames": 6, "recent_frames": 4, "window_frames": 7},
}
CONFIGS = [*SMALL_WINDOWS.items(), ("deep-forcing", {**SMALL_WINDOWS["deep-forcing"], "layout": "paper"})]
CONFIG_IDS = [*SMALL_WINDOWS, "deep-forcing-paper"]
LATENT_FRAMES = 12
# Relative to the video's norm: batched float32 kernels may sum in another order, nothing else may differ
FP32_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def generator() -> ClipGenerator:
    return ClipGenerator(ModelBundle.random(TINY, "cpu", torch.float32, seed=0))


def decoded_pixels(
    generator: ClipGenerator, monkeypatch: pytest.MonkeyPatch
) -> dict[int, list[torch.Tensor]]:
    """Every VAE output from now on, by decode stream (one per clip), in float: the frames before rounding."""
    outputs: dict[int, list[torch.Tensor]] = {}
    streams: list[DecodeStream] = []  # kept alive, so that no later stream gets a finished one's id
    decode = generator.bundle.vae.decode

    def recording(latents: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        pixels = decode(latents, stream)
        if id(stream) not in outputs:
            streams.append(stream)
        outputs.setdefault(id(stream), []).append(pixels.clone())
        return pixels

    monkeypatch.setattr(generator.bundle.vae, "decode", recording)
    return outputs


def pixels_of(outputs: dict[int, list[torch.Tensor]]) -> Iterator[torch.Tensor]:
    """Each clip's whole video, in the order the clips were first decoded."""
    return (torch.cat(chunks, dim=2) for chunks in outputs.values())


@pytest.mark.slow  # 3 renders of 4 chunks per policy
@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_each_clip_of_a_group_gets_the_frames_and_telemetry_it_gets_alone(
    generator: ClipGenerator, monkeypatch: pytest.MonkeyPatch, name: str, params: dict[str, Any]
) -> None:
    cache = policy_params(name, params, TINY.chunk_frames)
    alone_outputs = decoded_pixels(generator, monkeypatch)
    alone_streams = [generator.stream(c.prompt, c.seed, LATENT_FRAMES, cache) for c in GROUP]
    alone_frames = [np.concatenate(list(stream)) for stream in alone_streams]
    alone = list(pixels_of(alone_outputs))

    group_outputs = decoded_pixels(generator, monkeypatch)
    group = generator.stream_group(GROUP, LATENT_FRAMES, cache)
    chunks = list(group)
    together = list(pixels_of(group_outputs))

    assert len(together) == len(alone) == 2
    for clip, (pixels, reference) in enumerate(zip(together, alone, strict=True)):
        error = ((pixels - reference).norm() / reference.norm()).item()
        assert error < FP32_TOLERANCE, f"clip {clip}: relative error {error:.2e}"
        frames = np.concatenate([frames for chunk in chunks if (frames := chunk[clip]) is not None])
        assert frames.shape == alone_frames[clip].shape == (TINY.pixel_frames(LATENT_FRAMES), 64, 112, 3)
        # a rounding of 1e-5 can tip a pixel over a uint8 boundary, and nothing more
        assert np.abs(frames.astype(int) - alone_frames[clip]).max() <= 1
        assert group.stats(clip).cache_telemetry == alone_streams[clip].stats.cache_telemetry
    assert not torch.equal(together[0], together[1])  # two clips, not one twice
    if name == "deep-forcing":
        assert group.stats(0).cache_telemetry["compressions"] == 2


def test_a_group_shares_its_forwards_and_each_clip_reports_its_share(generator: ClipGenerator) -> None:
    group = generator.stream_group(GROUP, 6, FifoParams())
    chunks = list(group)

    shapes = [[None if c is None else c.shape for c in chunk] for chunk in chunks]
    assert shapes == [[(9, 64, 112, 3)] * 2, [(12, 64, 112, 3)] * 2]
    first, second = group.stats(0), group.stats(1)
    assert first.clips_per_forward == second.clips_per_forward == 2
    assert first.dit_s == second.dit_s and len(first.dit_s) == 2 and all(t > 0 for t in first.dit_s)
    assert all(t > 0 for t in first.vae_s + second.vae_s)
    assert (first.prompt_tokens, second.prompt_tokens) == (35, 30)


def test_a_dropped_clip_is_no_longer_decoded_and_the_others_go_on(
    generator: ClipGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = decoded_pixels(generator, monkeypatch)
    group = generator.stream_group(GROUP, 9, FifoParams())
    first = next(group)
    group.drop(0)
    rest = list(group)

    assert [frames is None for frames in first] == [False, False]
    assert [[frames is None for frames in chunk] for chunk in rest] == [[True, False], [True, False]]
    assert sorted(len(chunks) for chunks in outputs.values()) == [1, 3]  # clip 0 decoded its first chunk only


def test_dropping_every_clip_stops_the_group(generator: ClipGenerator) -> None:
    group = generator.stream_group(GROUP, 9, FifoParams())
    next(group)
    group.drop(0)
    group.drop(1)
    assert list(group) == []


def test_a_storyboard_is_refused_in_a_group_before_any_work(generator: ClipGenerator) -> None:
    story = Storyboard((Segment("a fox walks", 0, 3), Segment("the fox sleeps", 3, 3)), "none")
    with pytest.raises(
        ValueError, match=r"a storyboard renders in a group of its own, not with 1 other clip"
    ):
        generator.stream_group([ClipRequest(story, 1), GROUP[0]], 6, FifoParams())


def full_size_generator(monkeypatch: pytest.MonkeyPatch, free_gb: float) -> ClipGenerator:
    """The sizing arithmetic of the 1.3B model on a GPU with `free_gb` GB free (nothing runs on it)."""
    full_size = SimpleNamespace(
        preset=SELF_FORCING_1_3B, dit=SimpleNamespace(dtype=torch.bfloat16), device=None
    )
    full_size.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(free_gb * 10**9), 141 * 10**9))
    return ClipGenerator(cast(ModelBundle, full_size))


@pytest.mark.parametrize(
    ("free_gb", "limit", "clips"),
    [(20, 2, 1), (76, 2, 2), (76, 8, 8), (130, 16, 16), (0, 2, 0)],
    ids=["24GB-card", "80GB-card", "80GB-card-limit-8", "H200-limit-16", "nothing-free"],
)
def test_a_group_is_as_large_as_the_free_device_memory_holds_at_full_size(
    monkeypatch: pytest.MonkeyPatch, free_gb: int, limit: int, clips: int
) -> None:
    """A 60 s clip of the 1.3B model: a 6 GB cache (21 frames), ~12 GB for the first clip, ~6.2 GB for each
    further one (benchmarks/README.md measured 15.9 GiB for one clip and 23.4 GiB for two)."""
    generator = full_size_generator(monkeypatch, free_gb)
    assert generator.clips_that_fit(WINDOW_FRAMES, limit) == clips
    if free_gb > 60:  # 30 clips' caches would not fit in 76 GB
        assert generator.clips_that_fit(WINDOW_FRAMES, 30) < 30


UMT5_XXL_BYTES = 11_361_820_672  # 5,680,910,336 bf16 parameters (docs/model.md)


@pytest.mark.parametrize(
    ("free_gb", "clips", "fits_beside"),
    [(20, 1, 0), (29, 2, 1), (76, 2, 2), (136, 2, 2)],
    ids=["24GB-card", "32GB-card", "80GB-card", "H200"],
)
def test_the_text_encoder_stays_on_the_gpu_only_where_the_group_still_fits_beside_it(
    monkeypatch: pytest.MonkeyPatch, free_gb: float, clips: int, fits_beside: int
) -> None:
    """The 11.4 GB encoder stays resident where the group the free memory sized still fits beside it: not
    on a 24 GB card (one clip needs ~12 GB of its ~20 GB free), nor on a 32 GB one (two clips, or one
    beside the encoder), but on 80 GB cards and H200s."""
    generator = full_size_generator(monkeypatch, free_gb)
    assert generator.clips_that_fit(WINDOW_FRAMES, 2) == clips
    assert generator.clips_that_fit(WINDOW_FRAMES, clips, beside_bytes=UMT5_XXL_BYTES) == fits_beside


def test_a_cpu_renders_one_clip_per_forward(generator: ClipGenerator) -> None:
    assert generator.clips_that_fit(WINDOW_FRAMES, 4) == 1
