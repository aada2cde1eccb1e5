"""Seeded random weights for every parameter of a module: the `tiny` preset, tests and GPU benchmarks.

Upstream initialisation zeroes the DiT output head (so an untrained model predicts a constant) and
leaves norms at one; tests built on that would pass with half the weights never loaded. Here every
tensor gets random values at a scale that keeps activations finite through deep stacks.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

_NORM_MARKERS = ("norm", "gamma")
ModuleT = TypeVar("ModuleT", bound=nn.Module)


@torch.no_grad()
def randomize_(module: ModuleT, seed: int) -> ModuleT:
    """Fill every parameter in place, drawing on the parameters' device (a 5.7B-parameter encoder
    is filled on the GPU in a second). The same seed on the same device type gives the same weights.
    """
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in module.named_parameters():
        device = param.device
        gen = generators.setdefault(device, torch.Generator(device).manual_seed(seed))
        param.normal_(generator=gen)
        if any(marker in name for marker in _NORM_MARKERS):
            param.mul_(0.1).add_(1.0)  # scales around one
        elif name.endswith("modulation"):
            param.div_(param.shape[-1] ** 0.5)  # as upstream: randn / sqrt(dim)
        elif param.ndim >= 2:
            param.div_(param[0].numel() ** 0.5)  # fan-in of Linear (out, in), Conv (out, in, k...), Embedding
        else:
            param.mul_(0.02)  # biases
    return module
