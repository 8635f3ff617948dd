"""Drop-in for TRELLIS.2's samplers (`trellis2.pipelines.samplers`): guidance_strength g with
v = g v_cond + (1 − g) v_neg (g = 1 skips the negative pass), guidance_interval, and guidance_rescale φ.

    from flowkernels.compat.trellis2 import FlowEulerGuidanceIntervalSampler
    out = FlowEulerGuidanceIntervalSampler(1e-5).sample(model, noise, cond, neg_cond, steps=12,
        guidance_strength=7.5, guidance_interval=(0.6, 1.0), guidance_rescale=0.7)
"""
from __future__ import annotations

from typing import Tuple

import torch

from .._validation import check_real
from . import trellis_train as _train
from ._trellis_sampling import AttrDict, TrellisEulerBase, check_interval, trellis2_plan

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "AttrDict",
           "FlowMatchingLossMixin", "training_losses"]


def training_losses(denoiser, x_0, cond=None, **kwargs):
    """TRELLIS.2's trainer losses: as compat.trellis.training_losses with TRELLIS.2's defaults, a uniform t schedule
    (its SLat flow configs) and the denoiser under bf16 autocast (the loss stays fp32)."""
    kwargs.setdefault("t_schedule", {"name": "uniform"})
    kwargs.setdefault("autocast_dtype", torch.bfloat16)
    return _train.training_losses(denoiser, x_0, cond, **kwargs)


class FlowMatchingLossMixin(_train.FlowMatchingLossMixin):
    """TRELLIS.2 trainers: the denoiser runs under bf16 autocast."""
    loss_autocast_dtype = torch.bfloat16


class FlowEulerSampler(TrellisEulerBase):
    """Euler sampling of a flow-matching model (TRELLIS.2's signature, with tqdm_desc)."""


class FlowEulerCfgSampler(FlowEulerSampler):
    """Euler sampling with guidance v = g v_cond + (1 − g) v_neg and optional guidance_rescale."""
    _guidance_keys = ("neg_cond", "guidance_strength", "guidance_rescale")

    def _plan(self, t, cond, guidance):
        return trellis2_plan(t, cond, guidance, None)

    def _check_guidance(self, kwargs):
        check_real("guidance_rescale", kwargs.get("guidance_rescale", 0.0), 0.0, 1.0)

    def sample(self, model, noise, cond, neg_cond, steps: int = 50, rescale_t: float = 1.0,
               guidance_strength: float = 3.0, verbose: bool = True, **kwargs):
        return super().sample(model, noise, cond, steps, rescale_t, verbose, neg_cond=neg_cond,
                              guidance_strength=guidance_strength, **kwargs)


class FlowEulerGuidanceIntervalSampler(FlowEulerCfgSampler):
    """As FlowEulerCfgSampler, with guidance only where guidance_interval[0] <= t <= guidance_interval[1]."""
    _guidance_keys = ("neg_cond", "guidance_strength", "guidance_rescale", "guidance_interval")

    def _plan(self, t, cond, guidance):
        return trellis2_plan(t, cond, guidance, "guidance_interval")

    def _check_guidance(self, kwargs):
        super()._check_guidance(kwargs)
        if "guidance_interval" in kwargs:
            check_interval("guidance_interval", kwargs["guidance_interval"])

    def sample(self, model, noise, cond, neg_cond, steps: int = 50, rescale_t: float = 1.0,
               guidance_strength: float = 3.0, guidance_interval: Tuple[float, float] = (0.0, 1.0),
               verbose: bool = True, **kwargs):
        return TrellisEulerBase.sample(self, model, noise, cond, steps, rescale_t, verbose, neg_cond=neg_cond,
                                       guidance_strength=guidance_strength, guidance_interval=guidance_interval,
                                       **kwargs)
