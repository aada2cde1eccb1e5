import torch

from pipeline.model.scheduler import add_noise, flow_to_x0, shifted_timesteps, warped_denoising_timesteps


def test_warped_timesteps_match_the_released_config():
    assert warped_denoising_timesteps() == (1000.0, 937.5, torch.tensor(833.3333).item(), 625.0)


def test_shifted_table_runs_from_1000_down_to_about_5():
    table = shifted_timesteps()
    assert table.shape == (1000,)
    assert table[0].item() == 1000.0
    assert abs(table[-1].item() - 4.98) < 0.01


def test_flow_convention_recovers_x0_and_renoises_to_the_requested_level():
    x0, noise = torch.randn(2, 4, dtype=torch.float64)
    sigma = 0.625
    x_t = add_noise(x0, noise, sigma).double()
    torch.testing.assert_close(flow_to_x0(x_t, noise - x0, sigma), x0)
