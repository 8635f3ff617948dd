"""One guided Euler (or Heun) update per pass over the state.

Every guidance formula (flowkernels.flow_algebra.guidance_weights) is the same linear combination v = a_c·c + a_u·u of the conditional output c and
the unconditional output u (Hunyuan/diffusers u + w(c−u): a_c = w, a_u = 1−w; TRELLIS (1+w)c − w·u; TRELLIS.2
g·c + (1−g)·u). A data prediction is also linear: x0 = A·x + Bq·v, so TRELLIS.2's guidance rescale, which scales the
guided x0 by k = φ·std(x0_c)/std(x0_cfg) + 1 − φ per sample, becomes v ← k·v + (k−1)(A/Bq)·x. The per-sample k needs
the standard deviations first: `_rescale_stats_kernel` is the extra pass that rescale costs.

Per-step scalars (dt, a_c, a_u, A, Bq, the Heun coefficient) are read from a small device tensor, not passed as
kernel arguments, so a CUDA graph captured once replays correctly for every step after a 48-byte copy.

The kernel reads c and u through batch strides, so the two halves of one [cond; uncond] model output are used in
place, and it can write the next model input (cast, optionally duplicated for the next [x; x] batch) in the same
pass, which removes the cast and the concatenation of the eager loop.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _launch, native_cpu

# Slots of one row of the per-step coefficient table: the step dt, the guidance weights a_c / a_u, the data
# prediction x0 = X0_A·x + X0_B·v, and Heun's corrector weight dt_h on the saved predictor velocity.
DT, A_C, A_U, X0_A, X0_B, DT_H = range(6)
N_COEF = 8  # padded
# the same slots as compile-time constants for the kernels
SLOT_DT, SLOT_A_C, SLOT_A_U, SLOT_X0_A, SLOT_X0_B, SLOT_DT_H = (tl.constexpr(i) for i in (DT, A_C, A_U, X0_A, X0_B, DT_H))


@triton.jit
def _guided_step_kernel(
    x_ptr, c_ptr, u_ptr, h_ptr, coef_ptr, k_ptr, out_ptr, model_in_ptr, x0_ptr, v_ptr,
    M, span, B, stride_x, stride_c, stride_u,
    HAS_UNCOND: tl.constexpr, HAS_H: tl.constexpr, RESCALE: tl.constexpr, N_MODEL_IN: tl.constexpr,
    WRITE_X0: tl.constexpr, WRITE_V: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    lo = tl.program_id(1).to(tl.int64) * span
    dt = tl.load(coef_ptr + SLOT_DT).to(tl.float32)
    a_c = tl.load(coef_ptr + SLOT_A_C).to(tl.float32)
    a_u = tl.load(coef_ptr + SLOT_A_U).to(tl.float32)
    x0_a = tl.load(coef_ptr + SLOT_X0_A).to(tl.float32)
    x0_b = tl.load(coef_ptr + SLOT_X0_B).to(tl.float32)
    dt_h = tl.load(coef_ptr + SLOT_DT_H).to(tl.float32)
    if RESCALE:
        k = tl.load(k_ptr + row).to(tl.float32)
        k_x = (k - 1.0) * x0_a / x0_b
    for start in range(0, span, BLOCK):
        offs = lo + start + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < M
        x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        v = a_c * tl.load(c_ptr + row * stride_c + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_UNCOND:
            v += a_u * tl.load(u_ptr + row * stride_u + offs, mask=mask, other=0.0).to(tl.float32)
        if RESCALE:
            v = k * v + k_x * x
        x_next = x + dt * v
        if HAS_H:  # Heun's corrector: the predictor's velocity, saved by the first stage
            x_next += dt_h * tl.load(h_ptr + row * M + offs, mask=mask, other=0.0)
        tl.store(out_ptr + row * M + offs, x_next.to(out_ptr.dtype.element_ty), mask=mask)
        if N_MODEL_IN >= 1:
            tl.store(model_in_ptr + row * M + offs, x_next.to(model_in_ptr.dtype.element_ty), mask=mask)
        if N_MODEL_IN == 2:
            tl.store(model_in_ptr + (row + B) * M + offs, x_next.to(model_in_ptr.dtype.element_ty), mask=mask)
        if WRITE_X0:
            tl.store(x0_ptr + row * M + offs, (x0_a * x + x0_b * v).to(x0_ptr.dtype.element_ty), mask=mask)
        if WRITE_V:
            tl.store(v_ptr + row * M + offs, v, mask=mask)


@triton.jit
def _rescale_stats_kernel(
    x_ptr, c_ptr, u_ptr, coef_ptr, partial_ptr, M, span, n_chunks, stride_x, stride_c, stride_u,
    BLOCK: tl.constexpr,
):
    """Per (sample, chunk): sums and sums of squares of x0 from c alone and from the guided v (fp64 lanes:
    the variance is formed as E[x²] − E[x]², which must not cancel in fp32)."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    lo = chunk.to(tl.int64) * span
    a_c = tl.load(coef_ptr + SLOT_A_C).to(tl.float32)
    a_u = tl.load(coef_ptr + SLOT_A_U).to(tl.float32)
    x0_a = tl.load(coef_ptr + SLOT_X0_A).to(tl.float32)
    x0_b = tl.load(coef_ptr + SLOT_X0_B).to(tl.float32)
    s1c = tl.zeros([BLOCK], dtype=tl.float64)
    s2c = tl.zeros([BLOCK], dtype=tl.float64)
    s1g = tl.zeros([BLOCK], dtype=tl.float64)
    s2g = tl.zeros([BLOCK], dtype=tl.float64)
    for start in range(0, span, BLOCK):
        offs = lo + start + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < M
        x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_ptr + row * stride_c + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + row * stride_u + offs, mask=mask, other=0.0).to(tl.float32)
        x0c = tl.where(mask, x0_a * x + x0_b * c, 0.0).to(tl.float64)
        x0g = tl.where(mask, x0_a * x + x0_b * (a_c * c + a_u * u), 0.0).to(tl.float64)
        s1c += x0c
        s2c += x0c * x0c
        s1g += x0g
        s2g += x0g * x0g
    base = partial_ptr + (row * n_chunks + chunk) * 4
    tl.store(base + 0, tl.sum(s1c, axis=0))
    tl.store(base + 1, tl.sum(s2c, axis=0))
    tl.store(base + 2, tl.sum(s1g, axis=0))
    tl.store(base + 3, tl.sum(s2g, axis=0))


def coefficient_row(dt, a_c=1.0, a_u=0.0, x0_a=1.0, x0_b=0.0, dt_h=0.0) -> list[float]:
    """One row of the coefficient table, each value in its named slot (the rest is padding)."""
    row = [0.0] * N_COEF
    row[DT], row[A_C], row[A_U], row[X0_A], row[X0_B], row[DT_H] = dt, a_c, a_u, x0_a, x0_b, dt_h
    return row


def _rescale_factor_from_sums(s: torch.Tensor, M: int, phi: float) -> torch.Tensor:
    """k = φ·std(x0_c)/std(x0_cfg) + 1 − φ from [B, 4] float64 sums (unbiased std, as torch.std)."""
    var_c = (s[:, 1] - s[:, 0] * s[:, 0] / M) / (M - 1)
    var_g = (s[:, 3] - s[:, 2] * s[:, 2] / M) / (M - 1)
    ratio = torch.sqrt(var_c.clamp_min(0) / var_g.clamp_min(0))
    return (phi * ratio + (1.0 - phi)).float()


def rescale_factor(x, c, u, coef, phi: float, backend: str) -> torch.Tensor:
    B, M = x.shape[0], x[0].numel()
    if backend == "native":
        return _rescale_factor_from_sums(native_cpu.rescale_sums(x, c, u, coef), M, phi)
    if backend != "triton":
        c64 = coef.double().tolist()  # the torch path runs on CPU tensors: no sync
        a_c, a_u, x0_a, x0_b = c64[A_C], c64[A_U], c64[X0_A], c64[X0_B]
        xf, cf, uf = (z.reshape(B, -1).double() for z in (x, c, u))
        x0c = x0_a * xf + x0_b * cf
        x0g = x0_a * xf + x0_b * (a_c * cf + a_u * uf)
        s = torch.stack([x0c.sum(1), x0c.square().sum(1), x0g.sum(1), x0g.square().sum(1)], dim=1)
        return _rescale_factor_from_sums(s, M, phi)
    x, sx = _launch.rows(x)
    c, sc = _launch.rows(c)
    u, su = _launch.rows(u)
    chunks, span, tile = _launch.grid_for(B, M, x.device)
    partial = torch.empty((B, chunks, 4), dtype=torch.float64, device=x.device)
    _rescale_stats_kernel[(B, chunks)](x, c, u, coef, partial, M, span, chunks, sx, sc, su, BLOCK=tile, num_warps=4)
    return _rescale_factor_from_sums(partial.sum(dim=1), M, phi)


def guided_step(
    x: torch.Tensor, c: torch.Tensor, u: Optional[torch.Tensor], coef: torch.Tensor, *,
    out: torch.Tensor, k: Optional[torch.Tensor] = None, h: Optional[torch.Tensor] = None,
    model_in: Optional[torch.Tensor] = None, x0: Optional[torch.Tensor] = None, v_out: Optional[torch.Tensor] = None,
    backend: str = "torch",
) -> None:
    """out = x + dt·v (+ dt_h·h), v = a_c·c + a_u·u (rescaled by k), with optional side outputs:
    model_in (the next model input, [B] or [2B] rows), x0 (data prediction), v_out (v in fp32, for Heun).

    out may be x itself (in-place state update); out, h, model_in, x0 and v_out must be contiguous. Under
    torch.compile it runs as the custom op flowkernels::guided_step, so a sampling step traces into one graph;
    eagerly it calls the implementation directly (the op's dispatch costs ~50 us a call, more than the step)."""
    step = guided_step_op if torch.compiler.is_compiling() else _guided_step_impl
    step(x, c, u, coef, out, k, h, model_in, x0, v_out, backend)


def _guided_step_impl(x, c, u, coef, out, k, h, model_in, x0, v_out, backend: str) -> None:
    B = x.shape[0]
    M = x[0].numel() if B else 0
    n_model_in = 0 if model_in is None else model_in.shape[0] // max(B, 1)
    if B == 0 or M == 0:
        return
    if backend == "native":
        native_cpu.guided_step(x, c, u, coef, out, k, h, model_in, n_model_in, x0, v_out)
        return
    if backend != "triton":
        _guided_step_torch(x, c, u, coef, out, k, h, model_in, n_model_in, x0, v_out)
        return
    x, sx = _launch.rows(x)
    c, sc = _launch.rows(c)
    u_arg, su = _launch.rows(u) if u is not None else (c, 0)
    chunks, span, tile = _launch.grid_for(B, M, x.device)
    dummy = out
    _guided_step_kernel[(B, chunks)](
        x, c, u_arg, h if h is not None else dummy, coef, k if k is not None else coef, out,
        model_in if model_in is not None else dummy, x0 if x0 is not None else dummy,
        v_out if v_out is not None else dummy,
        M, span, B, sx, sc, su,
        HAS_UNCOND=u is not None, HAS_H=h is not None, RESCALE=k is not None, N_MODEL_IN=n_model_in,
        WRITE_X0=x0 is not None, WRITE_V=v_out is not None, BLOCK=tile, num_warps=4)


# out / model_in / x0 / v_out are written in place; `out` may be `x` itself (the in-place state update).
@torch.library.custom_op("flowkernels::guided_step", mutates_args=("out", "model_in", "x0", "v_out"))
def guided_step_op(
    x: torch.Tensor, c: torch.Tensor, u: Optional[torch.Tensor], coef: torch.Tensor, out: torch.Tensor,
    k: Optional[torch.Tensor], h: Optional[torch.Tensor], model_in: Optional[torch.Tensor],
    x0: Optional[torch.Tensor], v_out: Optional[torch.Tensor], backend: str,
) -> None:
    _guided_step_impl(x, c, u, coef, out, k, h, model_in, x0, v_out, backend)


@guided_step_op.register_fake
def _guided_step_fake(x, c, u, coef, out, k, h, model_in, x0, v_out, backend):
    return None


def _guided_step_torch(x, c, u, coef, out, k, h, model_in, n_model_in, x0, v_out):
    """The same arithmetic in fp32 torch ops, for CPU tensors."""
    cf = coef.float()
    view = (-1,) + (1,) * (x.dim() - 1)
    xf = x.float()
    v = cf[A_C] * c.float()
    if u is not None:
        v = v + cf[A_U] * u.float()
    if k is not None:
        kk = k.float().view(view)
        v = kk * v + ((kk - 1.0) * (cf[X0_A] / cf[X0_B])) * xf
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
