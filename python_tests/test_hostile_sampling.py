"""Hostile calls of the sampling API: every bad argument a named ValueError, never an out-of-bounds read or write,
a NaN result or a silently wrong answer."""
import pytest
import torch

import flowkernels as fk
from flowkernels.compat import trellis as T1
from flowkernels.compat import trellis2 as T2
from flowkernels.compat.hunyuan3d import FlowMatchingSampler
from flowkernels.reference import trellis as ref_trellis
from flowkernels.sampling import guidance_rescale_factor, guided_step, step_coefficients
from conftest import FakeSparse
from helpers import assert_close

STEP_BACKENDS = ["native", "torch"]
COEF = step_coefficients(dt=-0.1, a_c=3.0, a_u=-2.0, x0_a=1.0, x0_b=-0.5)


def _step_args(rows=4, cols=8):
    x, c, u = torch.randn(rows, cols), torch.randn(rows, cols), torch.randn(rows, cols)
    return dict(x=x, c=c, u=u, coef=torch.tensor(COEF), out=torch.empty(rows, cols))


def _call(args, backend):
    a = dict(args)
    guided_step(a.pop("x"), a.pop("c"), a.pop("u"), a.pop("coef"), backend=backend, **a)


BAD_STEP_ARGS = {
    # smaller / larger buffers: the native kernel read or wrote past them (heap corruption for `out`)
    "c-fewer-rows": (dict(c=torch.randn(2, 8)), "c has shape"),
    "c-more-rows": (dict(c=torch.randn(8, 8)), "c has shape"),
    "u-one-row": (dict(u=torch.randn(1, 8)), "u has shape"),
    "out-fewer-rows": (dict(out=torch.empty(2, 8)), "out has shape"),
    "x0-one-row": (dict(x0=torch.empty(1, 8)), "x0 has shape"),
    "h-one-row": (dict(h=torch.empty(1, 8)), "h has shape"),
    "model_in-one-row": (dict(model_in=torch.empty(1, 8)), "model_in has shape"),
    "model_in-3B-rows": (dict(model_in=torch.empty(12, 8)), "model_in has shape"),
    "out-not-contiguous": (dict(out=torch.empty(8, 4).t()), "out must be contiguous"),
    "x0-integer": (dict(x0=torch.empty(4, 8, dtype=torch.int32)), "x0 has dtype"),
    "c-integer": (dict(c=torch.ones(4, 8, dtype=torch.int64)), "c has dtype"),
    # a short coefficient row was read past its end
    "coef-one-value": (dict(coef=torch.tensor([0.1])), "coef must be one step_coefficients row"),
    "coef-2d": (dict(coef=torch.tensor([COEF])), "coef must be one step_coefficients row"),
    "coef-integer": (dict(coef=torch.zeros(8, dtype=torch.int64)), "coef has dtype"),
    "rescale-nan": (dict(rescale=float("nan")), "rescale=nan"),
    "rescale-2": (dict(rescale=2.0), "rescale=2.0"),
    "rescale-without-u": (dict(u=None, rescale=0.5), "needs the unconditional output u"),
}


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("case", list(BAD_STEP_ARGS))
def test_guided_step_rejects_bad_tensors(case, backend):
    change, message = BAD_STEP_ARGS[case]
    args = _step_args()
    args.update(change)
    with pytest.raises(ValueError, match=message):
        _call(args, backend)


BAD_OFFSETS = {
    "past-the-rows": [0, 3, 100000],
    "short-of-the-rows": [0, 3, 5],     # rows 5 and 6 were left unwritten (out's uninitialised memory)
    "decreasing": [0, 5, 3, 7],
    "negative-start": [-2, 3, 7],
}


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("case", list(BAD_OFFSETS))
def test_guided_step_rejects_offsets_outside_the_rows(case, backend):
    args = _step_args(rows=7)
    with pytest.raises(ValueError, match="offsets must run from 0 to x's 7 rows"):
        _call(dict(args, offsets=torch.tensor(BAD_OFFSETS[case]), rescale=0.5), backend)
    with pytest.raises(ValueError, match="offsets must run from 0"):
        guidance_rescale_factor(args["x"], args["c"], args["u"], args["coef"], 0.5,
                                offsets=torch.tensor(BAD_OFFSETS[case]), backend=backend)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("offsets", [torch.tensor([0, 3, 7], dtype=torch.int32), torch.tensor([[0, 3, 7]]),
                                     torch.tensor([0.0, 3.0, 7.0])], ids=["int32", "2d", "float"])
def test_guided_step_rejects_offsets_of_another_kind(offsets, backend):
    """int32 offsets were read as int64 by the native kernel (garbage rows, a result of ~1e-42)."""
    with pytest.raises(ValueError, match="offsets must be a 1-D int64 tensor"):
        _call(dict(_step_args(rows=7), offsets=offsets, rescale=0.5), backend)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_guided_step_rescale_of_one_element_samples_is_an_error_not_nan(backend):
    """std of one element is 0/0: the step returned NaN for every row."""
    args = _step_args(rows=3, cols=1)
    with pytest.raises(ValueError, match="at least 2 elements per sample"):
        _call(dict(args, rescale=0.5), backend)
    ragged = dict(_step_args(rows=4, cols=1), offsets=torch.tensor([0, 3, 4]), rescale=0.5)
    with pytest.raises(ValueError, match="at least 2 elements per sample"):
        _call(ragged, backend)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_guided_step_checks_keep_valid_calls_working(backend):
    """The checks accept what the kernels serve: [cond; uncond] halves read in place, a [2B] model_in, an empty
    sample among ragged ones, fp64 coefficients; the result is the formula's."""
    both = torch.randn(6, 5)
    x = torch.randn(3, 5)
    out, model_in = torch.empty(3, 5), torch.empty(6, 5)
    guided_step(x, both[:3], both[3:], torch.tensor(COEF, dtype=torch.float64), out=out, model_in=model_in,
                backend=backend)
    want = x.double() - 0.1 * (3.0 * both[:3].double() - 2.0 * both[3:].double())
    assert_close("out", out, want, 1e-6)
    assert torch.equal(model_in[:3], model_in[3:])
    args = _step_args(rows=5, cols=3)
    _call(dict(args, offsets=torch.tensor([0, 2, 2, 5]), rescale=0.5), backend)
    assert torch.isfinite(args["out"]).all()


# --- TRELLIS / TRELLIS.2 samplers -----------------------------------------------------------------------------
def _unconditional_when_none(x, t, cond=None, **kw):
    """A velocity model that reads cond=None as the unconditional prediction (a legitimate neg_cond)."""
    h = torch.tanh(x * 0.7 + t.view(-1, *[1] * (x.dim() - 1)) * 1e-3)
    return h if cond is None else h + cond


@pytest.mark.parametrize("variant", ["trellis-cfg", "trellis-interval", "trellis2-cfg", "trellis2-rescale"])
def test_trellis_neg_cond_none_is_evaluated_not_dropped(variant):
    """neg_cond=None is a condition like any other: TRELLIS evaluates model(x, t, None). The samplers took None for
    'no negative pass' and returned (1 + w)·c (TRELLIS) or g·c (TRELLIS.2): off by several units."""
    noise, cond = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    sampler, kw, ref_kw = {
        "trellis-cfg": (T1.FlowEulerCfgSampler, dict(cfg_strength=3.0), dict(strength=3.0)),
        "trellis-interval": (T1.FlowEulerGuidanceIntervalSampler, dict(cfg_strength=3.0, cfg_interval=(0.3, 0.9)),
                             dict(strength=3.0, interval=(0.3, 0.9))),
        "trellis2-cfg": (T2.FlowEulerCfgSampler, dict(guidance_strength=3.0),
                         dict(strength=3.0, formula="trellis2")),
        "trellis2-rescale": (T2.FlowEulerCfgSampler, dict(guidance_strength=3.0, guidance_rescale=0.6),
                             dict(strength=3.0, formula="trellis2", rescale=0.6)),
    }[variant]
    with torch.no_grad():
        got = sampler(1e-5).sample(_unconditional_when_none, noise, cond, None, steps=4, verbose=False, **kw)
        want, _, _ = ref_trellis.euler_sample(_unconditional_when_none, noise, cond, 4, neg_cond=None, **ref_kw)
    assert_close("samples", got.samples, want, 1e-9)


BAD_TRELLIS_ARGS = {
    "cfg_strength-nan": (T1.FlowEulerCfgSampler, dict(cfg_strength=float("nan")), "cfg_strength=nan"),
    "cfg_strength-inf": (T1.FlowEulerCfgSampler, dict(cfg_strength=float("inf")), "cfg_strength=inf"),
    "cfg_strength-str": (T1.FlowEulerCfgSampler, dict(cfg_strength="3"), "cfg_strength='3'"),
    "guidance_strength-nan": (T2.FlowEulerCfgSampler, dict(guidance_strength=float("nan")), "guidance_strength=nan"),
    "guidance_strength-nan-interval": (T2.FlowEulerGuidanceIntervalSampler,
                                       dict(guidance_strength=float("nan"), guidance_interval=(0.5, 1.0)),
                                       "guidance_strength=nan"),
    "guidance_rescale-str": (T2.FlowEulerCfgSampler, dict(guidance_strength=3.0, guidance_rescale="0.5"),
                             "guidance_rescale='0.5'"),
    "rescale_t-inf": (T1.FlowEulerCfgSampler, dict(rescale_t=float("inf")), "rescale_t=inf"),
    "steps-True": (T1.FlowEulerCfgSampler, dict(steps=True), "steps=True"),
}


@pytest.mark.parametrize("case", list(BAD_TRELLIS_ARGS))
def test_trellis_samplers_name_bad_guidance_numbers(case):
    """NaN / infinite strengths gave an all-NaN sample, an infinite rescale_t a NaN grid; strings a TypeError
    deep inside; steps=True one step."""
    sampler, kw, message = BAD_TRELLIS_ARGS[case]
    kw = dict(dict(steps=3), **kw)
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match=message), torch.no_grad():
        sampler(1e-5).sample(_unconditional_when_none, x, torch.randn(2, 4, 8), torch.zeros(2, 4, 8),
                             verbose=False, **kw)


@pytest.mark.parametrize("sigma_min", [float("nan"), -0.1, 1.0, "1e-5"])
def test_trellis_sampler_rejects_bad_sigma_min(sigma_min):
    with pytest.raises(ValueError, match="sigma_min"):
        T1.FlowEulerSampler(sigma_min)


def test_trellis2_rescale_of_one_element_samples_is_an_error_not_nan():
    """TRELLIS.2's rescale divides two per-sample stds: one element per sample gave NaN samples."""
    with pytest.raises(ValueError, match="at least 2 elements per sample"), torch.no_grad():
        T2.FlowEulerCfgSampler(1e-5).sample(_unconditional_when_none, torch.randn(3, 1), torch.randn(3, 1),
                                            torch.zeros(3, 1), steps=2, guidance_strength=3.0, guidance_rescale=0.5,
                                            verbose=False)


@pytest.mark.parametrize("layout,message", [
    ([slice(0, 3), slice(3, 9)], "covers rows 0:9 but its feats have 7 rows"),   # read past the feature rows
    ([slice(0, 2), slice(3, 7)], "layout\\[1\\]"),                                  # a gap: row 2 joined sample 0
    ([slice(0, 4), slice(3, 7)], "layout\\[1\\]"),                                  # overlap
    ([slice(0, 3)], "covers rows 0:3"),                                             # rows left out
])
def test_trellis2_sparse_rescale_checks_the_layout(layout, message):
    sparse = FakeSparse(torch.randn(7, 8), layout)
    lin = torch.nn.Linear(8, 8)

    def model(x, t, cond=None, **kw):
        return x.replace(lin(x.feats) + (0.0 if cond is None else 1.0))
    with pytest.raises(ValueError, match=message), torch.no_grad():
        T2.FlowEulerCfgSampler(1e-5).sample(model, sparse, None, None, steps=2, guidance_strength=3.0,
                                            guidance_rescale=0.5, verbose=False)


# --- sample_euler and Hunyuan3D's sampler ---------------------------------------------------------------------
def _velocity(x, t):
    return torch.tanh(x * 0.8) + 0.1


def test_sample_euler_refuses_noise_that_requires_grad():
    """The fused steps update the state in place outside autograd: d out / d noise came back as 1 (the copy
    alone) where the Euler step gives 1 + dt·dv/dx, a silently wrong gradient."""
    noise = torch.randn(2, 5, requires_grad=True)
    with pytest.raises(ValueError, match="noise requires grad"):
        fk.sample_euler(lambda x, t: x * 0.5, noise, [1.0, 0.0])
    with torch.no_grad():  # under no_grad (how samplers run) the same noise is fine, the result has no history
        out = fk.sample_euler(lambda x, t: x * 0.5, noise, [1.0, 0.0])
    assert not out.requires_grad
    assert_close("out", out, noise.detach().double() * 0.5, 1e-6)


@pytest.mark.parametrize("timesteps", ["10", None, torch.tensor([[1.0, 0.5], [0.5, 0.0]]), 3],
                         ids=["str", "None", "2d", "int"])
def test_sample_euler_names_bad_timesteps(timesteps):
    """A string was a grid ('10' sampled from t=1 to t=0); None, an int or a 2-D tensor raised TypeErrors."""
    with pytest.raises(ValueError, match="timesteps must be a 1-D sequence"):
        fk.sample_euler(_velocity, torch.randn(2, 4), timesteps)


@pytest.mark.parametrize("kw,message", [
    (dict(time_scale=float("nan")), "time_scale=nan"),           # the model got NaN times
    (dict(sigma_min=float("nan")), "sigma_min=nan"),             # NaN data predictions in the callback
    (dict(guidance=fk.Guidance("3")), "guidance.scale='3'"),
    (dict(guidance=fk.Guidance(True)), "guidance.scale=True"),
    (dict(guidance=fk.Guidance(3.0, interval=(0.1,))), "guidance.interval"),
    (dict(guidance=fk.Guidance(3.0, interval=(0.1, float("nan")))), "guidance.interval"),
    (dict(guidance=fk.Guidance(3.0, uncond_fn=3)), "guidance.uncond_fn must be callable"),
], ids=["time_scale", "sigma_min", "scale-str", "scale-bool", "interval-short", "interval-nan", "uncond_fn"])
def test_sample_euler_names_bad_numbers(kw, message):
    with pytest.raises(ValueError, match=message):
        fk.sample_euler(_velocity, torch.randn(2, 4), [1.0, 0.5, 0.0], **kw)


def test_sample_euler_empty_batch_with_rescale():
    """B = 0 with guidance rescale raised an IndexError (noise[0]); it returns the empty batch as without it."""
    out = fk.sample_euler(_velocity, torch.randn(0, 4), [1.0, 0.0],
                          guidance=fk.Guidance(3.0, formula="trellis2", rescale=0.5))
    assert out.shape == (0, 4)


class _HunyuanModel(torch.nn.Module):
    def forward(self, x, t, cond, guidance=None):
        return torch.tanh(x * 0.5) + cond.mean() * 0.0 + t.view(-1, 1, 1) * 0.01


@pytest.mark.parametrize("kw,message", [
    (dict(guidance_scale=float("nan")), "guidance_scale=nan"),    # NaN >= 0 is False: CFG was silently off
    (dict(timesteps=[-5.0, 2000.0]), "timesteps must give times in \\[0, 1\\]"),  # CFG skipped outside [0, 1]
    (dict(sigmas=[0.0, 0.5, 1.5]), "sigmas must give times in \\[0, 1\\]"),
])
def test_hunyuan_sampler_names_bad_guidance_and_grids(kw, message):
    latents = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=message):
        FlowMatchingSampler().sample(_HunyuanModel(), latents, torch.randn(4, 3, 4), enable_pbar=False, **kw)


def test_hunyuan_sampler_rejects_zero_train_timesteps():
    """num_train_timesteps=0 made every model time (t·0)/0 = NaN."""
    with pytest.raises(ValueError, match="num_train_timesteps=0"):
        FlowMatchingSampler(num_train_timesteps=0)


@pytest.mark.parametrize("grid,kw,message", [
    ("trellis", dict(steps=3, rescale_t=0.0), "rescale_t=0.0"),       # [nan, 0, 0, 0]
    ("trellis", dict(steps=3, rescale_t=-1.0), "rescale_t=-1.0"),     # [1, 2, -1, 0]: not monotone
    ("trellis", dict(steps=0), "steps=0"),                            # [1.0]: no step
    ("trellis", dict(steps=2.5), "steps=2.5"),
    ("hunyuan", dict(steps=3, shift=0.0), "shift=0.0"),               # [0, 0, 0, nan]
    ("hunyuan", dict(steps=3, shift=float("inf")), "shift=inf"),      # all NaN
    ("hunyuan", dict(steps=0), "steps=0"),
])
def test_time_grids_name_bad_arguments(grid, kw, message):
    fn = fk.sampling.trellis_timesteps if grid == "trellis" else fk.sampling.hunyuan_timesteps
    with pytest.raises(ValueError, match=message):
        fn(**kw)


def test_non_callable_callbacks_are_named_before_any_model_call():
    """callback=3 ran the first step's model call, then raised TypeError: 'int' object is not callable."""
    calls = []

    def model(x, t, *args, **kw):
        calls.append(1)
        return torch.tanh(x)
    with pytest.raises(ValueError, match="callback must be callable"):
        fk.sample_euler(model, torch.randn(2, 4), [1.0, 0.5, 0.0], callback=3)
    with pytest.raises(ValueError, match="callback must be callable"):
        FlowMatchingSampler().sample(model, torch.randn(2, 3, 4), torch.randn(4, 3, 4), num_inference_steps=2,
                                     enable_pbar=False, callback="log")
    assert calls == []


@pytest.mark.parametrize("backend", ["native", "torch", "triton"])
def test_rescale_of_a_constant_data_prediction_skips_instead_of_nan(backend):
    """TRELLIS.2's rescale divides std(x0_c) by std(x0_cfg): where the data prediction is constant (here c = u = x
    at the noise end t = 1, so x0 = x - v = 0) both are 0 and every later step of the sample was NaN. The rescale is
    skipped there (k = 1): the step is the plain guided one, x + dt·v, against float64."""
    x = torch.randn(3, 7)
    coef = torch.tensor(step_coefficients(dt=-0.25, a_c=3.0, a_u=-2.0, x0_a=1.0, x0_b=-1.0))
    out = torch.empty_like(x)
    guided_step(x, x.clone(), x.clone(), coef, out=out, rescale=0.7, backend=backend)
    assert_close("out", out, x.double() * 0.75, 1e-6)
    k = guidance_rescale_factor(x, x.clone(), x.clone(), coef, 0.7, backend=backend)
    assert torch.equal(k, torch.ones(3))
    # through the samplers: an identity model with TRELLIS.2 guidance and rescale stays finite
    with torch.no_grad():
        got = fk.sample_euler(lambda z, t: z, x, [1.0, 0.6, 0.2, 0.0], sigma_min=0.0, backend=backend,
                              guidance=fk.Guidance(3.0, formula="trellis2", rescale=0.5))
        sampled = T2.FlowEulerCfgSampler(0.0, backend=backend).sample(
            lambda z, t, cond=None: z, x, None, None, steps=3, guidance_strength=3.0, guidance_rescale=0.5,
            verbose=False).samples
    want = x.double() * 0.6 * 0.6 * 0.8   # v = x: each step multiplies by 1 + (t_next - t)
    assert_close("sample_euler", got, want, 1e-6)
    assert_close("TRELLIS.2 sampler", sampled, x.double() * (2 / 3) ** 3, 1e-6)   # grid 1, 2/3, 1/3, 0
