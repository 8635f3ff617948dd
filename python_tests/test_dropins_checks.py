"""Drop-in details where a swap-in user would otherwise get a different result or a crash: the TRELLIS trainer's
default time schedule, the sample_time argument checks, and model-output checks in every sampler."""
import pytest
import torch

from flowkernels.compat import trellis as T1
from helpers import DEVICE


def test_trellis_training_losses_default_schedule_is_logit_normal_0_1():
    """TRELLIS's FlowMatchingTrainer defaults to t_schedule logitNormal(mean 0, std 1); its sample_t draws
    torch.sigmoid(torch.randn(batch_size) * std + mean). Ours draws the same t from the same generator state."""
    seen = []

    def denoiser(x_t, t, cond=None):
        seen.append(t.detach().clone())
        return x_t * 0.5
    B = 257
    x0 = torch.randn(B, 3, device=DEVICE)
    state = torch.get_rng_state()
    T1.training_losses(denoiser, x0)
    torch.set_rng_state(state)
    mean, std = 0.0, 1.0
    t_trellis = torch.sigmoid(torch.randn(B) * std + mean).to(DEVICE).float()
    torch.testing.assert_close(seen[0], t_trellis * 1000, rtol=0, atol=0)


# --- sample_time argument checks --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,name", [
    (dict(dtype=torch.int64), "dtype"), (dict(dtype=torch.int32), "dtype"), (dict(dtype=torch.bool), "dtype"),
    (dict(sampler="logit_normal", mean=float("nan")), "mean"), (dict(sampler="logit_normal", std=float("nan")), "std"),
    (dict(mean=float("inf")), "mean"), (dict(sampler="mode", mode_scale=float("nan")), "mode_scale"),
    (dict(shift=float("inf")), "shift"), (dict(shift=float("nan")), "shift"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_sample_time_rejects_integer_dtype_and_non_finite_parameters(bad, name):
    import flowkernels as fk
    with pytest.raises(ValueError, match=name):
        fk.sample_time(5, device=DEVICE, **bad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_sample_time_float_dtypes_follow_the_formula(dtype):
    """logit-normal t = sigmoid(mean + std z) from the same generator state, returned in the asked dtype."""
    import flowkernels as fk
    gen = torch.Generator(device=DEVICE).manual_seed(int(torch.randint(0, 2**31, ())))
    state = gen.get_state()
    t = fk.sample_time(64, sampler="logit_normal", mean=0.3, std=1.7, device=DEVICE, generator=gen, dtype=dtype)
    gen.set_state(state)
    z = torch.randn(64, device=DEVICE, generator=gen, dtype=torch.float32).double()
    assert t.dtype == dtype
    # t is formed in fp32 and rounded once into a 16-bit dtype: against the float64 formula rounded into it, the two
    # roundings may differ by one ulp of that dtype where the fp32 value lies next to a rounding boundary
    rtol = 1e-6 if dtype in (torch.float32, torch.float64) else torch.finfo(dtype).eps
    torch.testing.assert_close(t.double(), torch.sigmoid(0.3 + 1.7 * z).to(dtype).double(), rtol=rtol, atol=1e-7)


# --- model outputs are checked before the fused step reads them ------------------------------------------------
def bad_outputs(x):
    """Every kind of wrong model output, for an input x: (label, output, words the error must contain)."""
    return [
        ("larger", torch.zeros(x.shape[0], x.shape[1] + 1, *x.shape[2:], dtype=x.dtype), "shape"),
        ("broadcastable", torch.zeros(x.shape[0], *[1] * (x.dim() - 1), dtype=x.dtype), "shape"),
        ("fewer rows", x[:1].clone() if x.shape[0] > 1 else x[:0].clone(), "shape"),
        ("None", None, "NoneType"), ("tuple", (x.clone(),), "tuple"), ("ndarray", x.cpu().numpy(), "ndarray"),
        ("int", torch.zeros(x.shape, dtype=torch.int32), "dtype"),
        ("bool", torch.zeros(x.shape, dtype=torch.bool), "dtype"),
    ]


BAD_KINDS = [b[0] for b in bad_outputs(torch.zeros(2, 3, 4))]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("where", ["model", "batched-cfg", "uncond_fn"])
def test_sample_euler_checks_every_model_output(kind, backend, where):
    import flowkernels as fk
    noise = torch.randn(2, 3, 4, device=DEVICE)

    def wrong(x, t):
        return dict((b[0], b[1]) for b in bad_outputs(x))[kind]
    words = dict((b[0], b[2]) for b in bad_outputs(noise))[kind]
    if where == "model":
        kw, name = dict(), "model_fn"
        fn = wrong
    elif where == "batched-cfg":
        kw, name = dict(guidance=fk.Guidance(scale=2.0)), "model_fn"
        fn = wrong
    else:
        kw, name = dict(guidance=fk.Guidance(scale=2.0, uncond_fn=wrong)), "guidance.uncond_fn"
        fn = lambda x, t: x * 0.5  # noqa: E731
    with pytest.raises(ValueError, match=name) as err:
        fk.sample_euler(fn, noise, [1.0, 0.5, 0.0], backend=backend, **kw)
    assert words in str(err.value)


def test_sample_euler_rejects_integer_model_dtype():
    import flowkernels as fk
    with pytest.raises(ValueError, match="model_dtype"):
        fk.sample_euler(lambda x, t: x, torch.randn(2, 3, device=DEVICE), [1.0, 0.0], model_dtype=torch.int32)
    with pytest.raises(ValueError, match="model_fn must be callable"):
        fk.sample_euler(None, torch.randn(2, 3, device=DEVICE), [1.0, 0.0])


class WrongModel(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x, t, cond=None, **kwargs):
        feats = x.feats if hasattr(x, "feats") else x
        return dict((b[0], b[1]) for b in bad_outputs(feats))[self.kind]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_compat_samplers_check_model_outputs(kind):
    from flowkernels.compat import trellis2 as T2
    from flowkernels.compat.hunyuan3d import FlowMatchingSampler
    model = WrongModel(kind)
    noise = torch.randn(2, 3, 4, device=DEVICE)
    words = dict((b[0], b[2]) for b in bad_outputs(noise))[kind]
    runs = {
        "trellis cfg": lambda: T1.FlowEulerCfgSampler(1e-5).sample(model, noise, None, None, steps=2, verbose=False),
        "trellis sample_once": lambda: T1.FlowEulerSampler(1e-5).sample_once(model, noise, 0.5, 0.2),
        "trellis2 rescale": lambda: T2.FlowEulerCfgSampler(1e-5).sample(
            model, noise, None, None, steps=2, guidance_strength=3.0, guidance_rescale=0.5, verbose=False),
        "hunyuan cfg": lambda: FlowMatchingSampler().sample(model, noise, None, num_inference_steps=2,
                                                            enable_pbar=False),
    }
    for label, run in runs.items():
        with pytest.raises(ValueError, match="WrongModel") as err:
            run()
        assert words in str(err.value), label


@pytest.mark.parametrize("kind", ["larger", "broadcastable", "fewer rows", "None", "tuple", "ndarray", "int"])
def test_compat_schedulers_check_model_outputs(kind):
    from flowkernels.compat import diffusers as fk_diffusers
    from flowkernels.compat import hunyuan3d
    sample = torch.randn(2, 3, 4, device=DEVICE)
    out = dict((b[0], b[1]) for b in bad_outputs(sample))[kind]
    for cls in (fk_diffusers.FlowMatchEulerDiscreteScheduler, fk_diffusers.StandaloneFlowMatchEulerDiscreteScheduler,
                hunyuan3d.FlowMatchEulerDiscreteScheduler, hunyuan3d.ConsistencyFlowMatchEulerDiscreteScheduler):
        sched = cls()
        sched.set_timesteps(3)
        with pytest.raises(ValueError, match="model_output"):
            sched.step(out, sched.timesteps[0], sample)
