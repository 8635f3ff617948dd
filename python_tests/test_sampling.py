"""Guided Euler step kernel and the samplers built on it, against plainly written originals."""
import pytest
import torch

import flowkernels as fk
from flowkernels.compat import trellis as T1
from flowkernels.compat import trellis2 as T2
from flowkernels.compat import diffusers as fk_diffusers
from flowkernels.compat.hunyuan3d import FlowMatchingSampler
from flowkernels.ops.guided_step import guided_step_op
from flowkernels.sampling import guidance_rescale_factor, guided_step, step_coefficients
from flowkernels.reference import samplers as ref_samplers
from flowkernels.reference import trellis as ref_trellis
from conftest import FakeSparse
from conftest import ToyVelocityModel as ToyModel
from helpers import DEVICE, DTYPES, assert_2x_rule, assert_close

BACKENDS = ["triton", "torch", "native"] if DEVICE == "cpu" else ["triton"]


# --- the step kernel ---------------------------------------------------------------------------------------------
def step_reference(x, c, u, row, k=None, h=None):
    """The step written from the formulas in float64."""
    dt, a_c, a_u, A, Bq, dh = row[:6]
    x, c = x.double(), c.double()
    v = a_c * c + (a_u * u.double() if u is not None else 0.0)
    if k is not None:
        kk = k.double().view(-1, *[1] * (x.dim() - 1))
        x0 = (A * x + Bq * v) * kk
        v = (x0 - A * x) / Bq
    out = x + dt * v + (dh * h.double() if h is not None else 0.0)
    return out, A * x + Bq * v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("shape", [(3, 41, 37), (2, 4099), (1, 5)], ids=lambda s: "x".join(map(str, s)))
def test_guided_step_matches_formula(backend, dtype, shape):
    dt_ = DTYPES[dtype]
    B = shape[0]
    x = torch.randn(shape, device=DEVICE)
    both = torch.randn((2 * B,) + shape[1:], device=DEVICE).to(dt_)  # one [cond; uncond] output, read in place
    c, u = both[:B], both[B:]
    row = step_coefficients(dt=-0.137, a_c=4.0, a_u=-3.0, x0_a=1 - 1e-5, x0_b=-0.61, dt_h=0.05)
    coef = torch.tensor(row, device=DEVICE)
    h = torch.randn(shape, device=DEVICE)
    out = torch.full(shape, float("nan"), device=DEVICE)          # poisoned outputs
    x0 = torch.full(shape, float("nan"), device=DEVICE).to(dt_)
    model_in = torch.full((2 * B,) + shape[1:], float("nan"), device=DEVICE).to(dt_)
    v_out = torch.full(shape, float("nan"), device=DEVICE)
    guided_step(x, c, u, coef, out=out, h=h, model_in=model_in, x0=x0, v_out=v_out, backend=backend)
    ref_out, ref_x0 = step_reference(x, c, u, row, h=h)
    tol = 1e-6 if dtype == "fp32" else 1e-2
    assert_close("x_next", out, ref_out, tol)
    assert_close("x0", x0, ref_x0, tol)
    assert_close("v", v_out, (4.0 * c.double() - 3.0 * u.double()), tol)
    # the next model input: the new state cast (within one rounding; the interpreter truncates) and duplicated
    rtol = {"fp32": 0.0, "bf16": 2.0**-7, "fp16": 2.0**-10}[dtype]
    torch.testing.assert_close(model_in[:B].float(), out, rtol=rtol, atol=1e-6 if rtol else 0.0)
    assert torch.equal(model_in[:B], model_in[B:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_guided_step_in_place_and_rescale(backend):
    B, M = 4, 1271
    x = torch.randn(B, M, device=DEVICE)
    c, u = torch.randn(B, M, device=DEVICE), torch.randn(B, M, device=DEVICE) + 0.3
    row = step_coefficients(dt=-0.2, a_c=3.0, a_u=-2.0, x0_a=1 - 1e-5, x0_b=-(1e-5 + (1 - 1e-5) * 0.7))
    coef = torch.tensor(row, device=DEVICE)
    k = guidance_rescale_factor(x, c, u, coef, 0.7)
    # k from its definition: φ std(x0_c) / std(x0_cfg) + 1 − φ
    x0c = row[3] * x.double() + row[4] * c.double()
    x0g = row[3] * x.double() + row[4] * (3.0 * c.double() - 2.0 * u.double())
    k_ref = 0.7 * x0c.std(dim=1) / x0g.std(dim=1) + 0.3
    assert_close("k", k, k_ref, 1e-6)
    ref_out, _ = step_reference(x, c, u, row, k=k_ref)
    guided_step(x, c, u, coef, out=x, rescale=0.7, backend=backend)  # in place; k formed inside
    assert_close("x_next", x, ref_out, 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x0_a", [1.0, 1 - 1e-5, -0.8])
def test_guided_step_rescale_at_the_data_end(backend, x0_a):
    """Where the data prediction no longer depends on v (Bq = 0: the data end, where Heun's corrector evaluates),
    rescale takes its limit v + φ·cov(A·x, c − v)/var(A·x)·A·x instead of 0/0, and stays continuous in Bq."""
    B, M = 3, 997
    x = torch.randn(B, M, device=DEVICE) * torch.tensor([[1.0], [0.2], [3.0]], device=DEVICE)
    c = torch.randn(B, M, device=DEVICE) + 0.5 * x
    u = torch.randn(B, M, device=DEVICE) - 0.3 * x
    phi, a_c, a_u = 0.7, 3.0, -2.0
    row = step_coefficients(dt=0.25, a_c=a_c, a_u=a_u, x0_a=x0_a, x0_b=0.0)
    out = torch.full_like(x, float("nan"))
    guided_step(x, c, u, torch.tensor(row, device=DEVICE), out=out, rescale=phi, backend=backend)
    xd, cd, ud = x.double(), c.double(), u.double()
    v = a_c * cd + a_u * ud
    y = x0_a * xd
    cov = ((y - y.mean(1, keepdim=True)) * ((cd - v) - (cd - v).mean(1, keepdim=True))).mean(1, keepdim=True)
    limit = v + phi * cov / y.var(1, unbiased=False, keepdim=True) * y
    assert_close("x_next at Bq = 0", out, xd + 0.25 * limit, 1e-6)
    for bq in (1e-7, -1e-7):  # the original formula, just off the data end, in float64
        row_near = step_coefficients(dt=0.25, a_c=a_c, a_u=a_u, x0_a=x0_a, x0_b=bq)
        x0c, x0g = y + bq * cd, y + bq * v
        k = phi * x0c.std(1) / x0g.std(1) + 1 - phi
        ref, _ = step_reference(x, c, u, row_near, k=k)
        assert_close(f"continuity at Bq = {bq}", out, ref, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("convention", ["sit", "trellis"])
def test_heun_with_rescale_reaches_the_data_end(backend, convention):
    """Heun's last corrector evaluates the model at the data end; with guidance rescale the step used to divide
    0 by 0 there. The sample is finite and equals, in float64, a grid stopping 1e-9 short of the end."""
    noise = torch.randn(2, 3, 41, device=DEVICE, dtype=torch.float64)
    W = torch.randn(41, 41, device=DEVICE, dtype=torch.float64) / 41**0.5
    cond = lambda x, t, *a, **k: torch.tanh(x @ W.to(x.dtype)) + 0.1 * t.view(-1, 1, 1)
    uncond = lambda x, t, *a, **k: -0.5 * x
    grid = [0.0, 0.4, 1.0] if convention == "sit" else [1.0, 0.6, 0.0]
    near = [g if g not in (0.0, 1.0) or i == 0 else (1 - 1e-9 if g == 1.0 else 1e-9) for i, g in enumerate(grid)]
    run = lambda ts, n: fk.sample_euler(cond, n, ts, method="heun", convention=convention, backend=backend,
                                        guidance=fk.Guidance(scale=3.0, formula="trellis2", rescale=0.7,
                                                             uncond_fn=uncond))
    out = run(grid, noise.clone())
    assert torch.isfinite(out).all()
    assert_close("heun + rescale", out, run(near, noise.clone()), 1e-6)
    out32 = run(grid, noise.float())  # the fp32 kernels (the backend's own path) agree with float64
    assert torch.isfinite(out32).all()
    assert_close("fp32 heun + rescale", out32, out, 1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_guided_step_opcheck(backend):
    B, M = 3, 37
    x, c, u, h = (torch.randn(B, M, device=DEVICE) for _ in range(4))
    coef = torch.tensor(step_coefficients(dt=-0.1, a_c=2.0, a_u=-1.0, x0_a=1.0, x0_b=0.5, dt_h=0.05), device=DEVICE)
    new = lambda *shape: torch.empty(*shape, device=DEVICE)
    torch.library.opcheck(guided_step_op, (x, c, u, coef, new(B, M), h, new(2 * B, M), new(B, M), new(B, M),
                                           None, 0.6, backend))
    torch.library.opcheck(guided_step_op, (x, c, None, coef, new(B, M), None, None, None, None, None, 0.0, backend))


def test_guided_sampling_step_compiles_fullgraph():
    """A sampling step (model on [x; x], guided combine, Euler update, next model input) traces into one graph
    with the fused step as a custom op, and gives the eager result."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).to(DEVICE)
    coef = torch.tensor(step_coefficients(dt=-0.05, a_c=3.0, a_u=-2.0, x0_a=1.0, x0_b=-0.6), device=DEVICE)

    def step(model_in, state, x0):
        out = model(model_in)
        B = state.shape[0]
        guided_step(state, out[:B], out[B:], coef, out=state, model_in=model_in, x0=x0, backend="triton")
        return state

    x = torch.randn(4, 16, device=DEVICE)
    eager_in, eager_state, eager_x0 = torch.cat([x, x]), x.clone(), torch.empty_like(x)
    comp_in, comp_state, comp_x0 = eager_in.clone(), x.clone(), torch.empty_like(x)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for _ in range(3):
            step(eager_in, eager_state, eager_x0)
            compiled(comp_in, comp_state, comp_x0)
    assert_close("state", comp_state, eager_state, 1e-6)
    assert_close("x0", comp_x0, eager_x0, 1e-6)
    assert_close("model_in", comp_in, eager_in, 1e-6)
    assert not torch.equal(comp_state, x)
    # the traced graph holds the fused step as one custom op (eager calls skip the op's dispatch cost)
    targets = []

    def record(gm, example_inputs):
        targets.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward
    torch.compile(step, fullgraph=True, backend=record)(comp_in, comp_state, comp_x0)
    assert "flowkernels.guided_step.default" in targets


# --- TRELLIS / TRELLIS.2 samplers ---------------------------------------------------------------------------------
TRELLIS_CASES = {
    "plain": (T1.FlowEulerSampler, {}, {}),
    "cfg": (T1.FlowEulerCfgSampler, dict(cfg_strength=2.5), dict(strength=2.5)),
    "interval-edges": (T1.FlowEulerGuidanceIntervalSampler, dict(cfg_strength=3.0, cfg_interval=(0.5, 0.75)),
                       dict(strength=3.0, interval=(0.5, 0.75))),
    "t2-cfg": (T2.FlowEulerCfgSampler, dict(guidance_strength=4.0), dict(strength=4.0, formula="trellis2")),
    "t2-g1": (T2.FlowEulerCfgSampler, dict(guidance_strength=1.0), dict(strength=1.0, formula="trellis2")),
    "t2-g0": (T2.FlowEulerCfgSampler, dict(guidance_strength=0.0), dict(strength=0.0, formula="trellis2")),
    "t2-interval-rescale": (T2.FlowEulerGuidanceIntervalSampler,
                            dict(guidance_strength=5.0, guidance_interval=(0.25, 0.75), guidance_rescale=0.7),
                            dict(strength=5.0, interval=(0.25, 0.75), formula="trellis2", rescale=0.7)),
    "t2-rescale-1": (T2.FlowEulerCfgSampler, dict(guidance_strength=3.0, guidance_rescale=1.0),
                     dict(strength=3.0, formula="trellis2", rescale=1.0)),
}


@pytest.mark.parametrize("rescale_t", [1.0, 3.0])
@pytest.mark.parametrize("case", list(TRELLIS_CASES))
def test_trellis_samplers_match_original(case, rescale_t):
    cls, kw, ref_kw = TRELLIS_CASES[case]
    model = ToyModel().to(DEVICE)
    noise = torch.randn(3, 5, 8, device=DEVICE)
    cond, neg = torch.randn(8, device=DEVICE) * 0.5, torch.zeros(8, device=DEVICE)
    sampler = cls(1e-5)
    if "strength" in ref_kw:
        out = sampler.sample(model, noise, cond, neg, steps=4, rescale_t=rescale_t, verbose=False, **kw)
        ref_kw = dict(ref_kw, neg_cond=neg)
    else:
        out = sampler.sample(model, noise, cond, steps=4, rescale_t=rescale_t, verbose=False)
    samples, xs, x0s = ref_trellis.euler_sample(model, noise, cond, 4, rescale_t, **ref_kw)
    assert_close("samples", out.samples, samples, 1e-5)
    assert len(out.pred_x_t) == len(out.pred_x_0) == 4
    for a, b in zip(out.pred_x_t + out.pred_x_0, xs + x0s):
        assert_close("trajectory", a, b, 1e-5)


def test_trellis_interval_skips_negative_pass_outside():
    model = ToyModel().to(DEVICE)
    noise = torch.randn(2, 3, 8, device=DEVICE)
    T1.FlowEulerGuidanceIntervalSampler(1e-5).sample(model, noise, None, torch.zeros(8, device=DEVICE), steps=4,
                                                    cfg_interval=(0.5, 0.75), verbose=False)
    assert model.calls == 4 + 2  # t = 1, .75, .5, .25: guidance at .75 and .5 only (edges inclusive)
    model.calls = 0
    T2.FlowEulerCfgSampler(1e-5).sample(model, noise, None, None, steps=3, guidance_strength=1.0, verbose=False)
    assert model.calls == 3


def test_trellis_patched_inference_model_is_honoured():
    """TRELLIS's multi-image pipelines replace _inference_model on the instance; it must still be called."""
    model = ToyModel().to(DEVICE)
    noise = torch.randn(2, 3, 8, device=DEVICE)
    conds = torch.randn(3, 8, device=DEVICE) * 0.5
    sampler = T1.FlowEulerCfgSampler(1e-5)
    seen = []

    def averaged(self, model, x_t, t, cond, neg_cond, cfg_strength, **kw):
        seen.append(t)
        pred = sum(T1.FlowEulerSampler._inference_model(self, model, x_t, t, c) for c in cond) / len(cond)
        neg = T1.FlowEulerSampler._inference_model(self, model, x_t, t, neg_cond)
        return (1 + cfg_strength) * pred - cfg_strength * neg
    sampler._inference_model = averaged.__get__(sampler, type(sampler))
    out = sampler.sample(model, noise, conds, torch.zeros(8, device=DEVICE), steps=3, cfg_strength=2.0,
                         verbose=False)
    assert len(seen) == 3

    def averaged_model(x, t, cond):
        return sum(model(x, t, c) for c in conds) / 3 if cond is conds else model(x, t, cond)
    ref, _, _ = ref_trellis.euler_sample(averaged_model, noise, conds, 3, neg_cond=torch.zeros(8, device=DEVICE),
                                         strength=2.0)
    assert_close("samples", out.samples, ref, 1e-5)


def test_trellis_sampler_on_sparse_tensor():
    model = ToyModel().to(DEVICE)
    feats = torch.randn(11, 8, device=DEVICE)
    noise = FakeSparse(feats, [slice(0, 4), slice(4, 11)])
    sparse_model = lambda x, t, cond: x.replace(model(x.feats, t[:1].expand(x.feats.shape[0]), cond))  # noqa: E731
    out = T1.FlowEulerCfgSampler(1e-5).sample(sparse_model, noise, None, torch.zeros(8, device=DEVICE), steps=3,
                                             cfg_strength=1.5, verbose=False)
    dense_model = lambda x, t, cond: model(x, t[:1].expand(x.shape[0]), cond)  # noqa: E731
    ref, _, _ = ref_trellis.euler_sample(dense_model, feats, None, 3, neg_cond=torch.zeros(8, device=DEVICE),
                                         strength=1.5)
    assert isinstance(out.samples, FakeSparse)
    assert_close("samples", out.samples.feats, ref, 1e-5)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(rescale_t=0.0), dict(cfg_interval=(0.5, 1.2)),
                                 dict(cfg_interval=(0.8, 0.2))], ids=["steps", "rescale_t", "hi", "order"])
def test_trellis_bad_arguments(bad):
    model = ToyModel().to(DEVICE)
    kw = dict(steps=3, verbose=False)
    kw.update(bad)
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        T1.FlowEulerGuidanceIntervalSampler(1e-5).sample(model, torch.randn(2, 3, 8, device=DEVICE), None,
                                                         torch.zeros(8, device=DEVICE), **kw)


# --- Hunyuan3D-2.1 and diffusers ----------------------------------------------------------------------------------
def hunyuan_model(model, batch):
    def fn(x, t, cond, guidance=None):
        assert x.shape[0] == cond.shape[0], "Hunyuan3D feeds [x; x] with [cond; uncond]"
        return model(x, t * 1000, cond[:, None, :])
    return fn


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("scale", [-1.0, 0.0, 5.0])
def test_hunyuan_sampler_bug_compatible_matches_original(shift, scale):
    model = ToyModel().to(DEVICE)
    B = 3
    latents = torch.randn(B, 6, 8, device=DEVICE)
    cond = torch.cat([torch.randn(B, 8, device=DEVICE) * 0.5, torch.zeros(B, 8, device=DEVICE)])
    if scale < 0:
        cond = cond[:B]
    fn = hunyuan_model(model, B)
    out = FlowMatchingSampler(shift=shift, fix_final_step=False).sample(
        fn, latents, cond, num_inference_steps=6, guidance_scale=scale, enable_pbar=False)
    ref = ref_samplers.hunyuan_sample(fn, latents, cond, 6, scale, shift=shift)
    assert_close("latents", out, ref, 1e-5)


def test_hunyuan_fixed_final_step_moves_every_call():
    model = ToyModel().to(DEVICE)
    latents = torch.randn(2, 4, 8, device=DEVICE)
    cond = torch.zeros(4, 8, device=DEVICE)
    sampler = FlowMatchingSampler(shift=2.0)
    ts = sampler.timesteps(5)
    assert len(ts) == 6 and ts[0] == 0.0 and ts[-1] == 1.0 and all(b > a for a, b in zip(ts, ts[1:]))
    assert FlowMatchingSampler(fix_final_step=False).timesteps(5)[-2:] == [1.0, 1.0]  # the original's no-op step
    model.calls = 0
    sampler.sample(hunyuan_model(model, 2), latents, cond, num_inference_steps=5, enable_pbar=False)
    assert model.calls == 5


DIFFUSERS_CONFIGS = {"shift3": dict(shift=3.0), "plain": {}, "dynamic": dict(use_dynamic_shifting=True),
                     "dynamic-linear": dict(use_dynamic_shifting=True, time_shift_type="linear"),
                     "terminal": dict(shift=2.0, shift_terminal=0.1), "invert": dict(invert_sigmas=True)}


# with diffusers installed (the test extra), the subclass of diffusers' scheduler; and the standalone look-alike
SCHEDULERS = {"subclass": fk_diffusers.FlowMatchEulerDiscreteScheduler,
              "standalone": fk_diffusers.StandaloneFlowMatchEulerDiscreteScheduler}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("config", list(DIFFUSERS_CONFIGS))
@pytest.mark.parametrize("which", list(SCHEDULERS))
def test_diffusers_scheduler_matches_original(config, dtype, which):
    kw = DIFFUSERS_CONFIGS[config]
    mu = 0.8 if kw.get("use_dynamic_shifting") else None
    sched = SCHEDULERS[which](**kw)
    sched.set_timesteps(7, device=DEVICE, mu=mu)
    ts, sigmas = ref_samplers.diffusers_sigmas(
        7, shift=kw.get("shift", 1.0), mu=mu, time_shift_type=kw.get("time_shift_type", "exponential"),
        shift_terminal=kw.get("shift_terminal"), invert_sigmas=kw.get("invert_sigmas", False))
    assert_close("sigmas", sched.sigmas, sigmas.to(DEVICE), 1e-7)
    assert_close("timesteps", sched.timesteps, ts.to(DEVICE), 1e-7)
    model = ToyModel().to(DEVICE)
    fn = lambda x, t: model(x, t)  # noqa: E731
    x = torch.randn(2, 5, 8, device=DEVICE).to(DTYPES[dtype])
    lat = x
    for t in sched.timesteps:
        out = sched.step(fn(lat, t.expand(2)), t, lat)
        assert out.prev_sample.dtype == DTYPES[dtype]
        lat = out.prev_sample
    ref = ref_samplers.diffusers_euler(fn, x, ts.to(DEVICE), sigmas.to(DEVICE))
    if dtype == "fp32":
        assert_close("latents", lat, ref, 1e-6)
        return
    # 16-bit: diffusers rounds (σ_next − σ)·v to bf16 before the fp32 add, the fused step does not; over 7 steps
    # of a nonlinear model one-ulp differences grow, so hold both to an fp64 trajectory by the 2x rule.
    ref64 = ref_samplers.diffusers_euler(fn, x.double(), ts.to(DEVICE), sigmas.to(DEVICE).double())
    assert_2x_rule("latents", lat, ref, ref64)


@pytest.mark.parametrize("which", list(SCHEDULERS))
def test_diffusers_scheduler_errors(which):
    cls = SCHEDULERS[which]
    sched = cls()
    if which == "standalone":
        with pytest.raises(ValueError, match="set_timesteps"):
            sched.step(torch.zeros(2), torch.tensor(1.0), torch.zeros(2))
        with pytest.raises(NotImplementedError, match="use_karras_sigmas"):
            cls(use_karras_sigmas=True)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_inference_steps"):
            sched.set_timesteps(bad)
    with pytest.raises(ValueError, match="mu"):
        cls(use_dynamic_shifting=True).set_timesteps(4)
    with pytest.raises(ValueError, match="sigmas"):  # as diffusers: 3 sigmas for 10 steps
        sched.set_timesteps(10, sigmas=[1.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="timesteps"):
        sched.set_timesteps(10, timesteps=[1000.0, 500.0])
    sched.set_timesteps(3)
    with pytest.raises(ValueError, match="integer index"):
        sched.step(torch.zeros(2), 1, torch.zeros(2))
    with pytest.raises(ValueError, match="model_output has shape"):
        sched.step(torch.zeros(3), sched.timesteps[0], torch.zeros(2))


# --- generic sample_euler --------------------------------------------------------------------------------------------
def plain_euler(fn, x, ts, heun=False):
    x = x.double()
    for t0, t1 in zip(ts[:-1], ts[1:]):
        v1 = fn(x, t0)
        if not heun:
            x = x + (t1 - t0) * v1
        else:
            v2 = fn(x + (t1 - t0) * v1, t1)
            x = x + (t1 - t0) / 2 * (v1 + v2)
    return x


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("layout", ["batched", "uncond_fn", "none"])
def test_sample_euler_guidance_layouts(method, layout):
    model = ToyModel().to(DEVICE)
    B = 3
    noise = torch.randn(B, 4, 8, device=DEVICE)
    c_emb, u_emb = torch.randn(8, device=DEVICE) * 0.5, torch.zeros(8, device=DEVICE)
    w = 3.0
    ts = fk.sampling.trellis_timesteps(5, 2.0)
    interval = (0.2, 0.9)

    def guided_v(x, t):
        c = model(x.float(), torch.full((B,), t, device=DEVICE), c_emb).double()
        if layout == "none" or not interval[0] <= t <= interval[1]:
            return c
        u = model(x.float(), torch.full((B,), t, device=DEVICE), u_emb).double()
        return u + w * (c - u)

    if layout == "batched":
        def fn(x, t):
            n = x.shape[0]
            cond = c_emb if n == B else torch.cat([c_emb.expand(B, 1, 8), u_emb.expand(B, 1, 8)])
            return model(x, t, cond)
        guidance = fk.Guidance(scale=w, interval=interval)
    else:
        fn = lambda x, t: model(x, t, c_emb)  # noqa: E731
        guidance = None if layout == "none" else fk.Guidance(
            scale=w, interval=interval, uncond_fn=lambda x, t: model(x, t, u_emb))
    out = fk.sample_euler(fn, noise, ts, guidance=guidance, method=method)
    assert_close("sample", out, plain_euler(guided_v, noise, ts, heun=method == "heun"), 1e-5)


def test_sample_euler_rescale_and_callback():
    model = ToyModel().to(DEVICE)
    noise = torch.randn(2, 6, 8, device=DEVICE)
    cond, neg = torch.randn(8, device=DEVICE) * 0.5, torch.zeros(8, device=DEVICE)
    ts = fk.sampling.trellis_timesteps(4)
    seen = []
    out = fk.sample_euler(lambda x, t: model(x, t, cond), noise, ts, time_scale=1000.0, convention="trellis",
                          sigma_min=1e-5, guidance=fk.Guidance(scale=4.0, formula="trellis2", rescale=0.5,
                                                               uncond_fn=lambda x, t: model(x, t, neg)),
                          callback=lambda i, t, x, x0: seen.append((i, t, x0.clone())))
    ref, _, x0s = ref_trellis.euler_sample(model, noise, cond, 4, neg_cond=neg, strength=4.0, formula="trellis2",
                                           rescale=0.5)
    assert_close("sample", out, ref, 1e-5)
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    for (_, _, x0), r in zip(seen, x0s):
        assert_close("x0", x0, r, 1e-5)


@pytest.mark.parametrize("bad,match", [
    (dict(timesteps=[1.0]), "timesteps"), (dict(method="rk4"), "method"),
    (dict(guidance=fk.Guidance(scale=2.0, interval=(-0.1, 0.5))), "interval"),
    (dict(guidance=fk.Guidance(scale=2.0, rescale=1.5)), "rescale"),
    (dict(guidance=fk.Guidance(scale=2.0, formula="dual")), "formula"),
    (dict(convention="edm"), "convention"),
], ids=["steps", "method", "interval", "rescale", "formula", "convention"])
def test_sample_euler_bad_arguments(bad, match):
    kw = dict(timesteps=[1.0, 0.5, 0.0])
    kw.update(bad)
    ts = kw.pop("timesteps")
    with pytest.raises(ValueError, match=match):
        fk.sample_euler(lambda x, t: x, torch.randn(2, 3, device=DEVICE), ts, **kw)


def test_sample_euler_mismatched_cond_batch():
    """A model that ignores the [x; x] layout (returns B rows for 2B inputs) gets a named error."""
    with pytest.raises(ValueError, match="model_fn returned"):
        fk.sample_euler(lambda x, t: x[:2], torch.randn(2, 3, device=DEVICE), [1.0, 0.0],
                        guidance=fk.Guidance(scale=2.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_sample_euler_cuda_graph_matches_eager():
    model = ToyModel().cuda()
    noise = torch.randn(4, 64, 8, device="cuda")
    ts = fk.sampling.trellis_timesteps(12, 3.0)
    g = fk.Guidance(scale=3.0, formula="trellis", interval=(0.3, 0.8))

    def fn(x, t):
        n = x.shape[0]
        cond = torch.zeros(n, 1, 8, device="cuda")
        cond[: n // 2 if n > 4 else n] += 0.5
        return model(x, t, cond)
    eager = fk.sample_euler(fn, noise, ts, guidance=g, time_scale=1000.0)
    graphed = fk.sample_euler(fn, noise, ts, guidance=g, time_scale=1000.0, cuda_graph=True)
    assert_close("graph vs eager", graphed, eager, 1e-6)
