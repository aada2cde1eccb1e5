"""The real generator runs every policy, with no change to the model: the tiny preset, random weights.

36 latent frames (12 chunks) take each policy past the 21-frame window: deep-forcing compresses at
chunks 7, 9 and 11, the sink policies roll from chunk 7 on. That a repeat renders the same frames is
tested where it is cheaper: per cache in tests/cache/test_policies.py, per generator in
tests/test_generate.py, and across processes by the pinned frames.
"""

import numpy as np
import pytest
import torch
from cache_driver import POLICY_CONFIGS, POLICY_IDS

from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle
from pipeline.spec.cache import policy_params
from pipeline.spec.model import TINY

PROMPT, SEED, LATENT_FRAMES = "a red fox in the snow", 7, 36
Clip = tuple[list[np.ndarray], dict]  # a render's frame chunks and its cache telemetry


@pytest.fixture(scope="module")
def generator() -> ClipGenerator:
    return ClipGenerator(ModelBundle.random(TINY, "cpu", torch.float32))


def render(generator: ClipGenerator, name: str, **params) -> Clip:
    clip = generator.stream(PROMPT, SEED, LATENT_FRAMES, policy_params(name, params, TINY.chunk_frames))
    return list(clip), clip.stats.cache_telemetry


@pytest.fixture(scope="module")
def fifo_clip(generator: ClipGenerator) -> Clip:
    return render(generator, "fifo")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_generator_streams_every_policy_past_the_window_reproducibly(generator, fifo_clip, name, params):
    first, telemetry = fifo_clip if name == "fifo" else render(generator, name, **params)
    assert [c.shape for c in first] == [(9, 64, 112, 3)] + [(12, 64, 112, 3)] * 11
    assert all(c.dtype == np.uint8 for c in first)
    frames, fifo = np.concatenate(first), np.concatenate(fifo_clip[0])
    assert frames.shape[0] == TINY.pixel_frames(LATENT_FRAMES) == 141
    if name != "fifo":  # chunks 0-6 see the whole history under every policy; later ones do not
        before = TINY.pixel_frames(21)
        assert np.array_equal(frames[:before], fifo[:before])
        assert not np.array_equal(frames[before:], fifo[before:])
    if name == "deep-forcing":
        assert telemetry["compressions"] == 3
