"""The drop-ins' numeric promises, run beside the originals' call sequences (written out here):

- float64 is accepted wherever the original (plain torch) accepts it, and the result is fp64-accurate;
- 16-bit: we compute in fp32 and round once; our error against a float64 run of the original is at most twice the
  original's own 16-bit error (norm-wise), and we return / hand to the model the dtypes the original does;
- the loss gradient in 16 bits is rounded once (the backend's conversion), not twice."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import flowkernels as fk
from flowkernels.compat import hunyuan3d
from flowkernels.compat import trellis as T1
from flowkernels.compat.sit import create_transport
from helpers import DEVICE, assert_2x_rule, rel_rms

SIGMA = 1e-5
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
FLOOR = 2.0 ** -22  # fp32 arithmetic: what "rounding once from fp32" may add


# --- the originals' training call sequences -----------------------------------------------------------------------
def result_floor(result: torch.Tensor) -> float:
    """The 2x rule's floor: fp32 arithmetic, and for a loss of a few values returned in 16 bits its one final
    rounding (half an eps), which the original's several roundings can undercut by chance on so few values."""
    few = result.numel() <= 8 and result.dtype in HALF.values()
    return FLOOR + (torch.finfo(result.dtype).eps / 2 if few else 0.0)


def trellis_trainer(pred, x_0, t, noise, layout=None):
    """TRELLIS FlowMatchingTrainer / SparseFlowMatchingTrainer: t fp32, x_t = (1 − t) x_0 + (σ + (1 − σ) t) N,
    target = (1 − σ) N − x_0, mse = F.mse_loss(pred, target). Returns (x_t, mse)."""
    if layout is None:
        t_ = t.view(-1, *[1] * (x_0.dim() - 1))
    else:  # the sparse tensor's broadcast of t to its rows
        t_ = torch.cat([t[i].expand(s.stop - s.start) for i, s in enumerate(layout)])[:, None]
    x_t = (1 - t_) * x_0 + (SIGMA + (1 - SIGMA) * t_) * noise
    target = (1 - SIGMA) * noise - x_0
    return x_t, F.mse_loss(pred, target)


def sit_linear_velocity(pred, x1, t, x0):
    """SiT Transport.training_losses, Linear path, velocity: t in x1's dtype, x_t = t x1 + (1 − t) x0,
    u_t = x1 − x0, loss = mean_flat((pred − u_t)²). Returns (x_t, loss)."""
    t_ = t.view(-1, *[1] * (x1.dim() - 1))
    xt = t_ * x1 + (1 - t_) * x0
    ut = 1 * x1 + (-1) * x0
    return xt, ((pred - ut) ** 2).mean(dim=list(range(1, x1.dim())))


def fixed_model(pred, seen):
    """A model whose output is `pred` (a leaf), recording what it was given."""
    def model(x, t, *args, **kwargs):
        seen.append((x.feats if hasattr(x, "feats") else x).detach())
        return x.replace(pred) if hasattr(x, "feats") else pred
    return model


class FakeSparse:
    def __init__(self, feats, layout):
        self.feats, self.layout = feats, layout

    def replace(self, feats):
        return FakeSparse(feats, self.layout)


def ragged(B=4):
    sizes = torch.randint(1, 9, (B,)).tolist()
    bounds = np.cumsum([0] + sizes).tolist()
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])], bounds[-1]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("half", list(HALF))
def test_trellis_trainer_16bit_rule_and_dtypes(half, sparse):
    dtype = HALF[half]
    if sparse:
        layout, n = ragged()
        shape, B = (n, 7), len(layout)
    else:
        layout, shape, B = None, (5, 3, 11), 5
    x_0, noise = torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)
    pred = torch.randn(shape, device=DEVICE)
    t = torch.rand(B, device=DEVICE)
    upstream = torch.rand((), device=DEVICE) + 0.5
    results = {}
    for name, dt in (("ours", dtype), ("orig16", dtype), ("orig64", torch.float64)):
        p = pred.to(dt).requires_grad_()
        x0, nz = x_0.to(dt), noise.to(dt)
        if name == "ours":
            seen = []
            data = FakeSparse(x0, layout) if sparse else x0
            terms, _ = T1.training_losses(fixed_model(p, seen), data, t=t, noise=nz, backend="torch")
            x_t, mse = seen[0], terms["loss"]
        else:
            x_t, mse = trellis_trainer(p, x0, t.to(torch.float64) if dt == torch.float64 else t, nz, layout)
        (mse * upstream).backward()
        results[name] = (x_t, mse.detach(), p.grad)
    ours, orig16, orig64 = results["ours"], results["orig16"], results["orig64"]
    for i, what in enumerate(("x_t given to the denoiser", "mse", "d mse / d pred")):
        assert ours[i].dtype == orig16[i].dtype, (what, ours[i].dtype, orig16[i].dtype)
        assert_2x_rule(what, ours[i], orig16[i], orig64[i], floor=result_floor(ours[i]))
    assert ours[0].dtype == torch.float32  # fp32 t promotes bf16 / fp16 data


@pytest.mark.parametrize("half", list(HALF))
def test_sit_transport_16bit_rule_and_dtypes(half):
    dtype = HALF[half]
    B = 6
    x1, x0, pred = (torch.randn(B, 9, 5, device=DEVICE) for _ in range(3))
    t = torch.rand(B, device=DEVICE)
    upstream = torch.rand(B, device=DEVICE)
    transport = create_transport("Linear", "velocity")
    results = {}
    for name, dt in (("ours", dtype), ("orig16", dtype), ("orig64", torch.float64)):
        p = pred.to(dt).requires_grad_()
        if name == "ours":
            seen = []
            out = transport.training_losses(fixed_model(p, seen), x1.to(dt), t=t.to(dt), noise=x0.to(dt))
            xt, loss = seen[0], out["loss"]
        else:
            xt, loss = sit_linear_velocity(p, x1.to(dt), t.to(dt), x0.to(dt))
        (loss * upstream.to(loss.dtype)).sum().backward()
        results[name] = (xt, loss.detach(), p.grad)
    for i, what in enumerate(("x_t given to the model", "loss", "d loss / d pred")):
        ours, orig16, orig64 = (results[k][i] for k in ("ours", "orig16", "orig64"))
        assert ours.dtype == orig16.dtype == dtype, (what, ours.dtype, orig16.dtype)
        assert_2x_rule(what, ours, orig16, orig64, floor=result_floor(ours))


# --- samplers ----------------------------------------------------------------------------------------------------
class Velocity(torch.nn.Module):
    """v = tanh(x W + cond + 1e-3 t) in the input's dtype, op by op (a 16-bit model rounds as it goes)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 8) * 0.4)

    def forward(self, x, t, cond=None, **kwargs):
        h = x @ self.w.to(x.dtype) + (t.view(-1, *[1] * (x.dim() - 1)) * 1e-3).to(x.dtype)
        if cond is not None:
            h = h + cond.to(x.dtype)
        return torch.tanh(h)


def trellis_cfg_loop(model, noise, cond, neg, steps, w):
    """TRELLIS FlowEulerCfgSampler.sample: t·1000 fp32, v = (1 + w) c − w u, x ← x − (t − t_prev) v."""
    t_seq = np.linspace(1, 0, steps + 1)
    x = noise
    for t, t_prev in zip(t_seq[:-1], t_seq[1:]):
        tt = torch.tensor([1000 * t] * x.shape[0], device=x.device, dtype=torch.float32)
        v = (1 + w) * model(x, tt, cond) - w * model(x, tt, neg)
        x = x - (t - t_prev) * v
    return x


@pytest.mark.parametrize("half", list(HALF))
def test_trellis_sampler_16bit_rule(half):
    dtype = HALF[half]
    model = Velocity().to(DEVICE)
    noise = torch.randn(3, 17, 8, device=DEVICE)
    cond, neg = torch.randn(8, device=DEVICE) * 0.5, torch.zeros(8, device=DEVICE)
    with torch.no_grad():
        ours = T1.FlowEulerCfgSampler(SIGMA).sample(model, noise.to(dtype), cond, neg, steps=6, cfg_strength=2.0,
                                                    verbose=False).samples
        orig16 = trellis_cfg_loop(model, noise.to(dtype), cond, neg, 6, 2.0)
        orig64 = trellis_cfg_loop(model.double(), noise.double(), cond.double(), neg.double(), 6, 2.0)
    assert ours.dtype == orig16.dtype == dtype
    assert_2x_rule("samples", ours, orig16, orig64, floor=FLOOR)


@pytest.mark.parametrize("half", list(HALF))
def test_trellis2_rescaled_sampler_16bit_rule(half):
    """TRELLIS.2 FlowEulerGuidanceIntervalSampler with guidance_rescale, against its loop run in 16 bits and in
    float64 (flowkernels.reference.trellis.euler_sample is that loop written plainly, in the input's dtype)."""
    from flowkernels.compat import trellis2 as T2
    from flowkernels.reference import trellis as ref_trellis
    dtype = HALF[half]
    model = Velocity().to(DEVICE)
    noise = torch.randn(3, 19, 8, device=DEVICE)
    cond, neg = torch.randn(8, device=DEVICE) * 0.5, torch.zeros(8, device=DEVICE)
    kw = dict(neg_cond=neg, strength=4.0, interval=(0.2, 0.9), formula="trellis2", rescale=0.6)
    with torch.no_grad():
        ours = T2.FlowEulerGuidanceIntervalSampler(SIGMA).sample(
            model, noise.to(dtype), cond, neg, steps=6, guidance_strength=4.0, guidance_interval=(0.2, 0.9),
            guidance_rescale=0.6, verbose=False).samples
        orig16 = ref_trellis.euler_sample(model, noise.to(dtype), cond, 6, **kw)[0]
        orig64 = ref_trellis.euler_sample(model.double(), noise.double(), cond.double(), 6,
                                          **dict(kw, neg_cond=neg.double()))[0]
    assert ours.dtype == orig16.dtype == dtype
    assert_2x_rule("samples", ours, orig16, orig64, floor=FLOOR)


def hunyuan_loop(model, latents, cond, steps, w):
    """Hunyuan3DDiTFlowMatchingPipeline: sigmas linspace(0, 1, N) + [1], [x; x] CFG, x ← (x_fp32 + dt v) in v's
    dtype, t = (σ·1000 in fp32 → latents' dtype) / 1000."""
    sig = torch.from_numpy(np.linspace(0, 1, steps)).to(torch.float32)
    ts, sig = sig * 1000, torch.cat([sig, torch.ones(1)])
    for i, t in enumerate(ts):
        v = model(torch.cat([latents] * 2), t.expand(2 * latents.shape[0]).to(latents.dtype) / 1000, cond)
        v_c, v_u = v.chunk(2)
        v = v_u + w * (v_c - v_u)
        step = (sig[i + 1] - sig[i]).to(torch.float64 if latents.dtype == torch.float64 else torch.float32)
        latents = (latents.to(step.dtype) + step * v).to(v.dtype)
    return latents


@pytest.mark.parametrize("half", list(HALF))
def test_hunyuan_sampler_16bit_rule(half):
    dtype = HALF[half]
    model = Velocity().to(DEVICE)
    latents = torch.randn(2, 13, 8, device=DEVICE)
    cond = torch.cat([torch.randn(2, 1, 8, device=DEVICE) * 0.5, torch.zeros(2, 1, 8, device=DEVICE)])
    run = hunyuan3d.FlowMatchingSampler(fix_final_step=False)
    with torch.no_grad():
        ours = run.sample(model, latents.to(dtype), cond, num_inference_steps=6, guidance_scale=3.0,
                          enable_pbar=False)
        orig16 = hunyuan_loop(model, latents.to(dtype), cond, 6, 3.0)
        orig64 = hunyuan_loop(model.double(), latents.double(), cond.double(), 6, 3.0)
    assert ours.dtype == orig16.dtype == dtype
    assert_2x_rule("latents", ours, orig16, orig64, floor=FLOOR)


# --- float64 wherever the originals take it ----------------------------------------------------------------------
def test_float64_training_paths_match_the_originals():
    x_0, noise, pred = (torch.randn(4, 3, 6, device=DEVICE, dtype=torch.float64) for _ in range(3))
    t = torch.rand(4, device=DEVICE, dtype=torch.float64)
    # flow_interpolate / flow_matching_loss (SiT linear velocity), both backends
    for backend in ("torch", "triton") + (("native",) if DEVICE == "cpu" else ()):
        xt, target = fk.flow_interpolate(x_0, t, noise, return_target=True, backend=backend)
        assert xt.dtype == target.dtype == torch.float64
        want_xt, want_loss = sit_linear_velocity(pred, x_0, t, noise)
        assert rel_rms(xt, want_xt) <= 1e-14 and rel_rms(target, x_0 - noise) <= 1e-14
        loss = fk.flow_matching_loss(pred, x_0, t, noise, backend=backend)
        assert loss.dtype == torch.float64 and rel_rms(loss, want_loss) <= 1e-14
    # gradcheck of the fused loss (analytic gradient from the forward pass, scaled in backward)
    p = pred[:2, :2, :3].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q: fk.flow_matching_loss(q, x_0[:2, :2, :3], t[:2], noise[:2, :2, :3], convention="trellis"), (p,))
    # TRELLIS trainer: fp64 x_t, fp64 mse
    seen = []
    p = pred.clone().requires_grad_()
    terms, _ = T1.training_losses(fixed_model(p, seen), x_0, t=t, noise=noise)
    # the trainer takes t in fp32 (sample_t(...).float()); the rest is fp64 arithmetic on those values
    want_xt, want_mse = trellis_trainer(pred, x_0, t.float().double(), noise)
    assert seen[0].dtype == terms["loss"].dtype == torch.float64
    assert rel_rms(seen[0], want_xt) <= 1e-14 and rel_rms(terms["loss"], want_mse) <= 1e-14
    terms["loss"].backward()
    assert p.grad.dtype == torch.float64
    assert rel_rms(p.grad, 2 * (pred - ((1 - SIGMA) * noise - x_0)) / pred.numel()) <= 1e-14
    # SiT transport
    out = create_transport("Linear", "velocity").training_losses(fixed_model(pred, []), x_0, t=t, noise=noise)
    want = sit_linear_velocity(pred, x_0, t, noise)[1]
    assert out["loss"].dtype == torch.float64 and rel_rms(out["loss"], want) <= 1e-14


def test_float64_samplers_match_the_originals():
    model = Velocity().to(DEVICE).double()
    noise = torch.randn(3, 5, 8, device=DEVICE, dtype=torch.float64)
    cond, neg = torch.randn(8, device=DEVICE, dtype=torch.float64) * 0.5, torch.zeros(8, device=DEVICE,
                                                                                     dtype=torch.float64)
    with torch.no_grad():
        ours = T1.FlowEulerCfgSampler(SIGMA).sample(model, noise, cond, neg, steps=5, cfg_strength=2.0,
                                                    verbose=False).samples
        assert ours.dtype == torch.float64
        assert rel_rms(ours, trellis_cfg_loop(model, noise, cond, neg, 5, 2.0)) <= 1e-13
        c2 = torch.cat([cond.expand(3, 1, 8), neg.expand(3, 1, 8)])
        ours = hunyuan3d.FlowMatchingSampler(fix_final_step=False).sample(model, noise, c2, num_inference_steps=5,
                                                                           guidance_scale=3.0, enable_pbar=False)
        assert ours.dtype == torch.float64
        assert rel_rms(ours, hunyuan_loop(model, noise, c2, 5, 3.0)) <= 1e-13
        # sample_euler keeps an fp64 state, with TRELLIS.2 guidance rescale (fp64 statistics)
        g = fk.Guidance(scale=3.0, formula="trellis2", rescale=0.5, uncond_fn=lambda x, t: model(x, t, neg))
        out = fk.sample_euler(lambda x, t: model(x, t, cond), noise, fk.sampling.trellis_timesteps(4),
                              time_scale=1000.0, sigma_min=SIGMA, guidance=g)
        from flowkernels.reference import trellis as ref_trellis
        ref, _, _ = ref_trellis.euler_sample(model, noise, cond, 4, neg_cond=neg, strength=3.0, formula="trellis2",
                                             rescale=0.5)
        assert out.dtype == torch.float64 and rel_rms(out, ref) <= 1e-13


# --- the 16-bit gradient is rounded once -------------------------------------------------------------------------
def once_rounding_bound(exact: torch.Tensor, magnitude: torch.Tensor, dtype, truncating: bool) -> torch.Tensor:
    """How far one conversion of an fp32-computed value may land from the exact value: half an ulp of `dtype`
    (round to nearest) or one ulp (the CPU Triton interpreter truncates fp32 → bf16), plus the fp32 arithmetic's
    own error, a few fp32 ulps of `magnitude` (the size of the terms that cancel into the exact value)."""
    mant = {torch.bfloat16: 7, torch.float16: 10}[dtype]
    tiny = torch.finfo(dtype).smallest_normal
    _, e = torch.frexp(exact.abs().clamp_min(tiny))
    ulp = torch.ldexp(torch.ones_like(exact), e - 1 - mant)
    return (1.0 if truncating else 0.5) * ulp + 2.0 ** -21 * magnitude


@pytest.mark.parametrize("backend", ["torch", "triton"] + (["native"] if DEVICE == "cpu" else []))
@pytest.mark.parametrize("half", list(HALF))
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_16bit_gradient_is_rounded_once(half, backend, sparse):
    dtype = HALF[half]
    if sparse:
        layout, n = ragged(5)
        shape, B = (n, 37), len(layout)
        offsets = torch.tensor([s.start for s in layout] + [n], device=DEVICE)
    else:
        shape, B, offsets = (5, 29, 31), 5, None
    x1, noise = torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)
    pred = torch.randn(shape, device=DEVICE).to(dtype).requires_grad_()
    t = torch.rand(B, device=DEVICE)
    upstream = torch.rand(B, device=DEVICE) * 3 + 0.1
    loss = fk.flow_matching_loss(pred, x1, t, noise, convention="trellis", offsets=offsets, backend=backend)
    loss.backward(upstream)
    # d loss_b / d pred = 2 (pred − target) / M_b, target = (1 − σ) N − D, times the upstream gradient of sample b
    if offsets is None:
        count = torch.full((B,), float(pred[0].numel()), dtype=torch.float64, device=DEVICE)
        per_elem = lambda v: v.double().view(-1, 1, 1)  # noqa: E731
    else:
        count = torch.tensor([(s.stop - s.start) * shape[1] for s in layout], dtype=torch.float64, device=DEVICE)
        rows = torch.cat([torch.full((s.stop - s.start,), i) for i, s in enumerate(layout)]).to(DEVICE)
        per_elem = lambda v: v.double()[rows].view(-1, 1)  # noqa: E731
    target = (1 - SIGMA) * noise.double() - x1.double()
    scale = 2 * per_elem(upstream.double() / count)
    exact = (pred.detach().double() - target) * scale
    magnitude = (pred.detach().double().abs() + noise.double().abs() + x1.double().abs()) * scale
    err = (pred.grad.double() - exact).abs()
    truncating = backend == "triton" and dtype == torch.bfloat16 and DEVICE == "cpu"
    bound = once_rounding_bound(exact, magnitude, dtype, truncating)
    assert pred.grad.dtype == dtype
    assert bool((err <= bound).all()), f"{int((err > bound).sum())} of {err.numel()} gradient values exceed one " \
                                       f"rounding (worst {float((err / bound).max()):.2f}x the bound)"
