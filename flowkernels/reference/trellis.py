"""TRELLIS / TRELLIS.2 training losses and Euler samplers, written plainly from their published loops
(conventions: flowkernels/flow_kernels.md).

These are the slow originals flowkernels replaces: per-sample `.item()` calls, a Python loop broadcasting t to
sparse rows, and eager per-step arithmetic. Tests and benchmarks compare against them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def time_bins(t: torch.Tensor) -> np.ndarray:
    """TRELLIS's bin of each t: np.digitize(t, linspace(0, 1, 11)) - 1 (t = 1 falls in no bin)."""
    return np.digitize(t.cpu().numpy(), np.linspace(0, 1, 11)) - 1


def bin_terms(mse_per_instance: np.ndarray, t: torch.Tensor) -> dict:
    bins = time_bins(t)
    return {f"bin_{i}": {"mse": mse_per_instance[bins == i].mean()} for i in range(10) if (bins == i).sum() != 0}


def dense_training_losses(denoiser, x_0, t, noise, cond=None, sigma_min=1e-5, **kwargs):
    """FlowMatchingTrainer.training_losses with t and noise given."""
    t_ = t.view(-1, *[1 for _ in range(x_0.dim() - 1)])
    x_t = (1 - t_) * x_0 + (sigma_min + (1 - sigma_min) * t_) * noise
    pred = denoiser(x_t, t * 1000, cond, **kwargs)
    target = (1 - sigma_min) * noise - x_0
    terms = {"mse": F.mse_loss(pred, target)}
    terms["loss"] = terms["mse"]
    mse_per_instance = np.array([F.mse_loss(pred[i], target[i]).item() for i in range(x_0.shape[0])])
    terms.update(bin_terms(mse_per_instance, t))
    return terms, {}


def sparse_training_losses(denoiser, feats, offsets, t, noise, cond=None, sigma_min=1e-5, **kwargs):
    """SparseFlowMatchingTrainer.training_losses on a feature matrix [N, C] with row offsets [B + 1]:
    t is broadcast to the rows with a Python loop into a zeros_like buffer, as the original does."""
    t_rows = torch.zeros_like(feats[:, :1])
    layout = [slice(int(offsets[i]), int(offsets[i + 1])) for i in range(offsets.numel() - 1)]
    for i, rows in enumerate(layout):
        t_rows[rows] = t[i]
    x_t = (1 - t_rows) * feats + (sigma_min + (1 - sigma_min) * t_rows) * noise
    pred = denoiser(x_t, t * 1000, cond, **kwargs)
    target = (1 - sigma_min) * noise - feats
    terms = {"mse": F.mse_loss(pred, target)}
    terms["loss"] = terms["mse"]
    mse_per_instance = np.array([F.mse_loss(pred[rows], target[rows]).item() for rows in layout])
    terms.update(bin_terms(mse_per_instance, t))
    return terms, {}


def euler_sample(model, noise, cond, steps, rescale_t=1.0, sigma_min=1e-5, *, neg_cond=None, strength=None,
                 interval=None, formula="trellis", rescale=0.0):
    """TRELLIS (formula "trellis": (1 + w) c − w u) and TRELLIS.2 (formula "trellis2": g c + (1 − g) u with
    rescale) Euler sampling loops. Returns (samples, [x_t per step], [x_0 per step])."""
    t_seq = np.linspace(1, 0, steps + 1)
    t_seq = (rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)).tolist()
    x, xs, x0s = noise, [], []

    def model_v(x_t, t, c):
        return model(x_t, torch.tensor([1000 * t] * x_t.shape[0], device=x_t.device, dtype=torch.float32), c)

    def pred_to_x0(x_t, t, v):
        return (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * v

    for t, t_prev in zip(t_seq[:-1], t_seq[1:]):
        guided = strength is not None and (interval is None or interval[0] <= t <= interval[1])
        if not guided:
            v = model_v(x, t, cond)
        elif formula == "trellis":
            v = (1 + strength) * model_v(x, t, cond) - strength * model_v(x, t, neg_cond)
        elif strength == 1:
            v = model_v(x, t, cond)
        elif strength == 0:
            v = model_v(x, t, neg_cond)
        else:
            pos, neg = model_v(x, t, cond), model_v(x, t, neg_cond)
            v = strength * pos + (1 - strength) * neg
            if rescale > 0:
                x0_pos, x0_cfg = pred_to_x0(x, t, pos), pred_to_x0(x, t, v)
                dims = list(range(1, x.ndim))
                x0_r = x0_cfg * (x0_pos.std(dim=dims, keepdim=True) / x0_cfg.std(dim=dims, keepdim=True))
                x0 = rescale * x0_r + (1 - rescale) * x0_cfg
                v = ((1 - sigma_min) * x - x0) / (sigma_min + (1 - sigma_min) * t)
        x0s.append(pred_to_x0(x, t, v))
        x = x - (t - t_prev) * v
        xs.append(x)
    return x, xs, x0s
