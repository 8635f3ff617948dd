"""Drop-ins for Hunyuan3D-2.1's schedulers (`hy3dshape.schedulers`): FlowMatchEulerDiscreteScheduler and
ConsistencyFlowMatchEulerDiscreteScheduler, with the same constructors, tables (timesteps / sigmas, t: 0 noise →
1 data, 1.0 appended), `set_timesteps`, `scale_noise` and `step` outputs; `step` is one fused pass.

    # the pipeline's config: scheduler target flowkernels.compat.hunyuan3d.FlowMatchEulerDiscreteScheduler
    from flowkernels.compat.hunyuan3d import FlowMatchEulerDiscreteScheduler

`config` is a dict with attribute access (the pipeline reads `scheduler.config.num_train_timesteps`); these classes
do not need diffusers (the originals' ConfigMixin loading and saving is not provided). `step` computes
x + (σ_next − σ)·v in fp32 with σ_next − σ formed in fp32 as the original forms it, and stores the result in the
model output's dtype; float64 tensors and tensors that require grad keep the original's arithmetic op for op.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..sampling import unchecked_guided_step as guided_step
from .diffusers import _StepIndex, _check_steps, _original_arithmetic, step_table

__all__ = ["FlowMatchEulerDiscreteScheduler", "ConsistencyFlowMatchEulerDiscreteScheduler",
           "FlowMatchEulerDiscreteSchedulerOutput", "ConsistencyFlowMatchEulerDiscreteSchedulerOutput"]


class SchedulerConfig(dict):
    """The constructor arguments, readable as config.name or config["name"] (diffusers' FrozenDict does both)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class FlowMatchEulerDiscreteSchedulerOutput:
    prev_sample: torch.Tensor

    def __getitem__(self, i):  # diffusers' BaseOutput allows output[0]
        return (self.prev_sample,)[i]


@dataclass
class ConsistencyFlowMatchEulerDiscreteSchedulerOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor

    def __getitem__(self, i):
        return (self.prev_sample, self.pred_original_sample)[i]


class FlowMatchEulerDiscreteScheduler(_StepIndex):
    """hy3dshape.schedulers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0,
    use_dynamic_shifting=False): diffusers' scheduler with reversed time (t: 0 noise → 1 data)."""

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting=False):
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps={num_train_timesteps!r} must be an integer >= 1")
        if not shift > 0:
            raise ValueError(f"shift={shift!r} must be > 0")
        self.config = SchedulerConfig(num_train_timesteps=num_train_timesteps, shift=shift,
                                      use_dynamic_shifting=use_dynamic_shifting)
        timesteps = torch.from_numpy(np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32))
        sigmas = timesteps / num_train_timesteps
        if not use_dynamic_shifting:
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.timesteps = sigmas * num_train_timesteps
        self._step_index = None
        self._begin_index = None
        self.sigmas = sigmas.to("cpu")
        # the original's names: sigma_min is the last (largest) training sigma
        self.sigma_min = self.sigmas[-1].item()
        self.sigma_max = self.sigmas[0].item()
        self._table = None

    def time_shift(self, mu: float, sigma: float, t):
        with np.errstate(divide="ignore"):  # t = 0 maps to 0, as in the original
            return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None, sigmas=None,
                      mu: Optional[float] = None):
        """timesteps = σ·N from linspace(σ_first·N, σ_last·N, n) (or the given sigmas), shifted; sigmas get 1.0
        appended. The pipeline passes sigmas=np.linspace(0, 1, num_inference_steps)."""
        if self.config.use_dynamic_shifting and mu is None:
            raise ValueError("mu must be given when use_dynamic_shifting=True")
        if sigmas is None:
            _check_steps(num_inference_steps)
            if num_inference_steps is None:
                raise ValueError("num_inference_steps is None: pass it, or sigmas")
            self.num_inference_steps = num_inference_steps
            timesteps = np.linspace(self._sigma_to_t(self.sigma_max), self._sigma_to_t(self.sigma_min),
                                    num_inference_steps)
            sigmas = timesteps / self.config.num_train_timesteps
        else:  # the original needs a numpy array here; a list or tensor of values is accepted too
            sigmas = np.asarray(sigmas.cpu() if isinstance(sigmas, torch.Tensor) else sigmas, dtype=np.float64)
            if sigmas.ndim != 1 or sigmas.size < 1 or not np.isfinite(sigmas).all():
                raise ValueError(f"sigmas must be a 1-D sequence of finite values, got shape {sigmas.shape}")
            self.num_inference_steps = sigmas.size
        if self.config.use_dynamic_shifting:
            sigmas = self.time_shift(mu, 1.0, sigmas)
        else:
            shift = self.config.shift
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        sigmas = torch.from_numpy(np.asarray(sigmas)).to(dtype=torch.float32, device=device)
        self.timesteps = (sigmas * self.config.num_train_timesteps).to(device=device)
        self.sigmas = torch.cat([sigmas, torch.ones(1, device=sigmas.device)])
        self._table = step_table(self.sigmas)
        self._step_index = None
        self._begin_index = None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, s_churn: float = 0.0,
             s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0, generator=None,
             return_dict: bool = True):
        """x + (σ_next − σ)·v in fp32, stored in model_output's dtype."""
        if self._table is None:
            self._table = step_table(self.sigmas)
        row = self._next_row(self._table, self.sigmas, timestep, model_output, sample)
        if _original_arithmetic(model_output, sample):
            dt = self.sigmas[self.step_index + 1] - self.sigmas[self.step_index]
            prev = (sample.to(torch.float32) + dt.to(sample.device) * model_output).to(model_output.dtype)
        else:
            prev = torch.empty(sample.shape, dtype=model_output.dtype, device=sample.device)
            guided_step(sample.reshape(1, -1), model_output.reshape(1, -1), None, row, out=prev.view(1, -1),
                        backend=self.backend)
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev)


class ConsistencyFlowMatchEulerDiscreteScheduler(_StepIndex):
    """hy3dshape.schedulers.ConsistencyFlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, pcm_timesteps=50):
    the phased-consistency grid; `step` also returns pred_original_sample = x + (1 − σ)·v (one pass for both).
    As in the original, `set_timesteps(sigmas=...)` uses only the number of values given."""

    def __init__(self, num_train_timesteps: int = 1000, pcm_timesteps: int = 50):
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps={num_train_timesteps!r} must be an integer >= 1")
        if not isinstance(pcm_timesteps, int) or not 1 <= pcm_timesteps <= num_train_timesteps:
            raise ValueError(f"pcm_timesteps={pcm_timesteps!r} must be an integer in [1, num_train_timesteps]")
        self.config = SchedulerConfig(num_train_timesteps=num_train_timesteps, pcm_timesteps=pcm_timesteps)
        sigmas = np.linspace(0, 1, num_train_timesteps)
        step_ratio = num_train_timesteps // pcm_timesteps
        euler = (np.arange(1, pcm_timesteps) * step_ratio).round().astype(np.int64) - 1
        self.euler_timesteps = np.asarray([0] + euler.tolist())
        self.sigmas = torch.from_numpy(sigmas[self.euler_timesteps].copy()).to(dtype=torch.float32)
        self.timesteps = self.sigmas * num_train_timesteps
        self._step_index = None
        self._begin_index = None
        self.sigmas = self.sigmas.to("cpu")
        self.sigmas_ = None
        self._table = None

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None, sigmas=None):
        _check_steps(num_inference_steps)
        if num_inference_steps is None:
            if sigmas is None:
                raise ValueError("num_inference_steps is None: pass it, or sigmas")
            num_inference_steps = len(sigmas)
            _check_steps(num_inference_steps)
        self.num_inference_steps = num_inference_steps
        indices = np.floor(np.linspace(0, self.config.pcm_timesteps, num=num_inference_steps, endpoint=False))
        indices = torch.from_numpy(indices.astype(np.int64)).long()
        self.sigmas_ = self.sigmas[indices]
        self.timesteps = (self.sigmas_ * self.config.num_train_timesteps).to(device=device)
        self.sigmas_ = torch.cat([self.sigmas_, torch.ones(1, device=self.sigmas_.device)])
        # x_prev = x + (σ_next − σ) v and x0 = x + (1 − σ) v: one pass writes both
        self._table = step_table(self.sigmas_, x0_b=1.0 - self.sigmas_[:-1])
        self._step_index = None
        self._begin_index = None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True):
        if self.sigmas_ is None:
            raise ValueError("call set_timesteps before step")
        row = self._next_row(self._table, self.sigmas_, timestep, model_output, sample)
        if _original_arithmetic(model_output, sample):
            sigma, sigma_next = self.sigmas_[self.step_index], self.sigmas_[self.step_index + 1]
            x = sample.to(torch.float32)
            prev = (x + (sigma_next - sigma).to(x.device) * model_output).to(model_output.dtype)
            x0 = (x + (1.0 - sigma).to(x.device) * model_output).to(model_output.dtype)
        else:
            prev = torch.empty(sample.shape, dtype=model_output.dtype, device=sample.device)
            x0 = torch.empty_like(prev)
            guided_step(sample.reshape(1, -1), model_output.reshape(1, -1), None, row, out=prev.view(1, -1),
                        x0=x0.view(1, -1), backend=self.backend)
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return ConsistencyFlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=x0)
