"""A batch-1 condition serving a larger noise batch in every TRELLIS / TRELLIS.2 sampler, as TRELLIS's
`_inference_model` repeats it (`TrellisImageTo3DPipeline.run(num_samples > 1)` draws several samples from one image).

Each case runs our sampler with one condition and four samples, and compares with TRELLIS's call sequence written
out below with the condition repeated by hand, and with four separate one-sample runs of ours."""
import numpy as np
import pytest
import torch

from flowkernels.compat import trellis as T1
from flowkernels.compat import trellis2 as T2
from flowkernels.reference import trellis as ref_trellis
from conftest import FakeSparse
from helpers import DEVICE, assert_close

N, L, C = 4, 5, 8
SIGMA = 1e-5


class PerSampleCondModel(torch.nn.Module):
    """v(x, t, cond) with one condition row per sample; fails, as real TRELLIS models do, on a batch mismatch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(C, C) * 0.4)

    def forward(self, x, t, cond, **kwargs):
        if x.shape[0] != cond.shape[0] or t.shape[0] != x.shape[0]:
            raise RuntimeError(f"batch mismatch: x {tuple(x.shape)}, t {tuple(t.shape)}, cond {tuple(cond.shape)}")
        return torch.tanh(x @ self.w + cond[:, None, :] + t.view(-1, 1, 1) * 1e-3)


def sparse_model(model):
    """A sparse denoiser: each row sees its sample's condition row and time."""
    def fn(x, t, cond, **kwargs):
        if x.shape[0] != cond.shape[0] or t.shape[0] != x.shape[0]:
            raise RuntimeError("batch mismatch")
        out = torch.cat([model(x.feats[s][None], t[i:i + 1], cond[i:i + 1])[0] for i, s in enumerate(x.layout)])
        return x.replace(out)
    return fn


# (sampler class, its guidance keyword arguments, the reference loop's keyword arguments)
CASES = {
    "t1-euler": (T1.FlowEulerSampler, None, {}),
    "t1-cfg": (T1.FlowEulerCfgSampler, dict(cfg_strength=2.5), dict(strength=2.5)),
    "t1-interval": (T1.FlowEulerGuidanceIntervalSampler, dict(cfg_strength=3.0, cfg_interval=(0.3, 0.8)),
                    dict(strength=3.0, interval=(0.3, 0.8))),
    "t2-euler": (T2.FlowEulerSampler, None, {}),
    "t2-cfg": (T2.FlowEulerCfgSampler, dict(guidance_strength=4.0), dict(strength=4.0, formula="trellis2")),
    "t2-cfg-rescale": (T2.FlowEulerCfgSampler, dict(guidance_strength=4.0, guidance_rescale=0.6),
                       dict(strength=4.0, formula="trellis2", rescale=0.6)),
    "t2-interval": (T2.FlowEulerGuidanceIntervalSampler,
                    dict(guidance_strength=5.0, guidance_interval=(0.3, 0.8)),
                    dict(strength=5.0, interval=(0.3, 0.8), formula="trellis2")),
}


def run_ours(cls, guidance, model, noise, cond, neg, steps):
    sampler = cls(SIGMA)
    if guidance is None:
        return sampler.sample(model, noise, cond, steps=steps, rescale_t=3.0, verbose=False)
    return sampler.sample(model, noise, cond, neg, steps=steps, rescale_t=3.0, verbose=False, **guidance)


@pytest.mark.parametrize("case", list(CASES))
def test_one_condition_four_samples_dense(case):
    cls, guidance, ref_kw = CASES[case]
    model = PerSampleCondModel().to(DEVICE)
    noise = torch.randn(N, L, C, device=DEVICE)
    cond, neg = torch.randn(1, C, device=DEVICE) * 0.5, torch.randn(1, C, device=DEVICE) * 0.1
    out = run_ours(cls, guidance, model, noise, cond, neg, 3)
    # TRELLIS's loop with both conditions repeated by hand
    if guidance is not None:
        ref_kw = dict(ref_kw, neg_cond=neg.repeat(N, 1))
    ref, xs, x0s = ref_trellis.euler_sample(model, noise, cond.repeat(N, 1), 3, 3.0, SIGMA, **ref_kw)
    assert_close("samples", out.samples, ref, 1e-5)
    for a, b in zip(out.pred_x_t + out.pred_x_0, xs + x0s):
        assert_close("trajectory", a, b, 1e-5)
    # four separate runs of one sample each
    single = torch.cat([run_ours(cls, guidance, model, noise[i:i + 1], cond, neg, 3).samples for i in range(N)])
    assert_close("four one-sample runs", out.samples, single, 1e-5)


@pytest.mark.parametrize("case", ["t1-interval", "t2-cfg", "t2-euler"])
def test_one_condition_four_samples_sparse(case):
    cls, guidance, _ = CASES[case]
    model = PerSampleCondModel().to(DEVICE)
    sizes = [3, 6, 2, 5]
    bounds = torch.tensor([0] + sizes).cumsum(0).tolist()
    layout = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    noise = FakeSparse(torch.randn(bounds[-1], C, device=DEVICE), layout)
    cond, neg = torch.randn(1, C, device=DEVICE) * 0.5, torch.randn(1, C, device=DEVICE) * 0.1
    out = run_ours(cls, guidance, sparse_model(model), noise, cond, neg, 3)
    by_hand = run_ours(cls, guidance, sparse_model(model), noise, cond.repeat(N, 1), neg.repeat(N, 1), 3)
    assert isinstance(out.samples, FakeSparse)
    assert_close("sparse samples", out.samples.feats, by_hand.samples.feats, 1e-6)
    one_sample = [FakeSparse(noise.feats[s], [slice(0, s.stop - s.start)]) for s in layout]
    single = torch.cat([run_ours(cls, guidance, sparse_model(model), x, cond, neg, 3).samples.feats
                        for x in one_sample])
    assert_close("four one-sample runs", out.samples.feats, single, 1e-5)


@pytest.mark.parametrize("case", ["t1-euler", "t1-cfg", "t1-interval", "t2-cfg", "t2-cfg-rescale"])
def test_sample_once_repeats_condition(case):
    """One step from t to t_prev, against TRELLIS's sample_once written out: v, x_prev = x − (t − t_prev) v, x_0."""
    cls, guidance, _ = CASES[case]
    model = PerSampleCondModel().to(DEVICE)
    x = torch.randn(N, L, C, device=DEVICE)
    cond, neg = torch.randn(1, C, device=DEVICE) * 0.5, torch.randn(1, C, device=DEVICE) * 0.1
    t, t_prev = 0.7, 0.45
    kw = dict(guidance or {})
    if guidance is not None:
        kw["neg_cond"] = neg
    out = cls(SIGMA).sample_once(model, x, t, t_prev, cond, **kw)

    def m(c):  # TRELLIS's _inference_model, condition repeated by hand
        return model(x, torch.tensor([1000 * t] * N, device=DEVICE, dtype=torch.float32), c.repeat(N, 1))
    if guidance is None:
        v = m(cond)
    elif "cfg_strength" in kw:
        w = kw["cfg_strength"]
        v = (1 + w) * m(cond) - w * m(neg)
    else:
        g, phi = kw["guidance_strength"], kw.get("guidance_rescale", 0.0)
        pos = m(cond)
        v = g * pos + (1 - g) * m(neg)
        if phi > 0:
            x0_pos = (1 - SIGMA) * x - (SIGMA + (1 - SIGMA) * t) * pos
            x0_cfg = (1 - SIGMA) * x - (SIGMA + (1 - SIGMA) * t) * v
            x0_r = x0_cfg * (x0_pos.std(dim=[1, 2], keepdim=True) / x0_cfg.std(dim=[1, 2], keepdim=True))
            v = ((1 - SIGMA) * x - (phi * x0_r + (1 - phi) * x0_cfg)) / (SIGMA + (1 - SIGMA) * t)
    assert_close("pred_x_prev", out.pred_x_prev, x - (t - t_prev) * v, 1e-5)
    assert_close("pred_x_0", out.pred_x_0, (1 - SIGMA) * x - (SIGMA + (1 - SIGMA) * t) * v, 1e-5)


def test_patched_inference_model_multi_image_stochastic():
    """TRELLIS's `inject_sampler_multi_image(mode='stochastic')`: the instance's `_inference_model` is replaced by
    one that passes image `step % n_images` as a batch-1 `cond=` (and `neg_cond[:1]`) to the saved original, with
    the guidance keyword arguments; four samples are drawn."""
    model = PerSampleCondModel().to(DEVICE)
    noise = torch.randn(N, L, C, device=DEVICE)
    images = torch.randn(3, C, device=DEVICE) * 0.5
    neg = torch.zeros(3, C, device=DEVICE)[:1]
    steps, w, interval = 5, 3.0, (0.2, 0.9)
    sampler = T1.FlowEulerGuidanceIntervalSampler(SIGMA)
    # the pipeline's patch, call for call
    sampler._old_inference_model = sampler._inference_model
    cond_indices = [i % len(images) for i in range(steps)]

    def _new_inference_model(self, model, x_t, t, cond, **kwargs):
        cond_idx = cond_indices.pop(0)
        cond_i = cond[cond_idx:cond_idx + 1]
        return self._old_inference_model(model, x_t, t, cond=cond_i, **kwargs)
    sampler._inference_model = _new_inference_model.__get__(sampler, type(sampler))
    out = sampler.sample(model, noise, images, neg, steps=steps, cfg_strength=w, cfg_interval=interval,
                         verbose=False)
    assert cond_indices == []
    # TRELLIS's loop, image i of step i repeated by hand
    t_seq = np.linspace(1, 0, steps + 1).tolist()
    x = noise
    for i, (t, t_prev) in enumerate(zip(t_seq[:-1], t_seq[1:])):
        tt = torch.tensor([1000 * t] * N, device=DEVICE, dtype=torch.float32)
        c = model(x, tt, images[i % 3:i % 3 + 1].repeat(N, 1))
        v = (1 + w) * c - w * model(x, tt, neg.repeat(N, 1)) if interval[0] <= t <= interval[1] else c
        x = x - (t - t_prev) * v
    assert_close("samples", out.samples, x, 1e-5)
