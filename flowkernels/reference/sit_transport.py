"""SiT's / Hunyuan3D-2.1's training transport as its own call sequence (transport/path.py and transport/transport.py
of both repositories), for the side-by-side tests of `compat.sit` and the end-to-end benchmark: the plans as classes
returning (coefficient, derivative) with Python scalars where the original has them, `sample` drawing the noise
first and then t on the CPU, `plan` calling compute_xt and compute_ut, the loss weighted through compute_drift.

Written from the formulas and the order of calls, not copied; `flow_matching.sit_plan` / `sit_loss` are the same
mathematics in one function each, this module is the order in which the original spends its time.
"""
from __future__ import annotations

import math

import torch

from .flow_matching import VP_SMAX, VP_SMIN, expand_t_like_x


class LinearPlan:
    """ICPlan: alpha = t, sigma = 1 - t."""

    def compute_alpha_t(self, t):
        return t, 1

    def compute_sigma_t(self, t):
        return 1 - t, -1

    def compute_d_alpha_alpha_ratio_t(self, t):
        return 1 / t

    def compute_drift(self, x, t):
        t = expand_t_like_x(t, x)
        ratio = self.compute_d_alpha_alpha_ratio_t(t)
        sigma_t, d_sigma_t = self.compute_sigma_t(t)
        return -(ratio * x), ratio * sigma_t ** 2 - sigma_t * d_sigma_t

    def compute_xt(self, t, x0, x1):
        t = expand_t_like_x(t, x1)
        alpha_t, _ = self.compute_alpha_t(t)
        sigma_t, _ = self.compute_sigma_t(t)
        return alpha_t * x1 + sigma_t * x0

    def compute_ut(self, t, x0, x1, xt):
        t = expand_t_like_x(t, x1)
        _, d_alpha_t = self.compute_alpha_t(t)
        _, d_sigma_t = self.compute_sigma_t(t)
        return d_alpha_t * x1 + d_sigma_t * x0

    def plan(self, t, x0, x1):
        xt = self.compute_xt(t, x0, x1)
        return t, xt, self.compute_ut(t, x0, x1, xt)


class GVPPlan(LinearPlan):
    """GVPCPlan: alpha = sin(pi t / 2), sigma = cos(pi t / 2)."""

    def compute_alpha_t(self, t):
        return torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2)

    def compute_sigma_t(self, t):
        return torch.cos(t * math.pi / 2), -math.pi / 2 * torch.sin(t * math.pi / 2)

    def compute_d_alpha_alpha_ratio_t(self, t):
        return math.pi / (2 * torch.tan(t * math.pi / 2))


class VPPlan(LinearPlan):
    """VPCPlan: alpha = exp(L), sigma = sqrt(1 - exp(2L)), drift variance beta(t) / 2."""

    def _log_mean_coeff(self, t):
        return -0.25 * ((1 - t) ** 2) * (VP_SMAX - VP_SMIN) - 0.5 * (1 - t) * VP_SMIN

    def _d_log_mean_coeff(self, t):
        return 0.5 * (1 - t) * (VP_SMAX - VP_SMIN) + 0.5 * VP_SMIN

    def compute_alpha_t(self, t):
        alpha_t = torch.exp(self._log_mean_coeff(t))
        return alpha_t, alpha_t * self._d_log_mean_coeff(t)

    def compute_sigma_t(self, t):
        p_sigma_t = 2 * self._log_mean_coeff(t)
        sigma_t = torch.sqrt(1 - torch.exp(p_sigma_t))
        return sigma_t, torch.exp(p_sigma_t) * (2 * self._d_log_mean_coeff(t)) / (-2 * sigma_t)

    def compute_drift(self, x, t):
        t = expand_t_like_x(t, x)
        beta_t = VP_SMIN + (1 - t) * (VP_SMAX - VP_SMIN)
        return -0.5 * beta_t * x, beta_t / 2


PLANS = {"Linear": LinearPlan, "GVP": GVPPlan, "VP": VPPlan}


def mean_flat(x):
    return torch.mean(x, dim=list(range(1, len(x.size()))))


class OriginalTransport:
    """Transport(model_type, path_type, loss_type, train_eps, sample_eps) with Hunyuan3D-2.1's time samplers
    ("uniform" on check_interval's [t0, t1]; "logit_normal" with the sqrt(shift) warp, not mapped to [t0, t1]).
    Names as `compat.sit.create_transport` takes them: prediction "velocity" / "noise" / "score", loss_weight None /
    "velocity" / "likelihood"; `create_original_transport` resolves train_eps and sample_eps as the original."""

    def __init__(self, path_type="Linear", prediction="velocity", loss_weight=None, train_eps=0.0, sample_eps=0.0,
                 train_sample_type="uniform", mean=0.0, std=1.0, shift_scale=1.0):
        self.path_sampler = PLANS[path_type]()
        self.model_type, self.loss_type = prediction, loss_weight
        self.train_eps, self.sample_eps = train_eps, sample_eps
        self.train_sample_type, self.mean, self.std, self.shift_scale = train_sample_type, mean, std, shift_scale

    def check_interval(self, train_eps, sample_eps):
        """The training interval (no SDE, not reversed, not eval)."""
        t0, t1 = 0, 1
        if isinstance(self.path_sampler, VPPlan):
            t1 = 1 - train_eps
        elif self.model_type != "velocity":
            t0, t1 = train_eps, 1 - train_eps
        return t0, t1

    def sample(self, x1):
        x0 = torch.randn_like(x1)
        if self.train_sample_type == "uniform":
            t0, t1 = self.check_interval(self.train_eps, self.sample_eps)
            t = torch.rand((x1.shape[0],)) * (t1 - t0) + t0
            t = t.to(x1)
        else:
            t = torch.randn((x1.shape[0],)) * self.std + self.mean
            t = t.to(x1)
            t = 1 / (1 + torch.exp(-t))
            root = math.sqrt(self.shift_scale)
            t = root * t / (1 + (root - 1) * t)
        return t, x0, x1

    def training_losses(self, model, x1, model_kwargs=None):
        if model_kwargs is None:
            model_kwargs = {}
        t, x0, x1 = self.sample(x1)
        t, xt, ut = self.path_sampler.plan(t, x0, x1)
        model_output = model(xt, t, **model_kwargs)
        B, *_, C = xt.shape
        assert model_output.size() == (B, *xt.size()[1:-1], C)
        terms = {"pred": model_output}
        if self.model_type == "velocity":
            terms["loss"] = mean_flat((model_output - ut) ** 2)
            return terms
        _, drift_var = self.path_sampler.compute_drift(xt, t)
        sigma_t, _ = self.path_sampler.compute_sigma_t(expand_t_like_x(t, xt))
        if self.loss_type == "velocity":
            weight = (drift_var / sigma_t) ** 2
        elif self.loss_type == "likelihood":
            weight = drift_var / (sigma_t ** 2)
        else:
            weight = 1
        if self.model_type == "noise":
            terms["loss"] = mean_flat(weight * ((model_output - x0) ** 2))
        else:
            terms["loss"] = mean_flat(weight * ((model_output * sigma_t + x0) ** 2))
        return terms


def create_original_transport(path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None,
                              sample_eps=None, train_sample_type="uniform", mean=0.0, std=1.0, shift_scale=1.0):
    """create_transport as the original resolves its arguments: any prediction but "noise" / "score" is velocity,
    any weight but "velocity" / "likelihood" none; train_eps defaults to 1e-5 (VP) or 1e-3 (non-velocity models on
    Linear / GVP) and is 0 otherwise. sample_eps is tested after train_eps was defaulted, so it stays as given
    (None by default) on those two branches, as in the original."""
    prediction = prediction if prediction in ("noise", "score") else "velocity"
    loss_weight = loss_weight if loss_weight in ("velocity", "likelihood") else None
    if path_type == "VP":
        train_eps = 1e-5 if train_eps is None else train_eps
        sample_eps = 1e-3 if train_eps is None else sample_eps
    elif prediction != "velocity":
        train_eps = 1e-3 if train_eps is None else train_eps
        sample_eps = 1e-3 if train_eps is None else sample_eps
    else:
        train_eps, sample_eps = 0, 0
    return OriginalTransport(path_type, prediction, loss_weight, train_eps, sample_eps, train_sample_type, mean, std,
                             shift_scale)
