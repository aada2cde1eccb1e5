"""Flow-matching timesteps of the Self Forcing DMD checkpoint (SF:utils/scheduler.py, configs/*.yaml).

Convention: x_t = (1 - sigma) * x0 + sigma * noise, the model predicts v = noise - x0, and the
timestep fed to the model is t = 1000 * sigma.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

NUM_TRAIN_TIMESTEPS = 1000


def shifted_timesteps(shift: float = 5.0, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The 1000-entry training table: sigma = shift*s / (1 + (shift-1)*s), s from 1 down to 1/1000."""
    s = torch.linspace(1.0, 0.0, num_train_timesteps + 1, dtype=torch.float32)[:-1]
    sigma = shift * s / (1 + (shift - 1) * s)
    return sigma * num_train_timesteps


def warped_denoising_timesteps(
    steps: Sequence[int] = (1000, 750, 500, 250), shift: float = 5.0
) -> tuple[float, ...]:
    """`warp_denoising_step`: look nominal steps up in the shifted table -> (1000, 937.5, 833.33, 625)."""
    table = torch.cat([shifted_timesteps(shift), torch.zeros(1)])
    index = NUM_TRAIN_TIMESTEPS - torch.tensor(steps)
    return tuple(float(t) for t in table[index])


def flow_to_x0(x_t: torch.Tensor, flow: torch.Tensor, sigma: float) -> torch.Tensor:
    """x0 = x_t - sigma * v, in float64 as upstream, cast back to the latents' dtype."""
    return (x_t.double() - sigma * flow.double()).to(x_t.dtype)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """Re-noise a clean estimate to level sigma, mixing in float32 then casting to the noise dtype."""
    return ((1 - sigma) * x0.float() + sigma * noise.float()).to(noise.dtype)
