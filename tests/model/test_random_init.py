"""pipeline/model/random_init.py: every parameter of every network gets random values, the head included."""

import pytest
import torch

from pipeline.model.dit import CausalWanDiT
from pipeline.model.random_init import randomize_
from pipeline.model.t5 import UMT5Encoder
from pipeline.model.vae import WanVAEDecoder
from pipeline.spec.model import TINY


@pytest.mark.parametrize(
    "build",
    [lambda: CausalWanDiT(TINY.dit), lambda: WanVAEDecoder(TINY.vae), lambda: UMT5Encoder(TINY.text_encoder)],
    ids=["dit", "vae", "umt5"],
)
def test_random_weights_touch_every_parameter_and_vary_within_it(build):
    module = build()
    with torch.no_grad():
        for param in module.parameters():
            param.fill_(float("nan"))  # whatever randomize_ skips stays NaN

    randomize_(module, seed=3)

    for name, param in module.named_parameters():
        assert torch.isfinite(param).all(), f"{name} was not randomised"
        assert param.numel() == 1 or param.std() > 0, f"{name} is constant"
    assert module.state_dict().keys() == dict(module.named_parameters()).keys()  # no buffers to forget


def test_the_same_seed_gives_the_same_weights_and_another_seed_others():
    first, second, other = (randomize_(CausalWanDiT(TINY.dit), seed) for seed in (3, 3, 4))
    for (name, a), b, c in zip(
        first.named_parameters(), second.parameters(), other.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name
