"""Public functional API of the fused flow-matching training kernels."""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from ._dispatch import resolve_backend
from ._validation import (FLOAT_DTYPES, check_choice, check_float_tensor, check_per_sample, check_row_offsets,
                          check_same_shape)
from .flow_algebra import resolve_scheme
from .ops.flow_interpolate import flow_interpolate_call
from .ops.flow_loss import flow_loss_call, flow_loss_reduced

REDUCTIONS = ("none", "mean", "sum")
# float64 is accepted everywhere (gradchecks, reference runs): it runs the torch path in fp64, on any device
DTYPES = FLOAT_DTYPES + (torch.float64,)


def ragged_counts(offsets: torch.Tensor) -> torch.Tensor:
    """Rows per sample, as float32, from offsets [B + 1] (on the device, no sync)."""
    return (offsets[1:] - offsets[:-1]).to(torch.float32)


def _seed_value(seed) -> int:
    """The checked seed as a Python int (the native CPU path takes it directly)."""
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63:
        return seed
    if (type(seed) is torch.Tensor and seed.device.type == "cpu" and seed.numel() == 1
            and seed.dtype in (torch.int64, torch.int32)):  # the usual drawn seed: read it without a copy
        return int(seed.item())
    return int(_seed_tensor(seed).item())


def _seed_tensor(seed):
    if seed is None:
        return None
    if isinstance(seed, torch.Tensor):
        if seed.device.type != "cpu" or seed.numel() != 1 or seed.dtype.is_floating_point:
            raise ValueError("seed must be a Python int or a one-element integer CPU tensor "
                             "(a device tensor would need a host sync to read)")
        return seed.reshape(()).to(torch.int64)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed} must lie in [0, 2**63)")
    return torch.tensor(seed, dtype=torch.int64)


@functools.lru_cache(maxsize=256)
def _resolve_scheme_cached(convention, path, prediction, weighting, sigma_min):
    return resolve_scheme(convention, path, prediction, weighting, sigma_min)


def _scheme(convention, path, prediction, weighting, sigma_min):
    """resolve_scheme, cached per configuration (a training loop asks the same question every step); traced
    directly under torch.compile, which does not look inside caches."""
    if torch.compiler.is_compiling():
        return resolve_scheme(convention, path, prediction, weighting, sigma_min)
    try:
        return _resolve_scheme_cached(convention, path, prediction, weighting, sigma_min)
    except TypeError:  # an unhashable argument: resolve_scheme names the bad one
        return resolve_scheme(convention, path, prediction, weighting, sigma_min)


def _t_in_unit_interval(t: torch.Tensor) -> bool:
    """Whether every t lies in [0, 1] (False for NaN), read on the CPU: a small batch's values as Python floats
    (one call instead of a reduction and two reads), a large one by a reduction."""
    if t.numel() <= 4096:
        v = t.tolist()
        total = sum(v)  # NaN when any value is NaN (or +inf and -inf meet), which the bounds below would miss
        return total == total and min(v) >= 0.0 and max(v) <= 1.0
    lo, hi = torch.aminmax(t)  # NaN fails both comparisons
    return bool(lo.item() >= 0 and hi.item() <= 1)


def _check_offsets(offsets, x1):
    """offsets [B + 1] (int64 or int32) over the rows of a ragged x1 [N, C...] (check_row_offsets), as int64."""
    if offsets is None:
        return None
    offsets = check_row_offsets(offsets, x1.shape[0], x1.device, "x1")
    if x1.dim() < 2:
        raise ValueError(f"with offsets, x1 must be [N_rows, C, ...], got shape {tuple(x1.shape)}")
    return offsets


def _check_common(x1, t, noise, seed, offsets=None):
    check_float_tensor("x1", x1, DTYPES)
    offsets = _check_offsets(offsets, x1)
    batch = x1.shape[0] if offsets is None else offsets.numel() - 1
    if not (type(t) is torch.Tensor and t.dim() == 1 and t.shape[0] == batch and t.dtype in DTYPES
            and t.device == x1.device):  # the usual t passes without check_per_sample's reshape and device lookup
        t = check_per_sample("t", t, batch, x1.device)
    if noise is not None:
        check_float_tensor("noise", noise, DTYPES)
        check_same_shape("noise", noise, "x1", x1)
        if seed is not None:
            raise ValueError("pass either noise or seed, not both")
    elif seed is None:
        raise ValueError("noise is None: pass a noise tensor or a seed for in-kernel noise")
    for name, x in (("x1", x1), ("noise", noise), ("t", t)):
        if x is not None and x.requires_grad:
            raise ValueError(f"{name} requires grad, but flow-matching kernels differentiate w.r.t. the model "
                             f"output only; pass {name}.detach()")
    # CPU only: free; on CUDA this would sync
    if x1.device.type == "cpu" and t.numel() and not torch.compiler.is_compiling() and not _t_in_unit_interval(t):
        raise ValueError("t has values outside [0, 1]")
    return t, offsets


class FlowBatch(NamedTuple):
    """A training batch checked once (by `flow_batch`) for the two kernels of a step: interpolate, run the model,
    take the loss of the same batch."""
    x1: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor | None
    seed: object
    offsets: torch.Tensor | None


def flow_batch(x1: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, *, seed=None,
               offsets: torch.Tensor | None = None) -> FlowBatch:
    """Check (x1, t, noise or seed, offsets) as flow_interpolate and flow_matching_loss do, once: a step's
    `flow_interpolate_batch` and `flow_matching_loss_batch` then check only what differs (options, the model's
    output). t comes back as a [B] vector, offsets as contiguous int64."""
    t, offsets = _check_common(x1, t, noise, seed, offsets)
    return FlowBatch(x1, t, noise, seed, offsets)


def flow_interpolate_batch(batch: FlowBatch, **options):
    """flow_interpolate of a checked batch; options as flow_interpolate's (convention, path, prediction,
    sigma_min, return_target, out_dtype, backend)."""
    return _interpolate_checked(*_checked_batch(batch), **options)


def flow_matching_loss_batch(pred: torch.Tensor, batch: FlowBatch, **options):
    """flow_matching_loss of `pred` against a checked batch; options as flow_matching_loss's (convention, path,
    prediction, weighting, weight, sigma_min, reduction, return_per_sample, backend)."""
    return _loss_checked(pred, *_checked_batch(batch), **options)


def _checked_batch(batch):
    if type(batch) is not FlowBatch:  # a plain tuple of the same fields would skip flow_batch's checks
        raise ValueError(f"batch must be the FlowBatch flow_batch returns, got {type(batch).__name__}")
    return batch


def flow_interpolate(x1: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, *, seed=None,
                     convention: str = "sit", path: str | None = "linear", prediction: str = "velocity",
                     sigma_min: float | None = None, return_target: bool = False, out_dtype=None,
                     offsets: torch.Tensor | None = None, backend: str | None = None):
    """Build x_t (and, with return_target=True, the regression target) from data x1, noise and t.

    Noise is a tensor, or drawn inside the kernel from `seed` (Philox keyed by element index), in which case
    `flow_matching_loss(..., seed=seed)` regenerates the same noise bit-exactly and nothing is stored.
    Conventions: "sit"/"hunyuan3d" (path linear/gvp/vp, t=1 data), "trellis" (sigma_min=1e-5, t=0 data),
    "sd3"/"diffusers" (sigma: t=0 data). Returns x_t, or (x_t, target).
    Sparse latents: x1 [N_rows, C] with `offsets` [B + 1]; t [B] is broadcast to each sample's rows in-kernel.
    """
    t, offsets = _check_common(x1, t, noise, seed, offsets)
    return _interpolate_checked(x1, t, noise, seed, offsets, convention, path, prediction, sigma_min, return_target,
                                out_dtype, backend)


def _interpolate_checked(x1, t, noise, seed, offsets, convention="sit", path="linear", prediction="velocity",
                         sigma_min=None, return_target=False, out_dtype=None, backend=None):
    """flow_interpolate of (x1, t, noise, seed, offsets) as _check_common returned them: a training step that
    interpolates and then takes the loss of the same batch checks them once."""
    scheme, pred_code, _, smin = _scheme(convention, path, prediction, None, sigma_min)
    out_dtype = x1.dtype if out_dtype is None else out_dtype
    check_choice("out_dtype", out_dtype, {d: d for d in DTYPES})
    backend = resolve_backend(backend, x1.device)
    # eagerly the seed travels as an int (a tensor per call costs microseconds); the custom op needs a tensor
    seed = _seed_tensor(seed) if torch.compiler.is_compiling() else None if seed is None else _seed_value(seed)
    xt, target = flow_interpolate_call(x1, noise, t, seed, offsets, scheme, pred_code, smin, bool(return_target),
                                       out_dtype, backend)
    return (xt, target) if return_target else xt


def flow_matching_loss(pred: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                       *, seed=None, convention: str = "sit", path: str | None = "linear",
                       prediction: str = "velocity", weighting: str | None = None, weight: torch.Tensor | None = None,
                       sigma_min: float | None = None, reduction: str = "none", offsets: torch.Tensor | None = None,
                       return_per_sample: bool = False, backend: str | None = None):
    """Per-sample mean-flat flow-matching MSE of `pred` against the target rebuilt from (x1, noise|seed, t).

    One fused pass computes the loss (fp32) and, when pred requires grad, d loss / d pred; backward only
    scales it. `weighting` picks the convention's weighting ("velocity"/"likelihood" for SiT noise/score
    models, "sigma_sqrt"/"cosmap" for SD3); `weight` multiplies an extra per-sample weight [B].
    A t outside [0, 1] raises on CPU and gives a NaN loss for that sample on CUDA (checking would sync).
    Sparse latents: `offsets` [B + 1] over the rows of pred/x1 [N_rows, C]; "none" gives each sample's mean over
    its rows (NaN for a sample with no rows), "mean" the mean over all elements (samples with more rows weigh more,
    as TRELLIS's SparseFlowMatchingTrainer), "sum" the sum of the per-sample means.
    return_per_sample=True returns (reduced loss, per-sample means [B]) from the one pass (e.g. a training step's
    loss and its per-sample values for logging by time bin).
    """
    t, offsets = _check_common(x1, t, noise, seed, offsets)
    return _loss_checked(pred, x1, t, noise, seed, offsets, convention, path, prediction, weighting, weight,
                         sigma_min, reduction, return_per_sample, backend)


def _loss_checked(pred, x1, t, noise, seed, offsets, convention="sit", path="linear", prediction="velocity",
                  weighting=None, weight=None, sigma_min=None, reduction="none", return_per_sample=False,
                  backend=None):
    """flow_matching_loss of (x1, t, noise, seed, offsets) as _check_common returned them (see
    _interpolate_checked); pred and the options are checked here."""
    check_float_tensor("pred", pred, DTYPES)
    check_same_shape("pred", pred, "x1", x1)
    if weight is not None:
        weight = check_per_sample("weight", weight, t.shape[0], x1.device)
        if weight.requires_grad:
            raise ValueError("weight requires grad; per-sample weights are treated as constants, pass weight.detach()")
    reduction = check_choice("reduction", reduction, REDUCTIONS)
    scheme, pred_code, weight_code, smin = _scheme(convention, path, prediction, weighting, sigma_min)
    backend = resolve_backend(backend, pred.device)
    compute_grad = pred.requires_grad and torch.is_grad_enabled()
    if (backend == "native" and (reduction == "mean" or (reduction == "sum" and offsets is None))
            and pred.numel() and not torch.compiler.is_compiling()
            and torch.float64 not in (pred.dtype, x1.dtype, noise.dtype if noise is not None else None)):
        # the common training call on CPU: one native pass and one autograd node, reduction folded in
        return flow_loss_reduced(pred, x1, noise, t, weight, seed if seed is None else _seed_value(seed), offsets,
                                 scheme, pred_code, weight_code, smin, compute_grad, reduction, return_per_sample)
    loss, _ = flow_loss_call(pred, x1, noise, t, weight, _seed_tensor(seed), offsets, scheme, pred_code, weight_code,
                           smin, compute_grad, backend)
    per_row = pred[0].numel() if pred.shape[0] else 1
    return _reduce_per_sample(loss, reduction, offsets=offsets, elements_per_row=per_row, elements=pred.numel(),
                             return_per_sample=return_per_sample)


def _reduce_per_sample(loss: torch.Tensor, reduction: str = "none", *, offsets: torch.Tensor | None = None,
                      elements_per_row: int = 1, elements: int | None = None, return_per_sample: bool = False):
    """Reduce the loss kernel's per-sample values `loss` [B] (`flowkernels::flow_matching_loss`'s first output).

    Dense batches (offsets None): `loss` holds per-sample means. Ragged batches (offsets [B + 1] over rows of
    `elements_per_row` elements; `elements` in all): `loss` holds per-sample sums.
    "none" gives the per-sample means [B]; "mean" the mean of those (dense) or the mean over all elements (ragged:
    samples weigh by their rows, as TRELLIS's sparse trainer); "sum" the sum of the per-sample means.
    return_per_sample=True returns (reduced, per-sample means). No host sync."""
    reduction = check_choice("reduction", reduction, REDUCTIONS)
    if offsets is None:
        per_sample = loss
        reduced = loss.mean() if reduction == "mean" else None
    else:
        if elements is None:
            raise ValueError("reduce_per_sample: a ragged batch needs elements= (the element count of all rows)")
        per_sample = loss / (ragged_counts(offsets) * elements_per_row)
        reduced = loss.sum() / elements if reduction == "mean" else None
    if reduction == "sum":
        reduced = per_sample.sum()
    elif reduction == "none":
        reduced = per_sample
    return (reduced, per_sample) if return_per_sample else reduced
