"""Flow-matching training references, written the way SiT / Hunyuan3D-2.1, TRELLIS and diffusers write them."""
from __future__ import annotations

import math

import torch

VP_SMIN, VP_SMAX = 0.1, 20.0


def expand_t_like_x(t, x):
    return t.view(t.shape[0], *([1] * (x.dim() - 1)))


def sit_alpha_sigma(path: str, t):
    """(alpha_t, d alpha_t, sigma_t, d sigma_t) of SiT's ICPlan (Linear), GVPCPlan and VPCPlan."""
    path = path.lower()
    if path == "linear":
        return t, torch.ones_like(t), 1 - t, -torch.ones_like(t)
    if path == "gvp":
        return (torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2),
                torch.cos(t * math.pi / 2), -math.pi / 2 * torch.sin(t * math.pi / 2))
    if path == "vp":
        log_mean_coeff = -0.25 * ((1 - t) ** 2) * (VP_SMAX - VP_SMIN) - 0.5 * (1 - t) * VP_SMIN
        d_log_mean_coeff = 0.5 * (1 - t) * (VP_SMAX - VP_SMIN) + 0.5 * VP_SMIN
        alpha = torch.exp(log_mean_coeff)
        sigma = torch.sqrt(1 - torch.exp(2 * log_mean_coeff))
        return (alpha, alpha * d_log_mean_coeff, sigma,
                -torch.exp(2 * log_mean_coeff) * d_log_mean_coeff / sigma)
    raise ValueError(path)


def sit_plan(path: str, t, x0, x1):
    """x_t and u_t for noise x0 and data x1 (SiT's `path_sampler.plan`)."""
    alpha, d_alpha, sigma, d_sigma = (expand_t_like_x(c, x1) for c in sit_alpha_sigma(path, t))
    return alpha * x1 + sigma * x0, d_alpha * x1 + d_sigma * x0


def sit_drift_var(path: str, t):
    if path.lower() == "vp":
        return (VP_SMIN + (1 - t) * (VP_SMAX - VP_SMIN)) / 2
    alpha, d_alpha, sigma, d_sigma = sit_alpha_sigma(path, t)
    return (d_alpha / alpha) * sigma ** 2 - sigma * d_sigma


def mean_flat(x):
    return x.mean(dim=list(range(1, x.dim())))


def sit_loss(model_output, x1, x0, t, *, path="linear", prediction="velocity", loss_weight=None):
    """Per-sample loss of SiT's `Transport.training_losses` for given t and noise x0."""
    xt, ut = sit_plan(path, t, x0, x1)
    if prediction == "velocity":
        return mean_flat((model_output - ut) ** 2)
    drift_var = expand_t_like_x(sit_drift_var(path, t), x1)
    sigma_t = expand_t_like_x(sit_alpha_sigma(path, t)[2], x1)
    if loss_weight == "velocity":
        weight = (drift_var / sigma_t) ** 2
    elif loss_weight == "likelihood":
        weight = drift_var / (sigma_t ** 2)
    else:
        weight = 1
    if prediction == "noise":
        return mean_flat(weight * ((model_output - x0) ** 2))
    return mean_flat(weight * ((model_output * sigma_t + x0) ** 2))


def trellis_diffuse(x_0, t, noise, sigma_min=1e-5):
    t = expand_t_like_x(t, x_0)
    return (1 - t) * x_0 + (sigma_min + (1 - sigma_min) * t) * noise


def trellis_loss(pred, x_0, noise, t, sigma_min=1e-5):
    """Per-sample MSE of TRELLIS's FlowMatchingTrainer (target (1 - sigma_min) noise - x_0)."""
    target = (1 - sigma_min) * noise - x_0
    return mean_flat((pred - target) ** 2)


def sd3_noisy(model_input, sigmas, noise):
    sigmas = expand_t_like_x(sigmas, model_input)
    return (1.0 - sigmas) * model_input + sigmas * noise


def sd3_weighting(weighting, sigmas):
    if weighting == "sigma_sqrt":
        return (sigmas ** -2.0).float() if sigmas.dtype != torch.float64 else sigmas ** -2.0
    if weighting == "cosmap":
        bot = 1 - 2 * sigmas + 2 * sigmas ** 2
        return 2 / (math.pi * bot)
    return torch.ones_like(sigmas)


def sd3_loss(model_pred, model_input, noise, sigmas, *, precondition_outputs=False, weighting=None):
    """Per-sample loss of diffusers' train_dreambooth_sd3 (mean over non-batch dims, before the batch mean)."""
    noisy = sd3_noisy(model_input, sigmas, noise)
    s = expand_t_like_x(sigmas, model_input)
    if precondition_outputs:
        model_pred = model_pred * (-s) + noisy
        target = model_input
    else:
        target = noise - model_input
    w = expand_t_like_x(sd3_weighting(weighting, sigmas), model_input)
    return torch.mean((w * (model_pred - target) ** 2).reshape(target.shape[0], -1), 1)
