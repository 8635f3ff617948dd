"""One guided Euler (or Heun) update per pass over the state.

Every guidance formula (flowkernels.flow_algebra.guidance_weights) is the same linear combination v = a_c·c + a_u·u
of the conditional output c and the unconditional output u (Hunyuan/diffusers u + w(c−u): a_c = w, a_u = 1−w;
TRELLIS (1+w)c − w·u; TRELLIS.2 g·c + (1−g)·u). A data prediction is also linear: x0 = A·x + Bq·v, so TRELLIS.2's
guidance rescale, which scales the guided x0 by k = φ·std(x0_c)/std(x0_cfg) + 1 − φ per sample, is a new velocity
v' = (k·x0_cfg − A·x)/Bq = k·v + m·A·x with the slope m = (k − 1)/Bq. Written that way it has no 0/0 where Bq = 0 (the
data end of the path, where Heun's corrector evaluates the model): with d = c − v, x0_c = x0_cfg + Bq·d, so
std(x0_c)² − std(x0_cfg)² = Bq·(2·cov(x0_cfg, d) + Bq·var(d)) and

    m = φ·(2·cov(x0_cfg, d) + Bq·var(d)) / (std(x0_cfg)·(std(x0_c) + std(x0_cfg))),   k = 1 + Bq·m,

the same k as the original wherever Bq ≠ 0 and its limit where Bq = 0 (x0_c = x0_cfg = A·x there, yet the
velocity still moves: v' = v + φ·cov(A·x, c − v)/var(A·x)·A·x). Where x0_cfg has no spread (std 0: a constant
data prediction, e.g. c = u = x at the noise end) the ratio of stds is 0/0 or x/0 and the original turns the sample
NaN; there m = 0 (k = 1, the rescale skipped). The per-sample m needs five sums first
(`_rescale_stats_kernel` writes them per (sample, chunk)); each program of the step kernel sums its sample's partials
and forms m itself, so a rescaled step is two launches and never syncs.

Samples are dense rows ([B, ...], any batch stride) or ragged (TRELLIS sparse latents: rows offsets[b]:offsets[b+1]
of a contiguous [N, C] feature matrix); for ragged samples std is over each sample's rows, as TRELLIS.2 defines it
for sparse tensors. The ratio of two standard deviations is the same with 1/n and 1/(n−1) normalizations, so dense
(torch.std) and sparse (population std) agree.

Per-step scalars (dt, a_c, a_u, A, Bq, the Heun coefficient) are read from a small device tensor, not passed as
kernel arguments, so a CUDA graph captured once replays correctly for every step after a 48-byte copy.

The kernel reads c and u through batch strides, so the two halves of one [cond; uncond] model output are used in
place, and it can write the next model input (cast, optionally duplicated for the next [x; x] batch) in the same
pass, which removes the cast and the concatenation of the eager loop.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl

from . import _launch, _plan, native_cpu

# Slots of one row of the per-step coefficient table: the step dt, the guidance weights a_c / a_u, the data
# prediction x0 = X0_A·x + X0_B·v, and Heun's corrector weight dt_h on the saved predictor velocity.
DT, A_C, A_U, X0_A, X0_B, DT_H = range(6)
N_COEF = 8  # padded
# the same slots as compile-time constants for the kernels
SLOT_DT, SLOT_A_C, SLOT_A_U, SLOT_X0_A, SLOT_X0_B, SLOT_DT_H = (tl.constexpr(i) for i in (DT, A_C, A_U, X0_A, X0_B, DT_H))
STAT_BLOCK = 256  # partial sums a program of the step kernel reads per vector load
# The rescale sums per sample: of x0_cfg, its square, d = c − v, its square, and x0_cfg·d.
S_G, S_GG, S_D, S_DD, S_GD = range(5)
N_STATS = 5


@triton.jit
def _rescale_slope(stats_ptr, row, n_stat_chunks, n_el, x0_b, phi, STAT_BLOCK: tl.constexpr):
    """The rescale slope m = (k − 1)/Bq of sample `row` from its [n_stat_chunks, 5] fp64 partial sums."""
    s_g = tl.zeros([STAT_BLOCK], dtype=tl.float64)
    s_gg = tl.zeros([STAT_BLOCK], dtype=tl.float64)
    s_d = tl.zeros([STAT_BLOCK], dtype=tl.float64)
    s_dd = tl.zeros([STAT_BLOCK], dtype=tl.float64)
    s_gd = tl.zeros([STAT_BLOCK], dtype=tl.float64)
    for c0 in range(0, n_stat_chunks, STAT_BLOCK):
        idx = c0 + tl.arange(0, STAT_BLOCK)
        m = idx < n_stat_chunks
        p = stats_ptr + (row * n_stat_chunks + idx) * 5
        s_g += tl.load(p + 0, mask=m, other=0.0)
        s_gg += tl.load(p + 1, mask=m, other=0.0)
        s_d += tl.load(p + 2, mask=m, other=0.0)
        s_dd += tl.load(p + 3, mask=m, other=0.0)
        s_gd += tl.load(p + 4, mask=m, other=0.0)
    S_g = tl.sum(s_g, axis=0)
    S_d = tl.sum(s_d, axis=0)
    n = n_el.to(tl.float64)
    b = x0_b.to(tl.float64)
    var_g = tl.maximum(tl.sum(s_gg, axis=0) - S_g * S_g / n, 0.0)
    var_d = tl.maximum(tl.sum(s_dd, axis=0) - S_d * S_d / n, 0.0)
    cov = tl.sum(s_gd, axis=0) - S_g * S_d / n
    std_g = tl.sqrt(var_g)
    std_c = tl.sqrt(tl.maximum(var_g + b * (2.0 * cov + b * var_d), 0.0))
    den = std_g * (std_c + std_g)
    # x0_cfg without spread: no ratio of stds to take, the rescale is skipped (k = 1) instead of 0/0 or x/0
    return tl.where(den == 0.0, 0.0, phi * (2.0 * cov + b * var_d) / den).to(tl.float32)


# B, the row count and the chunk counts vary per call: runtime integers, one compiled variant per configuration
@triton.jit(do_not_specialize=["n_rows", "n_chunks", "n_stat_chunks", "copy_stride"])
def _guided_step_kernel(
    x_ptr, c_ptr, u_ptr, h_ptr, coef_ptr, stats_ptr, offsets_ptr, out_ptr, model_in_ptr, x0_ptr, v_ptr,
    M, span, n_rows: tl.int64, n_chunks: tl.int32, n_stat_chunks: tl.int32, copy_stride: tl.int64,
    stride_x, stride_c, stride_u, phi,
    HAS_UNCOND: tl.constexpr, HAS_H: tl.constexpr, RESCALE: tl.constexpr, N_MODEL_IN: tl.constexpr,
    WRITE_X0: tl.constexpr, WRITE_V: tl.constexpr, RAGGED: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK: tl.constexpr, STAT_BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base, n_el, lo, chunk_len = _launch.sample_extent(
        offsets_ptr, n_rows, row, tl.program_id(1), M, span, n_chunks, RAGGED, ALIGN, BLOCK)
    if RAGGED:  # contiguous [N, C] buffers
        x_base, c_base, u_base = base, base, base
    else:  # ALIGN divides every batch stride (host-checked)
        x_base = tl.multiple_of(row * stride_x, ALIGN)
        c_base = tl.multiple_of(row * stride_c, ALIGN)
        u_base = tl.multiple_of(row * stride_u, ALIGN)
    dt = tl.load(coef_ptr + SLOT_DT).to(tl.float32)
    a_c = tl.load(coef_ptr + SLOT_A_C).to(tl.float32)
    a_u = tl.load(coef_ptr + SLOT_A_U).to(tl.float32)
    x0_a = tl.load(coef_ptr + SLOT_X0_A).to(tl.float32)
    x0_b = tl.load(coef_ptr + SLOT_X0_B).to(tl.float32)
    dt_h = tl.load(coef_ptr + SLOT_DT_H).to(tl.float32)
    if RESCALE:
        slope = _rescale_slope(stats_ptr, row, n_stat_chunks, n_el, x0_b, phi, STAT_BLOCK)
        k = 1.0 + x0_b * slope
        k_x = slope * x0_a
    for start in range(0, chunk_len, BLOCK):
        offs = lo + start + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < n_el
        x = tl.load(x_ptr + x_base + offs, mask=mask, other=0.0).to(tl.float32)
        v = a_c * tl.load(c_ptr + c_base + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_UNCOND:
            v += a_u * tl.load(u_ptr + u_base + offs, mask=mask, other=0.0).to(tl.float32)
        if RESCALE:
            v = k * v + k_x * x
        x_next = x + dt * v
        if HAS_H:  # Heun's corrector: the predictor's velocity, saved by the first stage
            x_next += dt_h * tl.load(h_ptr + base + offs, mask=mask, other=0.0)
        tl.store(out_ptr + base + offs, x_next.to(out_ptr.dtype.element_ty), mask=mask)
        if N_MODEL_IN >= 1:
            tl.store(model_in_ptr + base + offs, x_next.to(model_in_ptr.dtype.element_ty), mask=mask)
        if N_MODEL_IN == 2:
            tl.store(model_in_ptr + copy_stride + base + offs, x_next.to(model_in_ptr.dtype.element_ty), mask=mask)
        if WRITE_X0:
            tl.store(x0_ptr + base + offs, (x0_a * x + x0_b * v).to(x0_ptr.dtype.element_ty), mask=mask)
        if WRITE_V:
            tl.store(v_ptr + base + offs, v, mask=mask)


@triton.jit(do_not_specialize=["n_rows", "n_chunks"])
def _rescale_stats_kernel(
    x_ptr, c_ptr, u_ptr, coef_ptr, offsets_ptr, partial_ptr, M, span, n_rows: tl.int64, n_chunks: tl.int32,
    stride_x, stride_c, stride_u, RAGGED: tl.constexpr, ALIGN: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per (sample, chunk): the five rescale sums of x0_cfg and d = c − v (fp64 lanes: variances and the covariance
    are formed as E[ab] − E[a]E[b], which must not cancel in fp32)."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    base, n_el, lo, chunk_len = _launch.sample_extent(
        offsets_ptr, n_rows, row, chunk, M, span, n_chunks, RAGGED, ALIGN, BLOCK)
    if RAGGED:
        x_base, c_base, u_base = base, base, base
    else:
        x_base = tl.multiple_of(row * stride_x, ALIGN)
        c_base = tl.multiple_of(row * stride_c, ALIGN)
        u_base = tl.multiple_of(row * stride_u, ALIGN)
    a_c = tl.load(coef_ptr + SLOT_A_C).to(tl.float32)
    a_u = tl.load(coef_ptr + SLOT_A_U).to(tl.float32)
    x0_a = tl.load(coef_ptr + SLOT_X0_A).to(tl.float32)
    x0_b = tl.load(coef_ptr + SLOT_X0_B).to(tl.float32)
    s_g = tl.zeros([BLOCK], dtype=tl.float64)
    s_gg = tl.zeros([BLOCK], dtype=tl.float64)
    s_d = tl.zeros([BLOCK], dtype=tl.float64)
    s_dd = tl.zeros([BLOCK], dtype=tl.float64)
    s_gd = tl.zeros([BLOCK], dtype=tl.float64)
    for start in range(0, chunk_len, BLOCK):
        offs = lo + start + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < n_el
        x = tl.load(x_ptr + x_base + offs, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_ptr + c_base + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + u_base + offs, mask=mask, other=0.0).to(tl.float32)
        v = a_c * c + a_u * u
        g = tl.where(mask, x0_a * x + x0_b * v, 0.0).to(tl.float64)
        d = tl.where(mask, c - v, 0.0).to(tl.float64)
        s_g += g
        s_gg += g * g
        s_d += d
        s_dd += d * d
        s_gd += g * d
    out = partial_ptr + (row * n_chunks + chunk) * 5
    tl.store(out + 0, tl.sum(s_g, axis=0))
    tl.store(out + 1, tl.sum(s_gg, axis=0))
    tl.store(out + 2, tl.sum(s_d, axis=0))
    tl.store(out + 3, tl.sum(s_dd, axis=0))
    tl.store(out + 4, tl.sum(s_gd, axis=0))


STEP_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=6)  # Heun's predictor on odd rows: 72 registers
STATS_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=4)
STATS_TILE = 512  # elements a stats program loads per tensor and iteration (a divisor of every chunk's span)


def coefficient_row(dt, a_c=1.0, a_u=0.0, x0_a=1.0, x0_b=0.0, dt_h=0.0) -> list[float]:
    """One row of the coefficient table, each value in its named slot (the rest is padding)."""
    row = [0.0] * N_COEF
    row[DT], row[A_C], row[A_U], row[X0_A], row[X0_B], row[DT_H] = dt, a_c, a_u, x0_a, x0_b, dt_h
    return row


def _samples(x, offsets) -> int:
    return x.shape[0] if offsets is None else offsets.shape[0] - 1


def rescale_slope(x, c, u, coef, phi: float, offsets: Optional[torch.Tensor] = None,
                  backend: str = "torch") -> torch.Tensor:
    """The rescale slope m = (k − 1)/Bq per sample (module docstring), [B] float32 (float64 for fp64 inputs), from
    float64 sums (the native extension's on backend="native", torch ops otherwise): the CPU paths and the tests.
    The Triton path forms m inside the step kernel."""
    c64 = coef.double().tolist() if coef.device.type == "cpu" else coef.double()
    a_c, a_u, x0_a, b = (c64[i] for i in (A_C, A_U, X0_A, X0_B))
    if backend == "native" and not _has_float64(x, c, u):
        # the [B, 5] sums are on the CPU: the dozen [B]-sized steps below in numpy (IEEE float64, the same
        # operations in the same order as the torch ops, so the same bits) cost a few microseconds, not ~50
        sums = native_cpu.rescale_sums(x, c, u, coef, offsets).numpy()
        per_row = x.numel() // x.shape[0] if x.shape[0] else 0
        n = float(per_row) if offsets is None else np.diff(offsets.numpy()).astype(np.float64) * per_row
        with np.errstate(divide="ignore", invalid="ignore"):
            m = _slope_from_sums(sums, n, phi, b, lambda z: np.maximum(z, 0.0), np.sqrt)
        return torch.from_numpy(m.astype(np.float32))
    else:
        xf, cf, uf = (z.reshape(x.shape[0], -1).double() for z in (x, c, u))
        v = a_c * cf + a_u * uf
        g, d = x0_a * xf + b * v, cf - v
        sums = torch.stack([g.sum(1), g.square().sum(1), d.sum(1), d.square().sum(1), (g * d).sum(1)], dim=1)
        n = float(xf.shape[1])
        if offsets is not None:  # ragged: per-sample sums over each sample's rows
            index = _launch.sample_index(offsets, x.shape[0])
            sums = torch.zeros(_samples(x, offsets), N_STATS, dtype=torch.float64,
                               device=x.device).index_add_(0, index, sums)
            n = (offsets[1:] - offsets[:-1]).double() * xf.shape[1]
    m = _slope_from_sums(sums, n, phi, b, lambda z: z.clamp_min(0), torch.sqrt)
    return m if _has_float64(x, c, u) else m.float()  # fp64 inputs keep m in fp64


def _slope_from_sums(sums, n, phi, b, clamp0, sqrt):
    """m per sample from the [B, 5] float64 moment sums (torch or numpy arrays; clamp0 and sqrt of that kind)."""
    # every moment below carries the same 1/n, which cancels in m
    var_g = clamp0(sums[:, S_GG] - sums[:, S_G] * sums[:, S_G] / n)
    var_d = clamp0(sums[:, S_DD] - sums[:, S_D] * sums[:, S_D] / n)
    cov = sums[:, S_GD] - sums[:, S_G] * sums[:, S_D] / n
    std_g = sqrt(var_g)
    std_c = sqrt(clamp0(var_g + b * (2 * cov + b * var_d)))
    den = std_g * (std_c + std_g)
    # x0_cfg without spread (a constant data prediction): no ratio of stds to take, the rescale is skipped (m = 0,
    # k = 1) where TRELLIS.2's formula is 0/0 or x/0 and would turn the whole sample NaN from then on
    num = phi * (2 * cov + b * var_d)
    safe = den + (den == 0)
    return (num / safe) * (den != 0)


def rescale_factor(x, c, u, coef, phi: float, offsets: Optional[torch.Tensor] = None,
                   backend: str = "torch") -> torch.Tensor:
    """k = φ·std(x0_c)/std(x0_cfg) + 1 − φ per sample, as 1 + Bq·m (`rescale_slope`)."""
    m = rescale_slope(x, c, u, coef, phi, offsets, backend)
    k = 1.0 + coef[X0_B].double() * m.double()
    return k.to(m.dtype)


def _strided(z, ragged):
    """(tensor, batch stride) as the kernels read it: ragged buffers contiguous, dense rows through their stride."""
    if ragged:
        return z.contiguous(), 0
    return _launch.rows(z)


def stats_plan(x, c, u, coef, offsets, target=None) -> _plan.LaunchPlan:
    """The rescale statistics pass; outputs["partial"] is [B, chunks, N_STATS] float64."""
    target = target or _plan.target_of(x.device)
    ragged = offsets is not None
    B, M = _samples(x, offsets), x[0].numel()
    (x, sx), (c, sc), (u, su) = (_strided(z, ragged) for z in (x, c, u))
    chunks, span, tile = _plan.row_grid(B, _launch.mean_sample_size(x, B, M, ragged), target, STATS_KERNEL)
    if target.cuda:  # five fp64 accumulators a lane: half the tile keeps unaligned rows within 128 registers
        tile = min(tile, STATS_TILE)
    partial = torch.empty((B, chunks, N_STATS), dtype=torch.float64, device=x.device)
    args = (x, c, u, coef, offsets if ragged else coef, partial, M, span, x.shape[0], chunks, sx, sc, su)
    align = _plan.pow2_alignment(M) if ragged else _plan.pow2_alignment(M, sx, sc, su)
    return _plan.LaunchPlan(_rescale_stats_kernel, (B, chunks), args,
                            dict(RAGGED=ragged, ALIGN=align, BLOCK=tile), STATS_KERNEL, {"partial": partial})


def step_plan(x, c, u, coef, out, h=None, model_in=None, x0=None, v_out=None, offsets=None, rescale=0.0,
              stats=None, target=None) -> _plan.LaunchPlan:
    """The step kernel's launch. With `stats` (a stats_plan's partial sums) it applies guidance rescale φ."""
    target = target or _plan.target_of(x.device)
    ragged = offsets is not None
    B, M = _samples(x, offsets), x[0].numel()
    rows = x.shape[0]
    n_model_in = 0 if model_in is None else model_in.shape[0] // max(rows, 1)
    (x, sx), (c, sc) = _strided(x, ragged), _strided(c, ragged)
    u_arg, su = _strided(u, ragged) if u is not None else (c, 0)
    chunks, span, tile = _plan.row_grid(B, _launch.mean_sample_size(x, B, M, ragged), target, STEP_KERNEL)
    dummy = out
    n_stat_chunks = stats.shape[1] if stats is not None else 0
    args = (x, c, u_arg, h if h is not None else dummy, coef, stats if stats is not None else coef,
            offsets if ragged else coef, out, model_in if model_in is not None else dummy,
            x0 if x0 is not None else dummy, v_out if v_out is not None else dummy,
            M, span, rows, chunks, n_stat_chunks, rows * M, sx, sc, su, float(rescale))
    align = _plan.pow2_alignment(M) if ragged else _plan.pow2_alignment(M, sx, sc, su)
    constexprs = dict(HAS_UNCOND=u is not None, HAS_H=h is not None, RESCALE=stats is not None,
                      N_MODEL_IN=n_model_in, WRITE_X0=x0 is not None, WRITE_V=v_out is not None, RAGGED=ragged,
                      ALIGN=align, BLOCK=tile, STAT_BLOCK=STAT_BLOCK)
    return _plan.LaunchPlan(_guided_step_kernel, (B, chunks), args, constexprs, STEP_KERNEL)


def guided_step(
    x: torch.Tensor, c: torch.Tensor, u: Optional[torch.Tensor], coef: torch.Tensor, *,
    out: torch.Tensor, h: Optional[torch.Tensor] = None, model_in: Optional[torch.Tensor] = None,
    x0: Optional[torch.Tensor] = None, v_out: Optional[torch.Tensor] = None,
    offsets: Optional[torch.Tensor] = None, rescale: float = 0.0, backend: str = "torch",
) -> None:
    """out = x + dt·v (+ dt_h·h), v = a_c·c + a_u·u, with optional side outputs: model_in (the next model input,
    [B] or [2B] rows), x0 (data prediction), v_out (v in fp32, for Heun).

    rescale φ > 0 (needs u): TRELLIS.2's guidance rescale, k = φ·std(x0_c)/std(x0_cfg) + 1 − φ per sample, formed
    on the device (one statistics pass, then the step; no host sync). offsets [B + 1] (int64, on the device):
    x, c, u, out... are [N, ...] rows of B ragged samples (sparse latents), sample b being rows
    offsets[b]:offsets[b + 1]; std is then over each sample's rows.

    out may be x itself (in-place state update); out, h, model_in, x0 and v_out must be contiguous. Under
    torch.compile it runs as the custom op flowkernels::guided_step, so a sampling step traces into one graph;
    eagerly it calls the implementation directly (the op's dispatch costs ~50 us a call, more than the step)."""
    step = guided_step_op if torch.compiler.is_compiling() else _guided_step_impl
    step(x, c, u, coef, out, h, model_in, x0, v_out, offsets, float(rescale), backend)


def _guided_step_impl(x, c, u, coef, out, h, model_in, x0, v_out, offsets, rescale: float, backend: str) -> None:
    if rescale > 0 and u is None:
        raise ValueError("guided_step: rescale > 0 needs the unconditional output u")
    rows = x.shape[0]
    if rows == 0 or x.numel() == 0 or _samples(x, offsets) == 0:
        return
    f64 = torch.float64
    fp64 = x.dtype is f64 or c.dtype is f64 or out.dtype is f64 or (u is not None and u.dtype is f64)
    if backend != "triton" or fp64:  # CPU paths (and fp64 anywhere): k per sample first, then one per row of x
        backend = "torch" if fp64 else backend  # the native step reads fp32 coefficients: fp64 stays in torch
        slope = rescale_slope(x, c, u, coef, rescale, offsets, backend) if rescale > 0 else None
        n_model_in = 0 if model_in is None else model_in.shape[0] // rows
        if backend == "native":  # ragged samples: m per sample, the kernel walks each sample's rows
            native_cpu.guided_step(x, c, u, coef, out, slope, h, model_in, n_model_in, x0, v_out, offsets)
            return
        if slope is not None and offsets is not None:
            slope = slope[_launch.sample_index(offsets, rows)]
        _guided_step_torch(x, c, u, coef, out, slope, h, model_in, n_model_in, x0, v_out)
        return
    stats = None
    if rescale > 0:
        stats = stats_plan(x, c, u, coef, offsets).launch().outputs["partial"]
    step_plan(x, c, u, coef, out, h, model_in, x0, v_out, offsets, rescale, stats).launch()


# out / model_in / x0 / v_out are written in place; `out` may be `x` itself (the in-place state update).
@torch.library.custom_op("flowkernels::guided_step", mutates_args=("out", "model_in", "x0", "v_out"))
def guided_step_op(
    x: torch.Tensor, c: torch.Tensor, u: Optional[torch.Tensor], coef: torch.Tensor, out: torch.Tensor,
    h: Optional[torch.Tensor], model_in: Optional[torch.Tensor], x0: Optional[torch.Tensor],
    v_out: Optional[torch.Tensor], offsets: Optional[torch.Tensor], rescale: float, backend: str,
) -> None:
    _guided_step_impl(x, c, u, coef, out, h, model_in, x0, v_out, offsets, rescale, backend)


@guided_step_op.register_fake
def _guided_step_fake(x, c, u, coef, out, h, model_in, x0, v_out, offsets, rescale, backend):
    return None


def _has_float64(*tensors) -> bool:
    return any(z is not None and z.dtype == torch.float64 for z in tensors)


def _guided_step_torch(x, c, u, coef, out, slope, h, model_in, n_model_in, x0, v_out):
    """The same arithmetic in torch ops, for CPU tensors: fp32, or fp64 when an input or the output is fp64."""
    acc = torch.float64 if _has_float64(x, c, u, out) else torch.float32
    cf = coef.to(acc)
    view = (-1,) + (1,) * (x.dim() - 1)
    xf = x.to(acc)
    v = cf[A_C] * c.to(acc)
    if u is not None:
        v = v + cf[A_U] * u.to(acc)
    if slope is not None:
        m = slope.to(acc).view(view)
        v = (1.0 + cf[X0_B] * m) * v + (m * cf[X0_A]) * xf
    x_next = xf + cf[DT] * v
    if h is not None:
        x_next = x_next + cf[DT_H] * h
    if x0 is not None:
        x0.copy_(cf[X0_A] * xf + cf[X0_B] * v)
    if v_out is not None:
        v_out.copy_(v)
    out.copy_(x_next)
    if model_in is not None:
        model_in.view(n_model_in, *x.shape).copy_(x_next.unsqueeze(0).expand(n_model_in, *x.shape))
