"""Hunyuan3D-2.1's and diffusers' flow-matching Euler loops, written plainly from their sources
(conventions: flowkernels/flow_kernels.md)."""
from __future__ import annotations

import numpy as np
import torch


def hunyuan_sample(model, latents, cond, steps, guidance_scale=5.0, shift=1.0, guidance=None):
    """Hunyuan3DDiTFlowMatchingPipeline's loop: sigmas linspace(0, 1, steps), shifted, 1.0 appended;
    [cond; uncond] CFG v = v_u + w (v_c − v_u); x ← (x_fp32 + (σ_next − σ) v) cast to v's dtype."""
    sigmas = np.linspace(0, 1, steps)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    sigmas = torch.from_numpy(sigmas).to(torch.float32)
    timesteps = sigmas * 1000
    sigmas = torch.cat([sigmas, torch.ones(1)])
    for i, t in enumerate(timesteps):
        cfg = guidance_scale >= 0
        x_in = torch.cat([latents] * 2) if cfg else latents
        timestep = t.expand(x_in.shape[0]).to(latents.dtype) / 1000
        v = model(x_in, timestep.to(latents.device), cond, guidance=guidance)
        if cfg:
            v_c, v_u = v.chunk(2)
            v = v_u + guidance_scale * (v_c - v_u)
        latents = (latents.to(torch.float32) + (sigmas[i + 1] - sigmas[i]) * v).to(v.dtype)
    return latents


def diffusers_sigmas(num_inference_steps, shift=1.0, num_train_timesteps=1000, mu=None, time_shift_type="exponential",
                     shift_terminal=None, invert_sigmas=False):
    """FlowMatchEulerDiscreteScheduler(shift=...).set_timesteps(num_inference_steps[, mu]) → (timesteps, sigmas)."""
    train = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1] / num_train_timesteps
    if mu is None:
        train = shift * train / (1 + (shift - 1) * train)
    t_max, t_min = float(train[0]) * num_train_timesteps, float(train[-1]) * num_train_timesteps
    sigmas = np.linspace(t_max, t_min, num_inference_steps) / num_train_timesteps
    if mu is None:
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    elif time_shift_type == "exponential":
        sigmas = np.exp(mu) / (np.exp(mu) + (1 / sigmas - 1))
    else:
        sigmas = mu / (mu + (1 / sigmas - 1))
    if shift_terminal:
        one_minus = 1 - sigmas
        sigmas = 1 - one_minus / (one_minus[-1] / (1 - shift_terminal))
    sigmas = torch.from_numpy(np.asarray(sigmas)).to(torch.float32)
    timesteps = sigmas * num_train_timesteps
    if invert_sigmas:
        sigmas = 1.0 - sigmas
        timesteps = sigmas * num_train_timesteps
        return timesteps, torch.cat([sigmas, torch.ones(1)])
    return timesteps, torch.cat([sigmas, torch.zeros(1)])


def diffusers_euler(model, latents, timesteps, sigmas):
    """The diffusers loop: x ← (x_fp32 + (σ_next − σ) v) cast to v's dtype, model called with t = σ·1000."""
    for i, t in enumerate(timesteps):
        v = model(latents, t.expand(latents.shape[0]))
        latents = (latents.to(torch.float32) + (sigmas[i + 1] - sigmas[i]) * v).to(v.dtype)
    return latents
