"""The reduced-loss path of CPU batches (reduction "mean"/"sum", one native call, the reduction's 1 / B folded into
the gradient): the same values and gradients as the per-sample path (flow_loss_op's autograd) and as the float64
reference, for every dtype, upstream gradient, accumulation and retained graph."""
import pytest
import torch

import flowkernels as fk
from flowkernels.ops import flow_loss
from helpers import assert_2x_rule, assert_close
from test_flow_loss import CASE_IDS, CASES, DTYPE_MIX, kernel_kwargs, make_inputs, reference_loss

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU kernels: runs where CI runs, on CPU")


def _grad_tol(dtype):
    """Relative RMS between two gradients that differ only in where 1 / B is rounded: a few fp32 ulps, or one
    rounding of the 16-bit result."""
    return 2.0**-21 if dtype == torch.float32 else torch.finfo(dtype).eps


def _reduced_and_per_sample(pred, x1, t, reduction, upstream, **kw):
    """(loss, grad) through the reduced path and through the per-sample path reduced by torch."""
    out = []
    for path in ("reduced", "per-sample"):
        leaf = pred.detach().clone().requires_grad_(True)
        if path == "reduced":
            loss = fk.flow_matching_loss(leaf, x1, t, reduction=reduction, **kw)
        else:
            per = fk.flow_matching_loss(leaf, x1, t, reduction="none", **kw)
            loss = per.mean() if reduction == "mean" else per.sum()
        (loss * upstream).backward()
        out.append((loss.detach(), leaf.grad))
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtypes", list(DTYPE_MIX), ids=list(DTYPE_MIX))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reduced_matches_per_sample_path_and_reference(case, dtypes, reduction):
    pred_dtype, data_dtype = DTYPE_MIX[dtypes]
    pred, x1, noise, t = make_inputs((5, 13, 7), pred_dtype, data_dtype)
    weight = torch.rand(5) + 0.5
    upstream = torch.randn(()).item() * 3  # not 1: the backward's scaling pass
    kw = dict(noise=noise, weight=weight, **kernel_kwargs(case))
    (loss, grad), (want_loss, want_grad) = _reduced_and_per_sample(pred, x1, t, reduction, upstream, **kw)
    assert loss.shape == () and loss.dtype == torch.float32 and grad.dtype == pred_dtype
    assert_close("loss", loss, want_loss, 2.0**-22)
    assert_close("grad", grad, want_grad, _grad_tol(pred_dtype))
    # and against float64 from the formulas (2x rule)
    leaf64 = pred.detach().double().requires_grad_(True)
    per64 = reference_loss(case, leaf64, x1.double(), noise.double(), t.double()) * weight.double()
    loss64 = per64.mean() if reduction == "mean" else per64.sum()
    (loss64 * upstream).backward()
    leaf32 = pred.detach().float().requires_grad_(True)
    per32 = reference_loss(case, leaf32, x1.float(), noise.float(), t.float()) * weight
    loss32 = per32.mean() if reduction == "mean" else per32.sum()
    (loss32 * upstream).backward()
    assert_2x_rule("loss", loss, loss32.detach(), loss64.detach())
    floor = 2.0**-22 if pred_dtype == torch.float32 else 2 * torch.finfo(pred_dtype).eps
    assert_2x_rule("grad", grad, leaf32.grad, leaf64.grad, floor=floor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5, 7), (7, 1031)], ids=["1x1", "3x5x7", "7x1031"])
def test_unit_upstream_gradient_hands_over_the_stored_gradient(shape, dtype):
    """loss.backward() (upstream 1, no scaling pass) gives the per-sample path's gradient, seeded noise too."""
    pred, x1, _, t = make_inputs(shape, dtype, dtype)
    for kw in (dict(seed=1234), dict(noise=torch.randn(shape).to(dtype))):
        (loss, grad), (want_loss, want_grad) = _reduced_and_per_sample(pred, x1, t, "mean", 1.0, **kw)
        assert_close("loss", loss, want_loss, 2.0**-22)
        assert_close("grad", grad, want_grad, _grad_tol(dtype))


def test_accumulation_retained_graph_and_autograd_grad():
    pred, x1, noise, t = make_inputs((4, 9, 5), torch.float32, torch.float32)
    per_sample = fk.flow_matching_loss(pred, x1, t, noise, reduction="none")  # no grad: plain values
    leaf = pred.clone().requires_grad_(True)
    loss = fk.flow_matching_loss(leaf, x1, t, noise, reduction="mean")
    assert_close("loss", loss.detach(), per_sample.mean(), 2.0**-22)
    (g1,) = torch.autograd.grad(loss, leaf, torch.tensor(0.5), retain_graph=True)  # graph kept: buffer reused later
    loss.backward(retain_graph=True)
    loss.backward()  # the graph is freed here: the stored gradient is handed over
    assert_close("grads accumulate", leaf.grad, 4 * g1, 2.0**-22)
    with pytest.raises(RuntimeError):
        loss.backward()  # freed, as any autograd graph
    # two losses sharing the prediction: both gradients arrive
    leaf2 = pred.clone().requires_grad_(True)
    (fk.flow_matching_loss(leaf2, x1, t, noise, reduction="sum")
     + fk.flow_matching_loss(leaf2, x1, t, seed=7, reduction="mean")).backward()
    a = pred.clone().requires_grad_(True)
    b = pred.clone().requires_grad_(True)
    fk.flow_matching_loss(a, x1, t, noise, reduction="none").sum().backward()
    fk.flow_matching_loss(b, x1, t, seed=7, reduction="none").mean().backward()
    assert_close("two losses", leaf2.grad, a.grad + b.grad, 2.0**-21)


def test_reduced_path_is_taken_eagerly_for_native_reductions_only(monkeypatch):
    """The lean path runs for native batches reduced by "mean" (dense or ragged) or "sum" (dense); the per-sample op
    otherwise."""
    calls = []
    monkeypatch.setattr(flow_loss._ReducedLoss, "apply", lambda *a: calls.append("reduced") or torch.zeros(()))
    pred, x1, noise, t = make_inputs((3, 4), torch.float32, torch.float32)
    pred.requires_grad_(True)
    offsets = torch.tensor([0, 1, 3])
    fk.flow_matching_loss(pred, x1, t, noise, reduction="mean")
    fk.flow_matching_loss(pred, x1, t, noise, reduction="sum")
    fk.flow_matching_loss(pred, x1, t[:2], noise, reduction="mean", offsets=offsets)
    assert calls == ["reduced"] * 3
    fk.flow_matching_loss(pred, x1, t, noise, reduction="none")
    fk.flow_matching_loss(pred, x1, t, noise, reduction="mean", backend="torch")
    fk.flow_matching_loss(pred.double(), x1, t, noise, reduction="mean")
    fk.flow_matching_loss(pred, x1, t[:2], noise, reduction="sum", offsets=offsets)
    assert calls == ["reduced"] * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
def test_per_sample_values_and_their_gradients(ragged, dtype):
    """return_per_sample=True: the per-sample means equal the per-sample path's, and gradients reaching them (with
    or without the reduced loss's) scale each sample's rows as that path's backward does."""
    if ragged:
        rows = torch.tensor([5, 0, 17, 1])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
        shape, B, kw = (int(rows.sum()), 6), 4, dict(offsets=offsets, convention="trellis")
    else:
        shape, B, kw = (4, 3, 5), 4, {}
    pred, x1, noise, t = make_inputs(shape, dtype, dtype)
    t = t[:B] if not ragged else torch.rand(B)
    do_ps, do_red = torch.randn(B), torch.randn(())
    for use_reduced in (True, False):
        got_leaf, want_leaf = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
        red, per = fk.flow_matching_loss(got_leaf, x1, t, noise, reduction="mean", return_per_sample=True, **kw)
        want_per = fk.flow_matching_loss(want_leaf, x1, t, noise, reduction="none", **kw)
        want_red = want_per.mean() if not ragged else (want_per * (rows.float() * 6)).nansum() / pred.numel()
        keep = ~want_per.isnan()
        assert torch.equal(per.isnan(), ~keep)
        assert_close("per-sample", per[keep].detach(), want_per[keep].detach(), 2.0**-22)
        assert_close("reduced", red.detach(), want_red.detach(), 2.0**-22)
        ps = torch.where(keep, per, 0.0)
        want_ps = torch.where(keep, want_per, 0.0)
        ((ps * do_ps).sum() + (red * do_red if use_reduced else 0)).backward()
        ((want_ps * do_ps).sum() + (want_red * do_red if use_reduced else 0)).backward()
        assert_close("grad", got_leaf.grad, want_leaf.grad, _grad_tol(dtype))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("rows", [[5, 3, 17, 1], [5, 0, 17, 1]], ids=["rows", "empty-sample"])
def test_kernel_reduction_of_a_ragged_batch_matches_its_per_sample_values(rows, reduction):
    """The native loss finishes the reduction of a ragged batch too (the public API sends only "mean" there): the
    per-sample means, their sum, and the mean over all elements, each formed from the kernel's own per-sample sums;
    a sample with no rows has a NaN mean, which its sum carries."""
    from flowkernels.flow_algebra import resolve_scheme
    from flowkernels.ops import native_cpu
    rows = torch.tensor(rows)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
    pred, x1, noise, _ = make_inputs((int(rows.sum()), 6), torch.float32, torch.float32)
    t = torch.rand(4)
    scheme, prediction, weighting, sigma_min = resolve_scheme("trellis", "linear", "velocity", None, None)
    args = (pred, x1, noise, t, None, None, offsets, scheme, prediction, weighting, sigma_min, None, 1.0)
    sums = native_cpu.loss(*args, "none").double()
    reduced, per_sample = native_cpu.loss(*args, reduction)
    means = sums / (rows.double() * 6)
    torch.testing.assert_close(per_sample, means.float(), equal_nan=True)
    want = (means.sum() if reduction == "sum" else sums.sum() / pred.numel()).item()
    if want != want:
        assert reduced.isnan().item()
    else:
        assert abs(reduced.item() - want) <= 2.0**-22 * abs(want), (reduced.item(), want)


def test_reduced_forward_without_grad_and_bad_t():
    pred, x1, noise, t = make_inputs((3, 6), torch.bfloat16, torch.float32)
    with torch.no_grad():
        loss = fk.flow_matching_loss(pred.requires_grad_(True), x1, t, noise, reduction="sum")
    assert not loss.requires_grad
    assert_close("loss", loss, fk.flow_matching_loss(pred.detach(), x1, t, noise).sum(), 2.0**-22)
    for bad in (1.5, float("nan"), -0.1):
        t_bad = t.clone()
        t_bad[1] = bad
        with pytest.raises(ValueError, match="t has values outside"):
            fk.flow_matching_loss(pred, x1, t_bad, noise, reduction="mean")
    big_t = torch.rand(5000)
    big_t[4321] = float("nan")
    with pytest.raises(ValueError, match="t has values outside"):
        fk.flow_interpolate(torch.randn(5000, 2), big_t, seed=1)


def test_compiled_fullgraph_goes_through_the_custom_op_and_agrees():
    """Under torch.compile(fullgraph=True) the loss stays the traceable custom op; same values and gradient."""
    pred, x1, _, t = make_inputs((3, 5, 4), torch.float32, torch.float32)

    def step(p, x1, t, seed):
        xt = fk.flow_interpolate(x1, t, seed=seed)
        return fk.flow_matching_loss(p * 1.0 + 0 * xt, x1, t, seed=seed, reduction="mean")

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got_leaf, want_leaf = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    got = compiled(got_leaf, x1, t, 99)
    want = step(want_leaf, x1, t, 99)
    got.backward()
    want.backward()
    assert_close("loss", got.detach(), want.detach(), 2.0**-22)
    assert_close("grad", got_leaf.grad, want_leaf.grad, 2.0**-21)


@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
def test_noise_kept_from_interpolation_is_the_stream_the_loss_draws(ragged):
    """A seeded interpolation keeps its noise for the loss with the same seed and shape: the loss and gradient are
    the bits the loss kernel gets drawing the stream itself; another seed or shape draws its own."""
    from flowkernels.ops import native_cpu
    shape = (300, 7) if ragged else (3, 5, 11)
    kw = dict(offsets=torch.tensor([0, 100, 100, 300]), convention="trellis") if ragged else {}
    pred, x1, _, t = make_inputs(shape, torch.float32, torch.float32)
    t = torch.rand(3)

    def step(seed, interpolate_first, interp_seed=None):
        native_cpu._kept_noise = None
        if interpolate_first:
            xt = fk.flow_interpolate(x1, t, seed=seed if interp_seed is None else interp_seed, **kw)
        leaf = pred.clone().requires_grad_(True)
        loss = fk.flow_matching_loss(leaf, x1, t, seed=seed, reduction="mean", **kw)
        loss.backward()
        return loss.detach(), leaf.grad, native_cpu._kept_noise

    alone = step(11, False)
    kept = step(11, True)
    other = step(11, True, interp_seed=12)
    assert kept[2] is None and other[2] is not None  # taken by the loss; a different seed's noise is not used
    for got in (kept, other):
        assert torch.equal(got[0], alone[0]) and torch.equal(got[1], alone[1])
    # the kept noise is the stream itself: x_t from it equals x_t from the torch path's draw
    native_cpu._kept_noise = None
    xt = fk.flow_interpolate(x1, t, seed=5, **kw)
    assert torch.equal(native_cpu._kept_noise[2], native_cpu.philox_normals(5, x1.shape))
    assert_close("x_t", xt, fk.flow_interpolate(x1, t, seed=5, backend="torch", **kw), 2.0**-23)
