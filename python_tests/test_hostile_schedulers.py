"""Hostile calls of the scheduler drop-ins (diffusers, Hunyuan3D-2.1) against the originals' behaviour."""
import pytest
import torch

from flowkernels.compat import diffusers as fk_diffusers
from flowkernels.compat import hunyuan3d_schedulers as hy
from helpers import assert_close

SCHEDULERS = {
    "diffusers": lambda: fk_diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
    "standalone": lambda: fk_diffusers.StandaloneFlowMatchEulerDiscreteScheduler(shift=3.0),
    "hunyuan3d": lambda: hy.FlowMatchEulerDiscreteScheduler(shift=3.0),
    "hunyuan3d-consistency": lambda: hy.ConsistencyFlowMatchEulerDiscreteScheduler(),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_step_keeps_the_gradient(name, dtype):
    """The originals' step is torch arithmetic, differentiable in model_output and sample (reward fine-tuning
    backpropagates through it). The fused step returned a tensor without history: loss.backward() then failed,
    or, with other terms in the loss, the sampler's gradient was silently dropped."""
    sched = SCHEDULERS[name]()
    sched.set_timesteps(3)
    sample = torch.randn(2, 4, 5).to(dtype).requires_grad_()
    model_output = torch.randn(2, 4, 5).to(dtype).requires_grad_()
    t = sched.timesteps[0]
    prev = sched.step(model_output, t, sample, return_dict=False)[0]
    assert prev.requires_grad and prev.dtype == dtype
    prev.float().sum().backward()
    sigmas = sched.sigmas_ if hasattr(sched, "sigmas_") and sched.sigmas_ is not None else sched.sigmas
    dt = float(sigmas[1] - sigmas[0])
    assert_close("d prev / d sample", sample.grad, torch.ones(2, 4, 5, dtype=torch.float64), 1e-2)
    assert_close("d prev / d model_output", model_output.grad, torch.full((2, 4, 5), dt, dtype=torch.float64),
                 1e-2)
    # under no_grad (how pipelines sample) the fused step runs and gives the same values
    sched.set_timesteps(3)
    with torch.no_grad():
        fused = sched.step(model_output, t, sample, return_dict=False)[0]
    assert not fused.requires_grad
    assert_close("fused step", fused, prev.detach(), 1e-2 if dtype == torch.bfloat16 else 1e-6)
