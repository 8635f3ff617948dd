"""Drop-in for TRELLIS's samplers (`trellis.pipelines.samplers`) and, in `trellis_train`, its flow-matching trainer.

    from flowkernels.compat.trellis import FlowEulerGuidanceIntervalSampler
    sampler = FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)
    out = sampler.sample(model, noise, cond, neg_cond, steps=25, cfg_strength=5.0, cfg_interval=(0.5, 1.0))
    out.samples, out.pred_x_t, out.pred_x_0

Same signatures, return objects and trajectories as TRELLIS; the guidance combine, update and x0 prediction run
as one fused kernel per step. TRELLIS.2's variants are in `flowkernels.compat.trellis2`.
"""
from __future__ import annotations

from typing import Tuple

from ._trellis_sampling import AttrDict, TrellisEulerBase, check_interval, trellis1_plan
from .trellis_train import FlowMatchingLossMixin, SparseFlowMatchingLossMixin, training_losses

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "AttrDict",
           "FlowMatchingLossMixin", "SparseFlowMatchingLossMixin", "training_losses"]


class FlowEulerSampler(TrellisEulerBase):
    """Euler sampling of a flow-matching model: `sample(model, noise, cond=None, steps=50, rescale_t=1.0,
    verbose=True, **kwargs)`."""


class FlowEulerCfgSampler(FlowEulerSampler):
    """Euler sampling with classifier-free guidance v = (1 + w) v_cond − w v_neg."""
    _guidance_keys = ("neg_cond", "cfg_strength")

    def _plan(self, t, cond, guidance):
        return trellis1_plan(t, cond, guidance, None)

    def sample(self, model, noise, cond, neg_cond, steps: int = 50, rescale_t: float = 1.0,
               cfg_strength: float = 3.0, verbose: bool = True, **kwargs):
        return super().sample(model, noise, cond, steps, rescale_t, verbose, neg_cond=neg_cond,
                              cfg_strength=cfg_strength, **kwargs)


class FlowEulerGuidanceIntervalSampler(FlowEulerSampler):
    """Euler sampling with classifier-free guidance only where cfg_interval[0] <= t <= cfg_interval[1]."""
    _guidance_keys = ("neg_cond", "cfg_strength", "cfg_interval")

    def _plan(self, t, cond, guidance):
        return trellis1_plan(t, cond, guidance, "cfg_interval")

    def _check_guidance(self, kwargs):
        if "cfg_interval" in kwargs:
            check_interval("cfg_interval", kwargs["cfg_interval"])

    def sample(self, model, noise, cond, neg_cond, steps: int = 50, rescale_t: float = 1.0,
               cfg_strength: float = 3.0, cfg_interval: Tuple[float, float] = (0.0, 1.0), verbose: bool = True,
               **kwargs):
        return super().sample(model, noise, cond, steps, rescale_t, verbose, neg_cond=neg_cond,
                              cfg_strength=cfg_strength, cfg_interval=cfg_interval, **kwargs)
