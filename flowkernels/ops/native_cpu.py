"""The native CPU implementations of the flow ops (csrc/flow/, in flowkernels._C): the default for CPU tensors.

Python validates and allocates with torch; the kernels get (pointer, dtype code, batch stride) per tensor and a
(batch, elements per sample or per row, rows, offsets pointer, threads) layout. Threads: torch.get_num_threads(),
so `torch.set_num_threads` governs these kernels like torch's own CPU ops.
"""
from __future__ import annotations

import torch

from .._native import load as native
from . import _launch

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
ABSENT = (0, 0, 0)


def arr(x: torch.Tensor | None, stride: int | None = None):
    """(data pointer, dtype code, batch stride) of a tensor whose samples are each contiguous; ABSENT for None."""
    if x is None:
        return ABSENT
    return (x.data_ptr(), DTYPE_CODES[x.dtype], x.stride(0) if stride is None else stride)


def _layout(x: torch.Tensor, offsets):
    # (samples, elements per sample or row) as _launch.layout, without its x[0] view: these calls are on the
    # per-step path of small CPU batches, where every microsecond of Python shows
    n = x.shape[0]
    M = x.numel() // n if n else 0
    if offsets is None:
        return (n, M, n, 0, torch.get_num_threads()), False
    return (offsets.shape[0] - 1, M, n, offsets.data_ptr(), torch.get_num_threads()), True


def _sample_rows(x, ragged):
    """A per-sample tensor with each sample contiguous (ragged: the whole [N, C] buffer contiguous)."""
    if x is None or x.is_contiguous():
        return x
    return x.contiguous() if ragged else _launch.rows(x)[0]


# The noise the last seeded interpolation drew, kept for the loss that follows it with the same seed: on CPU
# drawing is the costly part of a seeded step (Philox + Box-Muller, several times the arithmetic of the loss), so
# it is drawn once per step instead of twice; the values are the same bits the loss kernel would draw. One entry,
# taken by the loss, and only for batches up to _KEEP_NOISE_LIMIT elements (a GPU-sized batch stays in-kernel).
_kept_noise = None
_KEEP_NOISE_LIMIT = 1 << 24


def _keep_noise(seed, x1):
    global _kept_noise
    seed = _launch.seed_value(seed)
    noise = philox_normals(seed, x1.shape)
    _kept_noise = (seed, tuple(x1.shape), noise)
    return noise


def _take_noise(seed, x):
    """The kept noise when it was drawn for this seed and shape (then forgotten), else None."""
    global _kept_noise
    kept = _kept_noise
    if kept is None or kept[1] != tuple(x.shape) or kept[0] != _launch.seed_value(seed):
        return None
    _kept_noise = None
    return kept[2]


def interpolate(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, xt, target):
    lay, ragged = _layout(x1, offsets)
    if lay[0] == 0 or x1.numel() == 0:
        return
    if noise is None and x1.numel() <= _KEEP_NOISE_LIMIT:
        noise = _keep_noise(seed, x1)
    x1, noise = _sample_rows(x1, ragged), _sample_rows(noise, ragged)
    native().flow_interpolate_cpu(
        lay, scheme, prediction, float(sigma_min), arr(x1), arr(noise), arr(t), _seed(seed, noise),
        arr(xt), arr(target) if target.numel() else ABSENT)


REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}  # fk::LossReduction


def loss(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, grad,
         grad_factor: float = 1.0, reduction: str = "none"):
    """Per-sample losses [B] (float32): means (dense) or sums over the rows' elements (ragged); grad (when it has
    elements) receives grad_factor * d loss[b] / d pred. With reduction "mean" / "sum": (reduced loss (0-dim),
    per-sample means [B]), both float32, finished by the kernel."""
    lay, ragged = _layout(pred, offsets)
    if noise is None:
        noise = _take_noise(seed, pred)
    pred, x1, noise = _sample_rows(pred, ragged), _sample_rows(x1, ragged), _sample_rows(noise, ragged)
    out = torch.empty(lay[0], dtype=torch.float32)
    code = REDUCTION_CODES[reduction]
    reduced = torch.empty((), dtype=torch.float32) if code else None
    native().flow_loss_cpu(
        lay, scheme, prediction, weighting, float(sigma_min), arr(pred), arr(x1), arr(noise), arr(t), arr(weight),
        _seed(seed, noise), out.data_ptr(), arr(grad) if grad is not None and grad.numel() else ABSENT,
        float(grad_factor), code, reduced.data_ptr() if code else 0)
    return (reduced, out) if code else out


def scale_rows(grad, row_scale, offsets, out):
    lay, ragged = _layout(grad, offsets)
    native().scale_rows_cpu(lay, arr(_sample_rows(grad, ragged)), arr(row_scale), arr(out))
    return out


def guided_step(x, c, u, coef, out, rescale_slope, h, model_in, n_model_in, x0, v_out, offsets=None):
    """The CPU step (see ops/guided_step.py); out, h, model_in, x0 and v_out are contiguous. rescale_slope (the
    per-sample m) is None without rescale. Ragged (offsets): x, c, u are made contiguous."""
    lay, ragged = _layout(x, offsets)
    if not (x.is_contiguous() and c.is_contiguous() and (u is None or u.is_contiguous())):
        x, c, u = _sample_rows(x, ragged), _sample_rows(c, ragged), _sample_rows(u, ragged)
    coef = _coef32(coef)
    # the usual sampling step (x, c, u, out, model_in) packs its tensors inline: at 1x4096x64 the step's kernel
    # takes tens of microseconds, and each helper call here costs a fraction of one
    native().guided_step_cpu(
        lay, (x.data_ptr(), DTYPE_CODES[x.dtype], x.stride(0)), (c.data_ptr(), DTYPE_CODES[c.dtype], c.stride(0)),
        ABSENT if u is None else (u.data_ptr(), DTYPE_CODES[u.dtype], u.stride(0)),
        ABSENT if h is None else arr(h), coef.data_ptr(), ABSENT if rescale_slope is None else arr(rescale_slope),
        (out.data_ptr(), DTYPE_CODES[out.dtype], out.stride(0)), ABSENT if model_in is None else arr(model_in),
        n_model_in, ABSENT if x0 is None else arr(x0), ABSENT if v_out is None else arr(v_out))


def rescale_sums(x, c, u, coef, offsets=None) -> torch.Tensor:
    """[B, 5] float64 rescale sums (ops/guided_step.py's S_G .. S_GD; ragged: over each sample's rows)."""
    lay, ragged = _layout(x, offsets)
    x, c, u = _sample_rows(x, ragged), _sample_rows(c, ragged), _sample_rows(u, ragged)
    coef = _coef32(coef)
    sums = torch.empty((lay[0], 5), dtype=torch.float64)
    native().rescale_stats_cpu(lay, arr(x), arr(c), arr(u), coef.data_ptr(), sums.data_ptr())
    return sums


def _coef32(coef):
    return coef if coef.dtype is torch.float32 and coef.is_contiguous() else coef.to(torch.float32).contiguous()


def philox_normals(seed: int, shape, first: int = 0) -> torch.Tensor:
    """float32 normals of elements first, first + 1, ... of the seeded stream (the Triton kernels' stream)."""
    out = torch.empty(shape, dtype=torch.float32)
    native().philox_normals(int(seed), int(first), out.numel(), out.data_ptr(), torch.get_num_threads())
    return out


NOISE_LEVELS = {0: "baseline", 1: "x86-64-v3", 2: "x86-64-v4"}  # the compiled versions of the noise loop


def philox_normals_at(level: int, seed: int, n: int, first: int = 0):
    """philox_normals through one compiled version of the noise loop (NOISE_LEVELS), on the calling thread; None
    when this build or CPU has no such version (tests check that every version gives the same bits)."""
    out = torch.empty(n, dtype=torch.float32)
    return out if native().philox_normals_at(int(level), int(seed), int(first), n, out.data_ptr()) else None


def _seed(seed, noise):
    return 0 if noise is not None else _launch.seed_value(seed)
