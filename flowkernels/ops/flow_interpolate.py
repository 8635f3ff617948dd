"""x_t (and optionally the regression target) from data, noise and per-sample t, in one pass."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import flow_algebra as fa
from . import _launch, _plan, native_cpu
from .flow_coefficients import flow_coefficients
from .philox_normal import normal_quads

W_NONE = tl.constexpr(fa.W_NONE)  # interpolation needs no loss weight


# seed, n_rows and n_chunks vary per batch: runtime integers (seed int64), one compiled variant per configuration
@triton.jit(do_not_specialize=["seed", "n_rows", "n_chunks"])
def _flow_interpolate_kernel(
    x1_ptr, noise_ptr, t_ptr, offsets_ptr, n_rows: tl.int64, xt_ptr, target_ptr, seed: tl.int64,
    M, span, n_chunks: tl.int32, stride_x1, stride_noise, stride_t, sigma_min,
    SCHEME: tl.constexpr, PREDICTION: tl.constexpr, HAS_NOISE: tl.constexpr, WRITE_TARGET: tl.constexpr,
    RAGGED: tl.constexpr, ALIGN: tl.constexpr, BLOCK: tl.constexpr, WIDTH: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    base, n_el, _, chunk_len = _launch.sample_extent(
        offsets_ptr, n_rows, row, chunk, M, span, n_chunks, RAGGED, ALIGN, BLOCK)
    if RAGGED:  # t is broadcast to the sample's rows here: no per-row t buffer, no loop over the batch
        x1_base, noise_base = base, base
    else:  # ALIGN divides both row strides (host-checked)
        x1_base = tl.multiple_of(row * stride_x1, ALIGN)
        noise_base = tl.multiple_of(row * stride_noise, ALIGN)
    t = tl.load(t_ptr + row * stride_t).to(tl.float64)  # per-sample scalars in fp64: one rounding each
    a, b, p, cD, cN, w = flow_coefficients(t, sigma_min, SCHEME, PREDICTION, W_NONE)
    a = a.to(tl.float32)
    b = b.to(tl.float32)
    tD = (-cD / p).to(tl.float32)
    tN = (-cN / p).to(tl.float32)
    lo, hi = _launch.quad_aligned_span(base, n_el, chunk, chunk_len, n_chunks, ALIGN)
    for start in range(lo, hi, BLOCK):
        offs = _launch.tile_offsets(start, BLOCK // WIDTH, WIDTH)
        mask = (offs >= 0) & (offs < hi)
        d = tl.load(x1_ptr + x1_base + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_NOISE:
            n = tl.load(noise_ptr + noise_base + offs, mask=mask, other=0.0).to(tl.float32)
        else:  # Philox keyed by the flat index, four normals per call: the loss regenerates the same values
            n = normal_quads(seed, base + start, BLOCK // 4)
        tl.store(xt_ptr + base + offs, (a * d + b * n).to(xt_ptr.dtype.element_ty), mask=mask)
        if WRITE_TARGET:
            tgt = tD * d + tN * n
            tl.store(target_ptr + base + offs, tgt.to(target_ptr.dtype.element_ty), mask=mask)


INTERPOLATE_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=8)
INTERPOLATE_SEEDED_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=6)  # Philox keeps more values live


def _interpolate_triton(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, xt, target):
    B, M, ragged = _launch.layout(x1, offsets)
    if B == 0 or x1.numel() == 0:
        return
    interpolate_plan(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, xt, target).launch()


def interpolate_plan(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, xt, target,
                     launch_target=None) -> _plan.LaunchPlan:
    launch_target = launch_target or _plan.target_of(x1.device)
    B, M, ragged = _launch.layout(x1, offsets)
    if ragged:  # the kernel walks rows of contiguous [N, C] buffers (a no-op for the usual feature matrices)
        x1 = x1.contiguous()
        sx = sn = 0
        noise_arg = noise.contiguous() if noise is not None else x1
    else:
        x1, sx = _launch.rows(x1)
        noise_arg, sn = _launch.rows(noise) if noise is not None else (x1, 0)
    spec = INTERPOLATE_KERNEL if noise is not None else INTERPOLATE_SEEDED_KERNEL
    chunks, span, tile = _plan.row_grid(B, _launch.mean_sample_size(x1, B, M, ragged), launch_target, spec)
    args = (x1, noise_arg, t, offsets if ragged else t, x1.shape[0], xt, target if target.numel() else xt,
            _launch.seed_value(seed) if noise is None else 0, M, span, chunks, sx, sn, t.stride(0), sigma_min)
    align = _plan.pow2_alignment(M) if ragged else _plan.pow2_alignment(M, sx, sn)
    constexprs = dict(SCHEME=scheme, PREDICTION=prediction, HAS_NOISE=noise is not None,
                      WRITE_TARGET=target.numel() > 0, RAGGED=ragged, ALIGN=align, BLOCK=tile,
                      WIDTH=_launch.tile_width(noise is not None))
    return _plan.LaunchPlan(_flow_interpolate_kernel, (B, chunks), args, constexprs, spec)


def _interpolate_torch(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, xt, target):
    if noise is None:
        noise = _launch.seeded_noise_torch(_launch.seed_value(seed), x1.shape, x1.device)
    a, b, p, cD, cN, _ = fa.coefficients_torch(t, sigma_min, scheme, prediction, fa.W_NONE)
    if offsets is not None:
        index = _launch.sample_index(offsets, x1.shape[0])
        a, b, p, cD, cN = (c[index] for c in (a, b, p, cD, cN))
    view = (-1,) + (1,) * (x1.dim() - 1)
    # fp32 as the kernel; fp64 throughout when an input or the output is fp64
    acc = torch.float64 if torch.float64 in (x1.dtype, noise.dtype, xt.dtype) else torch.float32
    d, n = x1.to(acc), noise.to(acc)
    xt.copy_(a.to(acc).view(view) * d + b.to(acc).view(view) * n)
    if target.numel():
        target.copy_((-cD / p).to(acc).view(view) * d + (-cN / p).to(acc).view(view) * n)


@torch.library.custom_op("flowkernels::flow_interpolate", mutates_args=())
def flow_interpolate_op(
    x1: torch.Tensor, noise: Optional[torch.Tensor], t: torch.Tensor, seed: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor], scheme: int, prediction: int, sigma_min: float, write_target: bool,
    out_dtype: torch.dtype, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _interpolate_impl(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, write_target, out_dtype,
                             backend)


def _interpolate_impl(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, write_target, out_dtype, backend):
    xt = torch.empty(x1.shape, dtype=out_dtype, device=x1.device)
    target = torch.empty(x1.shape if write_target else (0,), dtype=out_dtype, device=x1.device)
    fp64 = torch.float64 in (x1.dtype, out_dtype) or (noise is not None and noise.dtype == torch.float64)
    # float64 takes the torch path, in fp64, on any device
    impl = _interpolate_torch if fp64 else _IMPLEMENTATIONS.get(backend, _interpolate_torch)
    impl(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, xt, target)
    return xt, target


_IMPLEMENTATIONS = {"triton": _interpolate_triton, "native": native_cpu.interpolate}


def flow_interpolate_call(*args):
    """flow_interpolate_op's arguments: the custom op under torch.compile, the implementation directly otherwise
    (the op's dispatch costs tens of microseconds, as much as the whole CPU kernel on a small batch)."""
    return (flow_interpolate_op if torch.compiler.is_compiling() else _interpolate_impl)(*args)


@flow_interpolate_op.register_fake
def _(x1, noise, t, seed, offsets, scheme, prediction, sigma_min, write_target, out_dtype, backend):
    xt = x1.new_empty(x1.shape, dtype=out_dtype)
    return xt, x1.new_empty(x1.shape if write_target else (0,), dtype=out_dtype)
