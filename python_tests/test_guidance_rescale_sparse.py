"""TRELLIS.2's guidance_rescale on sparse (ragged) latents: the fused step against TRELLIS.2's own call sequence.

TRELLIS.2's CFG mixin rescales x0 by std(x0_pos)/std(x0_cfg) with `.std(dim=[1..ndim-1], keepdim=True)`; on its
sparse tensors that is a per-sample population std over the sample's rows (mean of row means via segment_reduce,
then sqrt(E[x²] − E[x]²)), broadcast back to rows through the batch map. `T2Sparse` below implements those
semantics as TRELLIS.2's VarLenTensor defines them, and `trellis2_sample` writes the sampler's call sequence.
"""
import pytest
import torch

from flowkernels.compat import trellis2 as T2
from flowkernels.sampling import guidance_rescale_factor, guided_step, step_coefficients
from helpers import DEVICE, DTYPES, assert_close

BACKENDS = ["triton", "torch"] if DEVICE == "cpu" else ["triton"]


class T2Sparse:
    """TRELLIS.2's VarLenTensor arithmetic: feats [N, C], a layout of slices, shape [B, C]."""

    def __init__(self, feats, layout):
        self.feats, self.layout = feats, layout

    @property
    def shape(self):
        return torch.Size([len(self.layout), *self.feats.shape[1:]])

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def device(self):
        return self.feats.device

    @property
    def seqlen(self):
        return torch.tensor([s.stop - s.start for s in self.layout], dtype=torch.long, device=self.device)

    @property
    def batch_boardcast_map(self):
        return torch.repeat_interleave(torch.arange(len(self.layout), device=self.device), self.seqlen)

    def replace(self, feats):
        return T2Sparse(feats, self.layout)

    def _elemwise(self, other, op):
        if isinstance(other, torch.Tensor):
            try:
                other = torch.broadcast_to(other, self.shape)[self.batch_boardcast_map]
            except RuntimeError:
                pass
        if isinstance(other, T2Sparse):
            other = other.feats
        return self.replace(op(self.feats, other))

    def __add__(self, o): return self._elemwise(o, torch.add)
    def __radd__(self, o): return self._elemwise(o, torch.add)
    def __sub__(self, o): return self._elemwise(o, torch.sub)
    def __rsub__(self, o): return self._elemwise(o, lambda x, y: torch.sub(y, x))
    def __mul__(self, o): return self._elemwise(o, torch.mul)
    def __rmul__(self, o): return self._elemwise(o, torch.mul)
    def __truediv__(self, o): return self._elemwise(o, torch.div)

    def mean(self, dim, keepdim=False):
        dim = (dim,) if isinstance(dim, int) else tuple(dim)
        red = self.feats.mean(dim=dim, keepdim=keepdim)
        return red if 0 in dim else torch.segment_reduce(red, reduce="mean", lengths=self.seqlen)

    def std(self, dim, keepdim=False):
        mean = self.mean(dim=dim, keepdim=True)
        mean2 = self.replace(self.feats ** 2).mean(dim=dim, keepdim=True)
        return (mean2 - mean ** 2).sqrt()


def trellis2_sample(model, noise, cond, neg_cond, steps, sigma_min, strength, interval, rescale):
    """TRELLIS.2's FlowEulerGuidanceIntervalSampler.sample, its call sequence written out."""
    t_seq = torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()
    x_t, xs, x0s = noise, [], []
    for t, t_prev in zip(t_seq[:-1], t_seq[1:]):
        g = strength if interval[0] <= t <= interval[1] else 1
        t_in = torch.tensor([1000 * t] * x_t.shape[0], device=DEVICE, dtype=torch.float32)
        if g == 1:
            pred = model(x_t, t_in, cond)
        else:
            pred_pos = model(x_t, t_in, cond)
            pred_neg = model(x_t, t_in, neg_cond)
            pred = g * pred_pos + (1 - g) * pred_neg
            if rescale > 0:
                x_0_pos = (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * pred_pos
                x_0_cfg = (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * pred
                std_pos = x_0_pos.std(dim=list(range(1, x_0_pos.ndim)), keepdim=True)
                std_cfg = x_0_cfg.std(dim=list(range(1, x_0_cfg.ndim)), keepdim=True)
                x_0_rescaled = x_0_cfg * (std_pos / std_cfg)
                x_0 = rescale * x_0_rescaled + (1 - rescale) * x_0_cfg
                pred = ((1 - sigma_min) * x_t - x_0) / (sigma_min + (1 - sigma_min) * t)
        x0s.append((1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * pred)
        x_t = x_t - (t - t_prev) * pred
        xs.append(x_t)
    return x_t, xs, x0s


def _layout(counts):
    starts = torch.tensor([0] + counts).cumsum(0).tolist()
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [8, 7])
def test_sparse_guidance_rescale_matches_trellis2(backend, channels):
    counts = [int(n) for n in torch.randint(2, 900, (3,))]
    print("rows per sample", counts)
    layout = _layout(counts)
    w = torch.randn(channels, channels, dtype=torch.float64, device=DEVICE) * 0.4
    cond = torch.randn(channels, dtype=torch.float64, device=DEVICE) * 0.5
    neg = torch.randn(channels, dtype=torch.float64, device=DEVICE) * 0.1

    def model(x, t, c):  # a sparse denoiser: nonlinear per row, depends on t and the condition
        h = x.feats @ w.to(x.feats.dtype) + (t[:1] * 1e-3).to(x.feats.dtype) + c.to(x.feats.dtype)
        return x.replace(torch.tanh(h))

    feats = torch.randn(sum(counts), channels, dtype=torch.float64, device=DEVICE)
    args = dict(steps=4, sigma_min=1e-5, strength=5.0, interval=(0.3, 1.0), rescale=0.5)
    ref, ref_xs, ref_x0s = trellis2_sample(model, T2Sparse(feats, layout), cond, neg, **args)
    sampler = T2.FlowEulerGuidanceIntervalSampler(1e-5, backend=backend)
    out = sampler.sample(model, T2Sparse(feats.float(), layout), cond, neg, steps=4, guidance_strength=5.0,
                         guidance_interval=(0.3, 1.0), guidance_rescale=0.5, verbose=False)
    assert isinstance(out.samples, T2Sparse)
    assert_close("samples", out.samples.feats, ref.feats, 2e-5)
    for a, b in zip(out.pred_x_t + out.pred_x_0, ref_xs + ref_x0s):
        assert_close("trajectory", a.feats, b.feats, 2e-5)
    # the rescale changed the result (a sampler ignoring it would fail above, not pass silently)
    plain, _, _ = trellis2_sample(model, T2Sparse(feats, layout), cond, neg, **dict(args, rescale=0.0))
    assert (plain.feats - ref.feats).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_ragged_rescale_step_matches_formula(backend, dtype):
    """guided_step(offsets=, rescale=) against the formula in float64: per-sample population std over each
    sample's rows (an empty sample and a one-row sample included), poisoned outputs (every row written)."""
    counts = [0, int(torch.randint(1, 600, ())), 1, int(torch.randint(1, 3000, ()))]
    print("rows per sample", counts)
    C, N = 5, sum(counts)
    offsets = torch.tensor([0] + counts, device=DEVICE).cumsum(0)
    x = torch.randn(N, C, device=DEVICE)
    both = (torch.randn(2 * N, C, device=DEVICE) + 0.2).to(DTYPES[dtype])
    c, u = both[:N], both[N:]
    row = step_coefficients(dt=-0.3, a_c=4.0, a_u=-3.0, x0_a=1 - 1e-5, x0_b=-0.61)
    coef = torch.tensor(row, device=DEVICE)
    out = torch.full((N, C), float("nan"), device=DEVICE)
    x0 = torch.full((N, C), float("nan"), device=DEVICE)
    guided_step(x, c, u, coef, out=out, x0=x0, offsets=offsets, rescale=0.6, backend=backend)

    dt, a_c, a_u, A, Bq = row[:5]
    xd, cd, ud = x.double(), c.double(), u.double()
    v = a_c * cd + a_u * ud
    k_rows = torch.empty(N, 1, dtype=torch.float64, device=DEVICE)
    for b in range(len(counts)):
        s = slice(int(offsets[b]), int(offsets[b + 1]))
        if s.start == s.stop:
            continue
        x0c, x0g = A * xd[s] + Bq * cd[s], A * xd[s] + Bq * v[s]
        k_rows[s] = 0.6 * x0c.std(unbiased=False) / x0g.std(unbiased=False) + 0.4
    x0_ref = (A * xd + Bq * v) * k_rows
    v_ref = (x0_ref - A * xd) / Bq
    tol = 1e-6 if dtype == "fp32" else 1e-5
    assert_close("x_next", out, xd + dt * v_ref, tol)
    assert_close("x0", x0, x0_ref, tol)
    k = guidance_rescale_factor(x, c, u, coef, 0.6, offsets=offsets)
    assert k.shape == (4,)
    assert_close("k", k[[1, 2, 3]], k_rows[[int(offsets[1]), int(offsets[2]), int(offsets[3])], 0], 1e-6)
