"""Drop-in for diffusers' FlowMatchEulerDiscreteScheduler (SD3 / Flux-style rectified flow), with `step` on the fused
update kernel.

    from flowkernels.compat.diffusers import FlowMatchEulerDiscreteScheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)

When diffusers is installed, `FlowMatchEulerDiscreteScheduler` is a subclass of diffusers' own scheduler that only
replaces `step` (and builds the step table in `set_timesteps`): configuration, `from_config`, `from_pretrained`,
`save_pretrained`, the sigma schedules and every other method are diffusers' own, so pipelines accept it. diffusers
is imported on first access of the name, never by `import flowkernels`. Without diffusers the name is
`StandaloneFlowMatchEulerDiscreteScheduler`, a look-alike with the same constructor, `set_timesteps`, `timesteps`,
`sigmas`, `scale_noise` and `step` outputs (no config loading/saving; karras / exponential / beta spacings and
per-token timesteps raise a named error).

Either way, `step` with per-token timesteps, `stochastic_sampling`, float64 tensors or tensors that require grad
(with grad mode on) runs the original arithmetic (diffusers' own `step` where it is installed); otherwise
x + (σ_next − σ)·v is one fused pass in fp32, stored in model_output's dtype, with σ_next − σ formed in fp32 as
diffusers forms it, reading a per-run coefficient table on the device (no host copy per step).
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional, Union

import numpy as np
import torch

from ..flow_algebra import x0_coefficients
from ..sampling import step_coefficients, unchecked_guided_step as guided_step

__all__ = ["FlowMatchEulerDiscreteScheduler", "StandaloneFlowMatchEulerDiscreteScheduler",
           "FlowMatchEulerDiscreteSchedulerOutput"]


def step_table(sigmas: torch.Tensor, x0_b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The fused step's coefficient rows for x + (σ_{i+1} − σ_i) v, with the differences taken in fp32 as diffusers'
    step takes them, and the data prediction x0 = x − σ_i v (or x + x0_b[i] v), on sigmas' device. One host copy
    of the sigmas per schedule, none per step."""
    s = sigmas.detach().to("cpu", torch.float32)
    dt = (s[1:] - s[:-1]).tolist()  # fp32 differences, exact as Python floats
    x0_b = [x0_coefficients("sd3", sigma)[1] for sigma in s[:-1].tolist()] if x0_b is None else \
        x0_b.detach().to("cpu", torch.float32).tolist()
    rows = [step_coefficients(d, 1.0, 0.0, 1.0, b) for d, b in zip(dt, x0_b)]
    return torch.tensor(rows, dtype=torch.float32).to(sigmas.device, non_blocking=True)


def _check_step_args(timestep, model_output, sample):
    if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and not timestep.is_floating_point()):
        raise ValueError("timestep must be one of scheduler.timesteps, not an integer index (e.g. from enumerate)")
    for name, x in (("model_output", model_output), ("sample", sample)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output has shape {tuple(model_output.shape)} but sample has {tuple(sample.shape)}")
    if model_output.device != sample.device:
        raise ValueError(f"model_output is on {model_output.device} but sample is on {sample.device}")


def _check_steps(num_inference_steps):
    """diffusers builds an empty schedule for 0 or a negative count: a named error here instead."""
    if num_inference_steps is not None and (isinstance(num_inference_steps, bool) or
                                            not isinstance(num_inference_steps, numbers.Integral) or
                                            num_inference_steps < 1):
        raise ValueError(f"num_inference_steps={num_inference_steps!r} must be an integer >= 1")


def _fused_step(table_row, model_output, sample, backend):
    """x + dt·v in fp32 → model_output's dtype, as one pass over one long row."""
    prev = torch.empty(sample.shape, dtype=model_output.dtype, device=sample.device)
    guided_step(sample.reshape(1, -1), model_output.reshape(1, -1), None, table_row, out=prev.view(1, -1),
                backend=backend)
    return prev


def _original_arithmetic(model_output, sample) -> bool:
    """Cases the fused fp32 step does not serve, where the original's torch arithmetic is kept: float64 in, and a
    step autograd must see (the original's step is differentiable; the fused kernel writes outside autograd, so
    its result would silently carry no gradient)."""
    return model_output.dtype == torch.float64 or sample.dtype == torch.float64 or \
        (torch.is_grad_enabled() and (model_output.requires_grad or sample.requires_grad))


@functools.lru_cache(maxsize=None)
def diffusers_subclass():
    """The subclass of diffusers' FlowMatchEulerDiscreteScheduler with the fused step (None without diffusers)."""
    try:
        from diffusers.schedulers import scheduling_flow_match_euler_discrete as orig
    except ImportError:
        return None

    class FlowMatchEulerDiscreteScheduler(orig.FlowMatchEulerDiscreteScheduler):
        __doc__ = ("diffusers' FlowMatchEulerDiscreteScheduler with `step` as one fused pass "
                   "(flowkernels.compat.diffusers). `backend` (attribute): None, 'torch' or 'triton'.")
        backend = None
        _step_table = None
        _step_table_of = None

        def set_timesteps(self, num_inference_steps=None, *args, **kwargs):
            _check_steps(num_inference_steps)
            super().set_timesteps(num_inference_steps, *args, **kwargs)
            self._step_table, self._step_table_of = step_table(self.sigmas), self.sigmas

        def step(self, model_output, timestep, sample, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = float("inf"), s_noise: float = 1.0, generator=None, per_token_timesteps=None,
                 return_dict: bool = True):
            _check_step_args(timestep, model_output, sample)
            if per_token_timesteps is not None or self.config.stochastic_sampling or \
                    _original_arithmetic(model_output, sample):
                return super().step(model_output, timestep, sample, s_churn, s_tmin, s_tmax, s_noise, generator,
                                    per_token_timesteps, return_dict)
            if self.step_index is None:
                self._init_step_index(timestep)
            if self._step_table_of is not self.sigmas:  # set directly, not through set_timesteps
                self._step_table, self._step_table_of = step_table(self.sigmas), self.sigmas
            if self.step_index >= self._step_table.shape[0]:
                raise ValueError(f"step called {self.step_index + 1} times for {self._step_table.shape[0]} "
                                 "timesteps")
            prev = _fused_step(self._step_table[self.step_index].to(sample.device), model_output, sample,
                               self.backend)
            self._step_index += 1
            if not return_dict:
                return (prev,)
            return orig.FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev)

    FlowMatchEulerDiscreteScheduler.__module__ = __name__
    FlowMatchEulerDiscreteScheduler.__qualname__ = "FlowMatchEulerDiscreteScheduler"
    return FlowMatchEulerDiscreteScheduler


def __getattr__(name):
    """`FlowMatchEulerDiscreteScheduler` resolves on first access: diffusers' subclass, or the standalone one."""
    if name == "FlowMatchEulerDiscreteScheduler":
        cls = diffusers_subclass() or StandaloneFlowMatchEulerDiscreteScheduler
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class FlowMatchEulerDiscreteSchedulerOutput:
    prev_sample: torch.Tensor

    def __getitem__(self, i):  # diffusers' BaseOutput allows output[0]
        return (self.prev_sample,)[i]


class _StepIndex:
    """diffusers' step-index bookkeeping, shared by the standalone scheduler here and both Hunyuan3D schedulers."""
    order = 1
    backend = None  # None (Triton on CUDA, torch on CPU), "torch" or "triton"

    @property
    def step_index(self):
        return self._step_index

    @property
    def begin_index(self):
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        self._begin_index = begin_index

    def _sigma_to_t(self, sigma):
        return sigma * self.config.num_train_timesteps

    def index_for_timestep(self, timestep, schedule_timesteps=None):
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        indices = (schedule_timesteps == timestep).nonzero()
        if len(indices) == 0:
            raise ValueError(f"timestep {float(timestep)!r} is not one of scheduler.timesteps")
        return indices[1 if len(indices) > 1 else 0].item()

    def _init_step_index(self, timestep):
        if self.begin_index is None:
            if isinstance(timestep, torch.Tensor):
                timestep = timestep.to(self.timesteps.device)
            self._step_index = self.index_for_timestep(timestep)
        else:
            self._step_index = self._begin_index

    def __len__(self):
        return self.config.num_train_timesteps

    def scale_noise(self, sample: torch.Tensor, timestep, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The forward process σ·noise + (1 − σ)·sample at the given timestep(s), in sample's dtype."""
        if noise is None or not isinstance(noise, torch.Tensor) or noise.shape != sample.shape:
            raise ValueError(f"noise must be a tensor of sample's shape {tuple(sample.shape)}")
        sigmas = self.sigmas.to(device=sample.device, dtype=sample.dtype)
        schedule = self.timesteps.to(sample.device)
        timestep = torch.as_tensor(timestep).to(sample.device).reshape(-1)
        if self.begin_index is None:
            idx = [self.index_for_timestep(t, schedule) for t in timestep]
        elif self.step_index is not None:
            idx = [self.step_index] * timestep.shape[0]
        else:
            idx = [self.begin_index] * timestep.shape[0]
        sigma = sigmas[idx].flatten()
        sigma = sigma.view(-1, *([1] * (sample.dim() - 1)))
        return sigma * noise + (1.0 - sigma) * sample

    def _next_row(self, table, sigmas, timestep, model_output, sample):
        """Validate, find this step's index and return its table row (raising past the last step)."""
        _check_step_args(timestep, model_output, sample)
        if self.step_index is None:
            self._init_step_index(timestep)
        if self.step_index + 1 >= sigmas.shape[0]:
            raise ValueError(f"step called {self.step_index + 1} times for {sigmas.shape[0] - 1} timesteps")
        return table[self.step_index].to(sample.device)


class StandaloneFlowMatchEulerDiscreteScheduler(_StepIndex):
    """diffusers' FlowMatchEulerDiscreteScheduler without diffusers: the same constructor, tables and step."""
    order = 1
    init_noise_sigma = 1.0

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: Optional[float] = 0.5, max_shift: Optional[float] = 1.15,
                 base_image_seq_len: Optional[int] = 256, max_image_seq_len: Optional[int] = 4096,
                 invert_sigmas: bool = False, shift_terminal: Optional[float] = None,
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 time_shift_type: str = "exponential", stochastic_sampling: bool = False, backend: Optional[str] = None):
        for name, flag in (("use_karras_sigmas", use_karras_sigmas), ("use_exponential_sigmas", use_exponential_sigmas),
                           ("use_beta_sigmas", use_beta_sigmas)):
            if flag:
                raise NotImplementedError(f"{name}=True is not implemented by flowkernels' scheduler")
        if time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"time_shift_type={time_shift_type!r} must be 'exponential' or 'linear'")
        if not shift > 0:
            raise ValueError(f"shift={shift!r} must be > 0")
        self.config = SimpleNamespace(
            num_train_timesteps=num_train_timesteps, shift=shift, use_dynamic_shifting=use_dynamic_shifting,
            base_shift=base_shift, max_shift=max_shift, base_image_seq_len=base_image_seq_len,
            max_image_seq_len=max_image_seq_len, invert_sigmas=invert_sigmas, shift_terminal=shift_terminal,
            use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False,
            time_shift_type=time_shift_type, stochastic_sampling=stochastic_sampling)
        self.backend = backend
        timesteps = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1].copy()
        sigmas = torch.from_numpy(timesteps) / num_train_timesteps
        if not use_dynamic_shifting:
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.timesteps = sigmas * num_train_timesteps
        self._shift = shift
        self._step_index = None
        self._begin_index = None
        self.sigmas = sigmas.to("cpu")
        self.sigma_min = self.sigmas[-1].item()
        self.sigma_max = self.sigmas[0].item()
        self._coef = None

    # --- diffusers' small API ---------------------------------------------------------------------------------
    @property
    def shift(self):
        return self._shift

    def set_shift(self, shift: float):
        self._shift = shift

    def time_shift(self, mu: float, sigma: float, t):
        if self.config.time_shift_type == "exponential":
            return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)
        return mu / (mu + (1 / t - 1) ** sigma)

    def stretch_shift_to_terminal(self, t):
        one_minus_z = 1 - t
        scale_factor = one_minus_z[-1] / (1 - self.config.shift_terminal)
        return 1 - (one_minus_z / scale_factor)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device: Union[str, torch.device] = None,
                      sigmas=None, mu: Optional[float] = None, timesteps=None):
        cfg = self.config
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("mu must be given when use_dynamic_shifting=True")
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise ValueError("sigmas and timesteps must have the same length")
        if num_inference_steps is None:
            if sigmas is None and timesteps is None:
                raise ValueError("num_inference_steps is None: pass it, or sigmas / timesteps")
            num_inference_steps = len(sigmas) if sigmas is not None else len(timesteps)
        else:
            _check_steps(num_inference_steps)  # as diffusers: given sigmas / timesteps must hold exactly num_inference_steps values
            for name, given in (("sigmas", sigmas), ("timesteps", timesteps)):
                if given is not None and len(given) != num_inference_steps:
                    raise ValueError(f"{name} holds {len(given)} values but num_inference_steps="
                                     f"{num_inference_steps}: they must match when both are given")
        self.num_inference_steps = num_inference_steps
        given_timesteps = timesteps is not None
        if given_timesteps:
            timesteps = np.array(timesteps).astype(np.float32)
        if sigmas is None:
            if timesteps is None:
                timesteps = np.linspace(self._sigma_to_t(self.sigma_max), self._sigma_to_t(self.sigma_min),
                                        num_inference_steps)
            sigmas = timesteps / cfg.num_train_timesteps
        else:
            sigmas = np.array(sigmas).astype(np.float32)
            num_inference_steps = len(sigmas)
        if cfg.use_dynamic_shifting:
            sigmas = self.time_shift(mu, 1.0, sigmas)
        else:
            sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        if cfg.shift_terminal:
            sigmas = self.stretch_shift_to_terminal(sigmas)
        sigmas = torch.from_numpy(np.asarray(sigmas)).to(dtype=torch.float32, device=device)
        timesteps = sigmas * cfg.num_train_timesteps if not given_timesteps else \
            torch.from_numpy(timesteps).to(dtype=torch.float32, device=device)
        if cfg.invert_sigmas:
            sigmas = 1.0 - sigmas
            timesteps = sigmas * cfg.num_train_timesteps
            sigmas = torch.cat([sigmas, torch.ones(1, device=sigmas.device)])
        else:
            sigmas = torch.cat([sigmas, torch.zeros(1, device=sigmas.device)])
        self.timesteps = timesteps
        self.sigmas = sigmas
        self._step_index = None
        self._begin_index = None
        self._coef = step_table(sigmas)  # every step's update as one device table

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, s_churn: float = 0.0,
             s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: Optional[torch.Generator] = None, per_token_timesteps=None, return_dict: bool = True):
        """x_next = x + (σ_next − σ) · v in fp32, returned in model_output's dtype (one fused kernel)."""
        _check_step_args(timestep, model_output, sample)
        if per_token_timesteps is not None:
            raise NotImplementedError("per_token_timesteps is not implemented by flowkernels' scheduler")
        if self._coef is None:
            raise ValueError("call set_timesteps before step")
        if self.step_index is None:
            self._init_step_index(timestep)
        if self.step_index >= self._coef.shape[0]:
            raise ValueError(f"step called {self.step_index + 1} times for {self._coef.shape[0]} timesteps")
        if self.config.stochastic_sampling:
            sigma = self.sigmas[self.step_index]
            sigma_next = self.sigmas[self.step_index + 1]
            x0 = sample.to(torch.float32) - sigma * model_output
            noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)
            prev = ((1.0 - sigma_next) * x0 + sigma_next * noise).to(model_output.dtype)
        elif _original_arithmetic(model_output, sample):  # diffusers' float64 arithmetic, op for op
            dt = self.sigmas[self.step_index + 1] - self.sigmas[self.step_index]
            prev = (sample.to(torch.float32) + dt.to(sample.device) * model_output).to(model_output.dtype)
        else:
            prev = _fused_step(self._coef[self.step_index].to(sample.device), model_output, sample, self.backend)
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev)
