"""Hunyuan3D-2.1 drop-ins against its pipeline's call sequence and its schedulers' formulas (hy3dshape.schedulers,
Hunyuan3DDiTFlowMatchingPipeline.__call__), written out here."""
import math

import numpy as np
import pytest
import torch

from flowkernels.compat import hunyuan3d
from flowkernels.compat.hunyuan3d import (ConsistencyFlowMatchEulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
                                          FlowMatchingSampler)
from helpers import DEVICE, DTYPES, rel_rms

N_TRAIN = 1000


# --- the original schedulers' tables, from their formulas --------------------------------------------------------
def shifted(s, shift):
    return shift * s / (1 + (shift - 1) * s)


def flow_tables(shift=1.0, n=None, sigmas=None, mu=None):
    """(timesteps, sigmas) of FlowMatchEulerDiscreteScheduler: constructor, then set_timesteps(n | sigmas, mu)."""
    train = np.linspace(1, N_TRAIN, N_TRAIN, dtype=np.float32) / N_TRAIN
    train = torch.from_numpy(train if mu is not None else shifted(train, np.float32(shift)))
    if n is None and sigmas is None:
        return train * N_TRAIN, train
    if sigmas is None:  # linspace(sigma_max * N, sigma_min * N, n): the first and last training sigmas
        sigmas = np.linspace(train[0].item() * N_TRAIN, train[-1].item() * N_TRAIN, n) / N_TRAIN
    s = np.asarray(sigmas, dtype=np.float64)
    with np.errstate(divide="ignore"):
        s = math.exp(mu) / (math.exp(mu) + (1 / s - 1)) if mu is not None else shifted(s, shift)
    s = torch.from_numpy(s).to(torch.float32)
    return s * N_TRAIN, torch.cat([s, torch.ones(1)])


def consistency_tables(pcm=50, n=None):
    train = np.linspace(0, 1, N_TRAIN)
    ratio = N_TRAIN // pcm
    euler = np.asarray([0] + ((np.arange(1, pcm) * ratio).round().astype(np.int64) - 1).tolist())
    sig = torch.from_numpy(train[euler].copy()).to(torch.float32)
    if n is None:
        return sig * N_TRAIN, sig
    idx = torch.from_numpy(np.floor(np.linspace(0, pcm, num=n, endpoint=False)).astype(np.int64))
    s = sig[idx]
    return s * N_TRAIN, torch.cat([s, torch.ones(1)])


def exact(name, got, want):
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_scheduler_tables(shift):
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=N_TRAIN, shift=shift)
    ts, sig = flow_tables(shift)
    exact("train timesteps", sched.timesteps, ts)
    exact("train sigmas", sched.sigmas, sig)
    assert sched.sigma_min == sig[-1].item() and sched.sigma_max == sig[0].item()
    assert sched.config.shift == shift and sched.config["num_train_timesteps"] == N_TRAIN and len(sched) == N_TRAIN
    for kw in (dict(n=7), dict(sigmas=np.linspace(0, 1, 9)), dict(sigmas=torch.rand(5, dtype=torch.float64).numpy())):
        sched.set_timesteps(kw.get("n"), sigmas=kw.get("sigmas"))
        ts, sig = flow_tables(shift, **kw)
        exact(f"timesteps {kw}", sched.timesteps, ts)
        exact(f"sigmas {kw}", sched.sigmas, sig)
    dyn = FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=True)
    dyn.set_timesteps(sigmas=np.linspace(0, 1, 6), mu=0.8)
    exact("dynamic sigmas", dyn.sigmas, flow_tables(sigmas=np.linspace(0, 1, 6), mu=0.8)[1])
    with pytest.raises(ValueError, match="mu"):
        dyn.set_timesteps(5)


@pytest.mark.parametrize("pcm", [50, 7])
def test_consistency_scheduler_tables(pcm):
    sched = ConsistencyFlowMatchEulerDiscreteScheduler(num_train_timesteps=N_TRAIN, pcm_timesteps=pcm)
    ts, sig = consistency_tables(pcm)
    exact("train timesteps", sched.timesteps, ts)
    exact("train sigmas", sched.sigmas, sig)
    for n in (1, 4, pcm):
        sched.set_timesteps(n)
        ts, sig = consistency_tables(pcm, n)
        exact("timesteps", sched.timesteps, ts)
        exact("sigmas_", sched.sigmas_, sig)
    sched.set_timesteps(sigmas=[0.3, 0.2, 0.1])  # as the original: only the count is used
    exact("sigmas from a count", sched.sigmas_, consistency_tables(pcm, 3)[1])


# --- the pipeline's loop, call for call ---------------------------------------------------------------------------
class DiT(torch.nn.Module):
    """v(x, t, cond, guidance): per-sample condition rows; t in [0, 1]; optionally a guidance embedding."""

    def __init__(self, guidance_embed=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 8) * 0.4)
        self.guidance_embed = guidance_embed
        self.seen_guidance = []

    def forward(self, x, t, cond, guidance=None):
        assert x.shape[0] == cond.shape[0] == t.shape[0]
        self.seen_guidance.append(guidance)
        h = x @ self.w.to(x.dtype) + cond[:, None, :].to(x.dtype) + t.view(-1, 1, 1).to(x.dtype)
        if guidance is not None:
            h = h + 0.1 * guidance.view(-1, 1, 1).to(x.dtype)
        return torch.tanh(h)


def pipeline_loop(model, latents, cond, timesteps, sigmas, guidance_scale, callback=None, callback_steps=1):
    """Hunyuan3DDiTFlowMatchingPipeline.__call__'s denoising loop on a scheduler's (timesteps, sigmas), with the
    original scheduler's step: x ← (x_fp32 + (σ_next − σ) v) in v's dtype."""
    B = latents.shape[0]
    do_cfg = guidance_scale >= 0 and not (hasattr(model, "guidance_embed") and model.guidance_embed is True)
    guidance = None
    if hasattr(model, "guidance_embed") and model.guidance_embed is True:
        guidance = torch.tensor([guidance_scale] * B, device=latents.device, dtype=latents.dtype)
    for i, t in enumerate(timesteps):
        x_in = torch.cat([latents] * 2) if do_cfg else latents
        timestep = t.expand(x_in.shape[0]).to(latents.dtype) / N_TRAIN
        v = model(x_in, timestep, cond, guidance=guidance)
        if do_cfg:
            v_c, v_u = v.chunk(2)
            v = v_u + guidance_scale * (v_c - v_u)
        latents = (latents.to(torch.float32) + (sigmas[i + 1] - sigmas[i]) * v).to(v.dtype)
        if callback is not None and i % callback_steps == 0:
            callback(i, t, latents)
    return latents


@pytest.mark.parametrize("dtype", list(DTYPES) + ["fp64"])
@pytest.mark.parametrize("which", ["scheduler", "consistency"])
def test_schedulers_in_the_pipeline_loop(which, dtype):
    """Our scheduler driven by the pipeline's loop, against the same loop on the original tables and step."""
    dtype = torch.float64 if dtype == "fp64" else DTYPES[dtype]
    model = DiT().to(DEVICE)
    latents = torch.randn(3, 5, 8, device=DEVICE).to(dtype)
    cond = torch.cat([torch.randn(3, 8, device=DEVICE), torch.zeros(3, 8, device=DEVICE)])
    steps = 6
    if which == "scheduler":
        sched = FlowMatchEulerDiscreteScheduler(shift=2.0)
        sched.set_timesteps(sigmas=np.linspace(0, 1, steps), device=DEVICE)  # retrieve_timesteps(sigmas=...)
        ts, sig = flow_tables(2.0, sigmas=np.linspace(0, 1, steps))
    else:
        sched = ConsistencyFlowMatchEulerDiscreteScheduler(pcm_timesteps=20)
        sched.set_timesteps(sigmas=np.linspace(0, 1, steps), device=DEVICE)
        ts, sig = consistency_tables(20, steps)
    x, x0s = latents, []
    for t in sched.timesteps:
        v = model(torch.cat([x] * 2), t.expand(6).to(dtype) / N_TRAIN, cond)
        v_c, v_u = v.chunk(2)
        out = sched.step(v_u + 4.0 * (v_c - v_u), t, x)
        assert out.prev_sample.dtype == dtype
        x = out.prev_sample
        if which == "consistency":
            x0s.append(out.pred_original_sample)
    ref = pipeline_loop(model, latents, cond, ts.to(DEVICE), sig.to(DEVICE), 4.0)
    tol = {torch.float64: 0.0, torch.float32: 1e-6}.get(dtype, 2e-2)
    assert rel_rms(x, ref) <= tol, (rel_rms(x, ref), tol)
    if which == "consistency":  # pred_original_sample = (x_fp32 + (1 − σ) v) in v's dtype, at the last step
        assert x0s[-1].dtype == dtype and torch.isfinite(x0s[-1].double()).all()
    with pytest.raises(ValueError, match="step called"):
        sched.step(v_u, sched.timesteps[-1], x)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_guidance_embed_model_turns_cfg_off_and_gets_the_scale(dtype):
    dtype = DTYPES[dtype]
    model = DiT(guidance_embed=True).to(DEVICE)
    latents = torch.randn(2, 5, 8, device=DEVICE).to(dtype)
    cond = torch.randn(2, 8, device=DEVICE)  # no [cond; uncond]: encode_cond is called without CFG
    out = FlowMatchingSampler(shift=1.5, fix_final_step=False).sample(model, latents, cond, num_inference_steps=5,
                                                                      guidance_scale=6.0, enable_pbar=False)
    g = model.seen_guidance[-1]
    assert g.dtype == dtype and g.shape == (2,) and (g == 6.0).all()
    model.seen_guidance.clear()
    ts, sig = flow_tables(1.5, sigmas=np.linspace(0, 1, 5))
    ref = pipeline_loop(model, latents, cond, ts.to(DEVICE), sig.to(DEVICE), 6.0)
    assert rel_rms(out, ref) <= (1e-6 if dtype == torch.float32 else 2e-2)


def test_sampler_sigmas_timesteps_and_callback_as_the_pipeline():
    model = DiT().to(DEVICE)
    latents = torch.randn(2, 5, 8, device=DEVICE)
    cond = torch.cat([torch.randn(2, 8, device=DEVICE), torch.zeros(2, 8, device=DEVICE)])
    custom = torch.rand(6, dtype=torch.float64).sort().values.numpy()
    ts, sig = flow_tables(2.0, sigmas=custom)
    seen, want = [], []
    out = FlowMatchingSampler(shift=2.0).sample(
        model, latents, cond, sigmas=custom, guidance_scale=3.0, enable_pbar=False, callback_steps=2,
        callback=lambda i, t, outputs: seen.append((i, t.clone(), outputs.prev_sample.clone())))
    ref = pipeline_loop(model, latents, cond, ts.to(DEVICE), sig.to(DEVICE), 3.0, callback_steps=2,
                        callback=lambda i, t, x: want.append((i, t.clone(), x.clone())))
    assert rel_rms(out, ref) <= 1e-6
    assert [s[0] for s in seen] == [w[0] for w in want] == [0, 2, 4]
    for (_, t, x), (_, t_ref, x_ref) in zip(seen, want):
        assert t.dtype == torch.float32 and t.item() == t_ref.item()
        assert rel_rms(x, x_ref) <= 1e-6
    # timesteps= in the scheduler's units, used as given (1.0 appended)
    given = torch.tensor([0.0, 250.0, 700.0, 900.0])
    out = FlowMatchingSampler(shift=2.0).sample(model, latents, cond, timesteps=given, guidance_scale=3.0,
                                                enable_pbar=False)
    ref = pipeline_loop(model, latents, cond, given.to(DEVICE), torch.cat([given / N_TRAIN, torch.ones(1)]).to(DEVICE),
                        3.0)
    assert rel_rms(out, ref) <= 1e-6
    with pytest.raises(ValueError, match="timesteps or sigmas"):
        FlowMatchingSampler().sample(model, latents, cond, timesteps=given, sigmas=custom, enable_pbar=False)
    with pytest.raises(ValueError, match="callback_steps"):
        FlowMatchingSampler().sample(model, latents, cond, callback=print, callback_steps=0, enable_pbar=False)


# --- surface extractor --------------------------------------------------------------------------------------------
def test_extractor_none_for_no_surface_and_int_bounds_rejected():
    r = torch.linspace(-1, 1, 17)
    sphere = 0.6 - (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2).sqrt()
    grids = torch.stack([sphere, torch.full_like(sphere, -1.0), sphere])
    out = hunyuan3d.MCSurfaceExtractor()(grids, mc_level=0.0, bounds=1.01, octree_resolution=16)
    assert out[1] is None and out[0] is not None and out[2] is not None and len(out[0].mesh_f) > 0
    for bad in (1, True, np.int64(2), [1.0, 2.0], "1.0"):
        with pytest.raises(ValueError, match="bounds"):
            hunyuan3d.MCSurfaceExtractor()(grids[:1], mc_level=0.0, bounds=bad, octree_resolution=16)
