"""Per-sample flow-matching MSE and its gradient w.r.t. the model output, in one pass.

The target is rebuilt on the fly from (x1, noise or seed, t), so neither the target nor the noise is ever
stored. The gradient is produced in the forward pass (Liger-style); backward only scales each row by the
upstream gradient of its per-sample loss.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ..flow_algebra import coefficients_torch
from . import _launch, _plan, native_cpu
from .flow_coefficients import flow_coefficients
from .philox_normal import normal_quads


# The seed, the row count and the chunk count change from batch to batch: they are plain runtime integers (seed
# always int64), so a training loop with random seeds and ragged batches compiles one variant per configuration.
@triton.jit(do_not_specialize=["seed", "n_rows", "n_chunks"])
def _flow_loss_kernel(
    pred_ptr, x1_ptr, noise_ptr, t_ptr, weight_ptr, offsets_ptr, n_rows: tl.int64, partial_ptr, grad_ptr,
    seed: tl.int64, M, span, n_chunks: tl.int32, stride_pred, stride_x1, stride_noise, stride_t, stride_w, sigma_min,
    SCHEME: tl.constexpr, PREDICTION: tl.constexpr, WEIGHTING: tl.constexpr, HAS_NOISE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, COMPUTE_GRAD: tl.constexpr, RAGGED: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK: tl.constexpr, WIDTH: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    base, n_el, lo, chunk_len = _launch.sample_extent(
        offsets_ptr, n_rows, row, chunk, M, span, n_chunks, RAGGED, ALIGN, BLOCK)
    if RAGGED:  # contiguous [N, C] buffers; the loss is a per-sample sum (the caller divides by its count)
        pred_base, x1_base, noise_base = base, base, base
    else:  # ALIGN divides every row stride (host-checked): 128-bit accesses for rows of 4k fp32 / 8k bf16 elements
        pred_base = tl.multiple_of(row * stride_pred, ALIGN)
        x1_base = tl.multiple_of(row * stride_x1, ALIGN)
        noise_base = tl.multiple_of(row * stride_noise, ALIGN)
    # per-sample scalars in fp64 (a few flops per program) so the weights add no fp32 rounding error
    t = tl.load(t_ptr + row * stride_t).to(tl.float64)
    a, b, p, cD, cN, w = flow_coefficients(t, sigma_min, SCHEME, PREDICTION, WEIGHTING)
    if HAS_WEIGHT:
        w = w * tl.load(weight_ptr + row * stride_w).to(tl.float64)
    # t outside [0, 1] poisons the loss instead of a host-side check (which would need a sync)
    w = tl.where((t >= 0.0) & (t <= 1.0), w, float("nan"))
    if RAGGED:
        w_over_m = w
    else:
        w_over_m = w / M  # fp64 scalar
    grad_scale = (2.0 * w_over_m * p).to(tl.float32)
    p = p.to(tl.float32)
    cD = cD.to(tl.float32)
    cN = cN.to(tl.float32)
    acc = tl.zeros([BLOCK // WIDTH, WIDTH], dtype=tl.float32)
    lo, hi = _launch.quad_aligned_span(base, n_el, chunk, chunk_len, n_chunks, ALIGN)
    for start in range(lo, hi, BLOCK):
        offs = _launch.tile_offsets(start, BLOCK // WIDTH, WIDTH)
        mask = (offs >= 0) & (offs < hi)
        o = tl.load(pred_ptr + pred_base + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.load(x1_ptr + x1_base + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_NOISE:
            n = tl.load(noise_ptr + noise_base + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            n = normal_quads(seed, base + start, BLOCK // 4)  # the same stream flow_interpolate drew
        r = p * o + cD * d + cN * n
        r = tl.where(mask, r, 0.0)
        acc += r * r
        if COMPUTE_GRAD:
            tl.store(grad_ptr + base + offs, (grad_scale * r).to(grad_ptr.dtype.element_ty), mask=mask)
    total = tl.sum(tl.sum(acc, axis=1), axis=0)
    tl.store(partial_ptr + row * n_chunks + chunk, (total.to(tl.float64) * w_over_m).to(tl.float32))


@triton.jit(do_not_specialize=["n_rows", "n_chunks"])
def _scale_rows_kernel(grad_ptr, scale_ptr, offsets_ptr, n_rows: tl.int64, out_ptr, M, span, n_chunks: tl.int32,
                       stride_scale, RAGGED: tl.constexpr, ALIGN: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base, n_el, lo, chunk_len = _launch.sample_extent(
        offsets_ptr, n_rows, row, tl.program_id(1), M, span, n_chunks, RAGGED, ALIGN, BLOCK)
    s = tl.load(scale_ptr + row * stride_scale).to(tl.float32)
    for start in range(0, chunk_len, BLOCK):
        offs = lo + start + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < n_el
        g = tl.load(grad_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + base + offs, (g * s).to(out_ptr.dtype.element_ty), mask=mask)


LOSS_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=8)
# Philox keeps more values live: up to 96 registers (ragged rows of odd width), so 5 programs fit per SM
LOSS_SEEDED_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=5)
SCALE_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=8)


def loss_plan(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, grad,
              target=None) -> _plan.LaunchPlan:
    """The loss kernel's launch; outputs["partial"] holds [B, chunks] partial sums of the per-sample losses."""
    target = target or _plan.target_of(pred.device)
    B, M, ragged = _launch.layout(pred, offsets)
    if ragged:  # the kernel walks rows of contiguous [N, C] buffers (a no-op for the usual feature matrices)
        pred, x1 = pred.contiguous(), x1.contiguous()
        sp = sx = sn = 0
        noise_arg = noise.contiguous() if noise is not None else x1
    else:
        pred, sp = _launch.rows(pred)
        x1, sx = _launch.rows(x1)
        noise_arg, sn = _launch.rows(noise) if noise is not None else (x1, 0)
    spec = LOSS_KERNEL if noise is not None else LOSS_SEEDED_KERNEL
    chunks, span, tile = _plan.row_grid(B, _launch.mean_sample_size(pred, B, M, ragged), target, spec)
    partial = torch.empty((B, chunks), dtype=torch.float32, device=pred.device)
    align = _plan.pow2_alignment(M) if ragged else _plan.pow2_alignment(M, sp, sx, sn)
    args = (pred, x1, noise_arg, t, weight if weight is not None else t, offsets if ragged else t, pred.shape[0],
            partial, grad if grad.numel() else partial, _launch.seed_value(seed) if noise is None else 0,
            M, span, chunks, sp, sx, sn, t.stride(0), weight.stride(0) if weight is not None else 0, sigma_min)
    constexprs = dict(SCHEME=scheme, PREDICTION=prediction, WEIGHTING=weighting, HAS_NOISE=noise is not None,
                      HAS_WEIGHT=weight is not None, COMPUTE_GRAD=grad.numel() > 0, RAGGED=ragged, ALIGN=align,
                      BLOCK=tile, WIDTH=_launch.tile_width(noise is not None))
    return _plan.LaunchPlan(_flow_loss_kernel, (B, chunks), args, constexprs, spec, {"partial": partial})


def _loss_triton(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, grad):
    partial = loss_plan(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min,
                        grad).launch().outputs["partial"]
    return partial[:, 0] if partial.shape[1] == 1 else partial.sum(dim=1)


def has_float64(*tensors) -> bool:
    return any(z is not None and z.dtype == torch.float64 for z in tensors)


def gradient_dtype(pred_dtype: torch.dtype) -> torch.dtype:
    """The dtype the forward pass stores d loss / d pred in: fp32 for 16-bit predictions, so that the backward
    scale rounds into pred's dtype once (storing it in 16 bits would round it twice); pred's own dtype otherwise."""
    return pred_dtype if pred_dtype in (torch.float32, torch.float64) else torch.float32


def loss_dtype(pred, x1, noise) -> torch.dtype:
    """Per-sample losses are fp32, fp64 when an input is fp64 (the fp64 torch path)."""
    return torch.float64 if has_float64(pred, x1, noise) else torch.float32


def _loss_torch(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, grad):
    """The loss and gradient in torch ops: fp32 arithmetic as the kernel's, or fp64 throughout for fp64 inputs."""
    B, M, ragged = _launch.layout(pred, offsets)
    acc = loss_dtype(pred, x1, noise)
    if noise is None:
        noise = _launch.seeded_noise_torch(_launch.seed_value(seed), x1.shape, x1.device)
    a, b, p, cD, cN, w = coefficients_torch(t, sigma_min, scheme, prediction, weighting)
    if weight is not None:
        w = w * weight.double()
    w = torch.where((t >= 0) & (t <= 1), w, torch.full_like(w, float("nan")))
    index = _launch.sample_index(offsets, pred.shape[0]) if ragged else None
    per_row = (lambda c: c[index]) if ragged else (lambda c: c)
    view = (-1,) + (1,) * (pred.dim() - 1)
    p_, cD_, cN_ = (per_row(c).to(acc).view(view) for c in (p, cD, cN))
    r = p_ * pred.to(acc) + cD_ * x1.to(acc) + cN_ * noise.to(acc)
    norm = 1.0 if ragged else 1.0 / M  # ragged: per-sample sums (the caller divides by the row counts)
    if grad.numel():
        grad.copy_(per_row(2.0 * norm * w * p).to(acc).view(view) * r)
    sq = r.square().reshape(pred.shape[0], -1).sum(dim=1)
    if ragged:
        sq = torch.zeros(B, dtype=sq.dtype, device=sq.device).index_add_(0, index, sq)
    return (w * norm * sq.double()).to(acc)


@torch.library.custom_op("flowkernels::flow_matching_loss", mutates_args=())
def flow_loss_op(
    pred: torch.Tensor, x1: torch.Tensor, noise: Optional[torch.Tensor], t: torch.Tensor,
    weight: Optional[torch.Tensor], seed: Optional[torch.Tensor], offsets: Optional[torch.Tensor], scheme: int,
    prediction: int, weighting: int, sigma_min: float, compute_grad: bool, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense: per-sample weighted means [B]. Ragged (offsets [B + 1] over the rows of pred): per-sample weighted
    sums, and a gradient of those sums."""
    return _loss_impl(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min,
                      compute_grad, backend)


def _loss_impl(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, compute_grad,
               backend):
    B, M, ragged = _launch.layout(pred, offsets)
    grad = torch.empty(pred.shape if compute_grad else (0,), dtype=gradient_dtype(pred.dtype), device=pred.device)
    if B == 0 or pred.numel() == 0:  # a mean over zero elements is NaN, as in torch; a sum is 0
        return torch.full((B,), 0.0 if ragged else float("nan"), device=pred.device,
                          dtype=loss_dtype(pred, x1, noise)), grad.zero_()
    # float64 inputs take the torch path, in fp64, on any device
    impl = _loss_torch if has_float64(pred, x1, noise) else \
        {"triton": _loss_triton, "native": native_cpu.loss}.get(backend, _loss_torch)
    loss = impl(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, grad)
    return loss, grad


@flow_loss_op.register_fake
def _(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, compute_grad, backend):
    grad = pred.new_empty(pred.shape if compute_grad else (0,), dtype=gradient_dtype(pred.dtype))
    return pred.new_empty((t.shape[0],), dtype=loss_dtype(pred, x1, noise)), grad


@torch.library.custom_op("flowkernels::scale_rows", mutates_args=())
def scale_rows_op(grad: torch.Tensor, row_scale: torch.Tensor, offsets: Optional[torch.Tensor],
                  backend: str, out_dtype: torch.dtype) -> torch.Tensor:
    """out[b, ...] = grad[b, ...] * row_scale[b] (ragged: rows offsets[b]:offsets[b+1] of sample b), computed in
    fp32 (fp64 for fp64 gradients) and rounded once into out_dtype."""
    return _scale_rows_impl(grad, row_scale, offsets, backend, out_dtype)


def _scale_rows_impl(grad, row_scale, offsets, backend, out_dtype, out=None):
    """out = grad scaled by rows, in out_dtype (out may be grad itself when their dtypes agree: each element is read
    before it is written)."""
    out = torch.empty(grad.shape, dtype=out_dtype, device=grad.device) if out is None else out
    B, M, ragged = _launch.layout(grad, offsets)
    if B == 0 or grad.numel() == 0:
        return out
    if backend == "native" and grad.dtype != torch.float64:
        return native_cpu.scale_rows(grad, row_scale, offsets, out)
    if backend != "triton" or grad.dtype == torch.float64:  # fp64 gradients: the torch path, in fp64
        acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
        scale = row_scale.to(acc)[_launch.sample_index(offsets, grad.shape[0])] if ragged else row_scale.to(acc)
        return out.copy_(grad.to(acc) * scale.view((-1,) + (1,) * (grad.dim() - 1)))
    scale_rows_plan(grad, row_scale, offsets, out).launch()
    return out


def scale_rows_plan(grad, row_scale, offsets, out, target=None) -> _plan.LaunchPlan:
    """grad is contiguous (the loss wrote it); out is a fresh contiguous buffer."""
    target = target or _plan.target_of(grad.device)
    B, M, ragged = _launch.layout(grad, offsets)
    chunks, span, tile = _plan.row_grid(B, _launch.mean_sample_size(grad, B, M, ragged), target, SCALE_KERNEL)
    args = (grad, row_scale, offsets if ragged else row_scale, grad.shape[0], out, M, span, chunks, row_scale.stride(0))
    return _plan.LaunchPlan(_scale_rows_kernel, (B, chunks), args,
                            dict(RAGGED=ragged, ALIGN=_plan.pow2_alignment(M), BLOCK=tile), SCALE_KERNEL)


@scale_rows_op.register_fake
def _(grad, row_scale, offsets, backend, out_dtype):
    return grad.new_empty(grad.shape, dtype=out_dtype)


class _LossInputs(NamedTuple):
    """flow_loss_op's inputs by name, in the op's order (autograd hands them over as a tuple)."""
    pred: Any
    x1: Any
    noise: Any
    t: Any
    weight: Any
    seed: Any
    offsets: Any
    scheme: Any
    prediction: Any
    weighting: Any
    sigma_min: Any
    compute_grad: Any
    backend: Any


_COMPUTE_GRAD = _LossInputs._fields.index("compute_grad")


def _setup_context(ctx, inputs, output):
    args = _LossInputs(*inputs)
    _loss, grad = output
    ctx.backend, ctx.offsets, ctx.pred_dtype = args.backend, args.offsets, args.pred.dtype
    ctx.save_for_backward(grad)
    ctx.mark_non_differentiable(grad)
    # the stored gradient is non-differentiable: without this, autograd would fill a zeros tensor of pred's size for
    # its (never used) incoming gradient on every backward, a whole extra write pass
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_loss, _grad_of_grad):
    """d loss / d pred was computed in the forward pass; only pred gets a gradient (the kernels refuse inputs that
    require grad elsewhere)."""
    (grad,) = ctx.saved_tensors
    grad_pred = None
    if grad_loss is not None:
        grad_pred = scale_rows_op(grad, grad_loss.contiguous(), ctx.offsets, ctx.backend, ctx.pred_dtype)
    no_grads = _LossInputs(*([None] * len(_LossInputs._fields)))
    return tuple(no_grads._replace(pred=grad_pred))


flow_loss_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerLoss(torch.autograd.Function):
    """flow_loss_op's autograd outside torch.compile, without the custom op's dispatch (tens of microseconds per
    call and per backward: as much as the whole CPU kernel on a small batch). Same setup and backward."""

    # forward(ctx, ...) rather than a separate setup_context: with the latter, every apply binds default
    # arguments through inspect.signature (~0.1 ms); everything but pred in one tuple, as apply() inspects each
    # argument
    @staticmethod
    def forward(ctx, pred, rest):
        inputs = (pred,) + rest
        output = _loss_impl(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad_loss, _grad_of_grad):
        _refuse_double_backward()
        (grad,) = ctx.saved_tensors
        grad_pred = None
        if grad_loss is not None:
            # When the graph is freed after this backward, nothing reads the saved gradient again: scale it in
            # place (no new buffer, whose fresh pages cost as much as the scaling on CPU). retain_graph /
            # create_graph keep it, so those get a new tensor.
            # A 16-bit pred's gradient is saved in fp32: the scaled result needs its own buffer in pred's dtype.
            out = None if _graph_kept() or grad.dtype != ctx.pred_dtype else grad
            grad_pred = _scale_rows_impl(grad, grad_loss.contiguous(), ctx.offsets, ctx.backend, ctx.pred_dtype,
                                         out=out)
        return grad_pred, None


def _refuse_double_backward():
    """create_graph=True runs backward with grad mode on, expecting a gradient that is itself differentiable in
    pred. The stored gradient is a constant to autograd: its second derivative would silently be zero (a gradient
    penalty through this loss would be wrong), so that is a named error instead."""
    if torch.is_grad_enabled():
        raise RuntimeError("flow_matching_loss does not support double backward (create_graph=True): its gradient is "
                           "formed in the forward kernel and has no graph of its own, so second derivatives through "
                           "it would be zero; compute the loss with torch ops where they are needed")


def _graph_kept() -> bool:
    """Whether the running backward keeps the graph (retain_graph / create_graph); True when torch cannot say."""
    keep = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if keep is None else bool(keep())


class _ReducedLoss(torch.autograd.Function):
    """A CPU batch's loss reduced to one number outside torch.compile ("mean" or "sum" of a dense batch, "mean" over
    all elements of a ragged one): one native pass computes the per-sample losses and the gradient of the reduced
    loss (the reduction's 1 / B or 1 / elements folded into the kernel's gradient scale), so the usual
    `loss.backward()`, whose upstream gradient is exactly 1, hands the stored gradient over without another pass
    over it. Any other upstream gradient, or one reaching the per-sample values too, costs the one scaling pass
    flow_loss_op's backward does. The arithmetic is flow_loss_op's up to where the reduction's factor is rounded
    (an ulp of the gradient)."""

    @staticmethod
    def forward(ctx, pred, rest):
        # everything but pred in one tuple: apply() inspects each argument (microseconds for a dozen), and only
        # pred is differentiable (the public API refuses the others requiring grad)
        x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min, reduction, want_per_sample = rest
        grad = torch.empty(pred.shape, dtype=gradient_dtype(pred.dtype))
        factor = _reduction_factor(pred, t, offsets, reduction)
        reduced, per_sample = native_cpu.loss(pred, x1, noise, t, weight, seed, offsets, scheme, prediction,
                                              weighting, sigma_min, grad, factor, reduction)
        # a plain attribute, not save_for_backward: backward drops it, so the tensor it hands to autograd is not
        # still referenced by the graph (autograd can then adopt it as pred.grad instead of copying it)
        ctx.grad, ctx.pred_dtype, ctx.offsets, ctx.factor = grad, pred.dtype, offsets, factor
        ctx.row_elements = pred.numel() // max(pred.shape[0], 1)
        ctx.set_materialize_grads(False)
        return (reduced, per_sample) if want_per_sample else reduced

    @staticmethod
    def backward(ctx, grad_out, grad_per_sample=None):
        _refuse_double_backward()
        grad = ctx.grad
        if grad is None:  # as autograd's saved tensors: a freed graph refuses a second backward
            raise RuntimeError("Trying to backward through the graph a second time: flowkernels' loss handed its "
                               "stored gradient over in the first backward; use retain_graph=True to keep it")
        nones = (None,)
        if grad_out is None and grad_per_sample is None:
            return (None,) + nones
        keep = _graph_kept()  # retain_graph / create_graph: a later backward reads the stored gradient again
        if not keep:
            ctx.grad = None
        if grad_per_sample is not None:  # per-row scales: d reduced + d per_sample[b] of each sample's rows
            scale = grad_per_sample.double() * _per_sample_scale(ctx)
            scale = (scale if grad_out is None else scale + grad_out.double()).float()
            in_place = not keep and grad.dtype == ctx.pred_dtype
            return (_scale_rows_impl(grad, scale, ctx.offsets, "native", ctx.pred_dtype,
                                     out=grad if in_place else None),) + nones
        if keep or grad.dtype != ctx.pred_dtype:  # (16-bit pred: the fp32 gradient rounds once into its dtype)
            return (torch.mul(grad, grad_out).to(ctx.pred_dtype),) + nones
        return (grad if grad_out.item() == 1.0 else grad.mul_(grad_out),) + nones


def _reduction_factor(pred, t, offsets, reduction) -> float:
    """d reduced / d loss[b] of the kernel's per-sample values: 1 / B (dense mean), 1 / elements (ragged mean, whose
    per-sample values are sums), 1 (dense sum)."""
    if reduction == "sum":
        return 1.0
    return 1.0 / (pred.numel() if offsets is not None else t.shape[0])


def _per_sample_scale(ctx):
    """d per_sample[b] / d pred over the stored gradient (rows of b): 1 / factor (dense), 1 / (factor * elements
    of b) (ragged), float64; formed only when a gradient reaches the per-sample values."""
    if ctx.offsets is None:
        return 1.0 / ctx.factor
    n_elements = (ctx.offsets[1:] - ctx.offsets[:-1]).double() * ctx.row_elements
    return 1.0 / (ctx.factor * n_elements)


def flow_loss_reduced(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting, sigma_min,
                      compute_grad, reduction: str, want_per_sample: bool):
    """The reduced loss of a CPU batch (backend "native", no float64 input, elements > 0; dense "mean"/"sum" or
    ragged "mean") in one native call, and the per-sample means when asked; seed may be a plain int. Eager only:
    under torch.compile the loss goes through flow_loss_op."""
    if compute_grad:
        return _ReducedLoss.apply(pred, (x1, noise, t, weight, seed, offsets, scheme, prediction, weighting,
                                         sigma_min, reduction, want_per_sample))
    reduced, per_sample = native_cpu.loss(pred, x1, noise, t, weight, seed, offsets, scheme, prediction, weighting,
                                          sigma_min, None, 1.0, reduction)
    return (reduced, per_sample) if want_per_sample else reduced


def flow_loss_call(*args):
    """flow_loss_op's arguments: the custom op under torch.compile; eagerly the same autograd without its dispatch,
    or the bare implementation when no gradient is wanted."""
    if torch.compiler.is_compiling():
        return flow_loss_op(*args)
    if args[_COMPUTE_GRAD]:
        return _EagerLoss.apply(args[0], args[1:])
    return _loss_impl(*args)
