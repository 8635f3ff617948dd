"""Drop-in details where a swap-in user would otherwise get a different result or a crash: the TRELLIS trainer's
default time schedule, the sample_time argument checks, and model-output checks in every sampler."""
import pytest
import torch

from flowkernels.compat import trellis as T1
from helpers import DEVICE


def test_trellis_training_losses_default_schedule_is_logit_normal_0_1():
    """TRELLIS's FlowMatchingTrainer defaults to t_schedule logitNormal(mean 0, std 1); its sample_t draws
    torch.sigmoid(torch.randn(batch_size) * std + mean). Ours draws the same t from the same generator state."""
    seen = []

    def denoiser(x_t, t, cond=None):
        seen.append(t.detach().clone())
        return x_t * 0.5
    B = 257
    x0 = torch.randn(B, 3, device=DEVICE)
    state = torch.get_rng_state()
    T1.training_losses(denoiser, x0)
    torch.set_rng_state(state)
    mean, std = 0.0, 1.0
    t_trellis = torch.sigmoid(torch.randn(B) * std + mean).to(DEVICE).float()
    torch.testing.assert_close(seen[0], t_trellis * 1000, rtol=0, atol=0)
