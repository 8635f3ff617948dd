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


class SparseTensorLike:
    """The part of TRELLIS's `sp.SparseTensor` its trainer touches: feats [N, C], layout (one slice of rows per
    sample), shape [B, C], replace(feats), and elementwise arithmetic whose torch.Tensor operand is first broadcast to
    [B, C] and then copied into a zeros [N, C] buffer, sample by sample in a Python loop (`__elemwise__` and
    `sparse_batch_broadcast` of trellis/modules/sparse/basic.py), on every such op."""

    def __init__(self, feats, layout):
        self.feats, self.layout, self.device = feats, layout, feats.device
        self.shape = torch.Size([len(layout), *feats.shape[1:]])

    def replace(self, feats):
        return SparseTensorLike(feats, self.layout)

    def _batch_broadcast(self, other):
        out = torch.zeros_like(self.feats)
        for k in range(self.shape[0]):
            out[self.layout[k]] = other[k]
        return out

    def _elemwise(self, other, op):
        if isinstance(other, torch.Tensor):
            try:
                other = self._batch_broadcast(torch.broadcast_to(other, self.shape))
            except RuntimeError:
                pass
        if isinstance(other, SparseTensorLike):
            other = other.feats
        return self.replace(op(self.feats, other))

    def __add__(self, other):
        return self._elemwise(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other):
        return self._elemwise(other, torch.sub)

    def __rsub__(self, other):
        return self._elemwise(other, lambda x, y: torch.sub(y, x))

    def __mul__(self, other):
        return self._elemwise(other, torch.mul)

    __rmul__ = __mul__


def sparse_training_losses(denoiser, feats, offsets, t, noise, cond=None, sigma_min=1e-5, **kwargs):
    """SparseFlowMatchingTrainer.training_losses in its own call sequence for given t and noise, on a feature matrix
    [N, C] with row offsets [B + 1]: the data and noise as sparse tensors (`SparseTensorLike`), `diffuse` with t
    viewed [B, 1] (each product with t broadcasts it to the rows again), the denoiser called on the sparse x_t, the
    shape assert, `get_v`, F.mse_loss of the features, one `.item()` per sample, np.digitize bins."""
    layout = [slice(int(offsets[i]), int(offsets[i + 1])) for i in range(offsets.numel() - 1)]
    x_0, noise = SparseTensorLike(feats, layout), SparseTensorLike(noise, layout)
    t_ = t.view(-1, *[1 for _ in range(len(x_0.shape) - 1)])
    x_t = (1 - t_) * x_0 + (sigma_min + (1 - sigma_min) * t_) * noise
    pred = denoiser(x_t, t * 1000, cond, **kwargs)
    assert pred.shape == noise.shape == x_0.shape
    target = (1 - sigma_min) * noise - x_0
    terms = {"mse": F.mse_loss(pred.feats, target.feats)}
    terms["loss"] = terms["mse"]
    mse_per_instance = np.array([F.mse_loss(pred.feats[x_0.layout[i]], target.feats[x_0.layout[i]]).item()
                                 for i in range(x_0.shape[0])])
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
