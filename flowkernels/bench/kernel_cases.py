"""Benchmarks of the seeded loss step and the TRELLIS.2 rescale step, with the launch facts they exist to show.

Each row's info records, besides the shape, how many kernels one step launches per implementation (CUDA: kernels
the profiler sees; CPU: torch compute ops plus Triton launches) and how many variants of the Triton kernels are
compiled once the timed calls are done (each timed call of the seeded step draws with a new seed, so a kernel that
specialized on its seed would show one variant per seed here).
"""
from __future__ import annotations

import itertools

import torch

from .._dispatch import interpreting
from .registry import Built, Case, register

_VIEWS = {"aten.empty", "aten.empty_strided", "aten.view", "aten.slice", "aten.detach", "aten.alias", "aten.expand",
          "aten.select", "aten.as_strided", "aten.lift_fresh", "aten._to_copy", "aten.t", "aten.reshape",
          "aten.unsqueeze", "aten.squeeze", "aten.permute", "aten._unsafe_view", "aten.split", "aten.chunk"}


def launches_per_call(fn, device: str) -> int:
    """Kernels one call of fn launches: the CUDA kernels the profiler records, or on CPU the torch compute ops
    plus Triton launches (a Triton launch counts once, whatever the interpreter does inside it)."""
    if device == "cuda":
        from torch.profiler import ProfilerActivity, profile
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and "memcpy" not in e.name.lower() and "memset" not in e.name.lower())
    from torch.utils._python_dispatch import TorchDispatchMode

    from ..ops import _plan

    class Count(TorchDispatchMode):
        n, paused = 0, False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not self.paused and str(func.overloadpacket) not in _VIEWS:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    original = _plan.LaunchPlan.launch
    mode = Count()

    def counted(plan):
        Count.n += 1
        mode.paused = True
        try:
            return original(plan)
        finally:
            mode.paused = False
    _plan.LaunchPlan.launch = counted
    try:
        with mode:
            fn()
    finally:
        _plan.LaunchPlan.launch = original
    return Count.n


def compiled_variants(*kernels):
    """Compiled variants held by the Triton kernels' caches (None under the interpreter, which compiles none)."""
    total = 0
    for k in kernels:
        caches = getattr(k, "device_caches", None)
        if caches is None:
            return None
        total += sum(len(entry[0]) for entry in caches.values())
    return total


# --- the seeded loss step: interpolate + loss + backward with in-kernel noise --------------------------------------
SEEDED_SIZES = {"cuda": {"hunyuan": (16, 4096, 64), "bandwidth": (64, 1 << 20)},
                "cpu": {"hunyuan_small": (4, 1024, 64)}}


def _seeded_loss_case(shape):
    def build(device):
        import flowkernels as fk
        from flowkernels.ops.flow_interpolate import _flow_interpolate_kernel
        from flowkernels.ops.flow_loss import _flow_loss_kernel, _scale_rows_kernel
        from flowkernels.reference import flow_matching as ref
        x1 = torch.randn(shape, device=device)
        t = torch.rand(shape[0], device=device)
        pred = torch.randn(shape, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        pred.requires_grad_(True)
        seeds = itertools.count(1000)

        def eager():  # the original loops draw the noise with torch, then run the loss in eager ops
            noise = torch.randn_like(x1)
            xt, ut = ref.sit_plan("linear", t, noise, x1)
            ref.mean_flat((pred.float() - ut) ** 2).mean().backward()

        def fused():  # a new seed every call, as a training loop draws them
            seed = next(seeds)
            fk.flow_interpolate(x1, t, seed=seed)
            fk.flow_matching_loss(pred, x1, t, seed=seed, reduction="mean").backward()
            info["compiled_variants"] = None if device != "cuda" else compiled_variants(
                _flow_interpolate_kernel, _flow_loss_kernel, _scale_rows_kernel)

        impls = {"eager": eager, "flowkernels": fused}
        info = {"shape": list(shape)}
        info["launches_per_step"] = {k: launches_per_call(f, device) for k, f in impls.items()}
        # read x1 (x_t) and pred, x1 (loss), write x_t and the gradient, read it and write it scaled: no noise bytes
        return Built(impls, x1.numel() * (4 * 3 + 4 * pred.element_size()), info=info)
    return build


for _device, _sizes in SEEDED_SIZES.items():
    for _name, _shape in _sizes.items():
        register(Case("loss_seeded", _name, _seeded_loss_case(_shape), devices=(_device,)))


# --- TRELLIS.2 guidance-rescale step on sparse latents --------------------------------------------------------------
RESCALE_SIZES = {"cuda": {"shape-slat-B4": (4, 20000, 60000, 32), "dense-B2": (2, 0, 0, 8 * 64 ** 3)},
                 "cpu": {"shape-slat-B2": (2, 2000, 6000, 32)}}


def _rescale_case(B, rows_lo, rows_hi, C, phi=0.5, strength=5.0, sigma_min=1e-5, t=0.7, dt=-0.05):
    def build(device):
        from flowkernels.ops.guided_step import _guided_step_kernel, _rescale_stats_kernel
        from flowkernels.sampling import guided_step, step_coefficients
        ragged = rows_hi > 0
        gen = torch.Generator().manual_seed(0)
        rows = torch.randint(rows_lo, rows_hi + 1, (B,), generator=gen) if ragged else torch.full((B,), 1)
        N = int(rows.sum())
        shape = (N, C) if ragged else (B, C)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)]).to(device) if ragged else None
        index = torch.repeat_interleave(torch.arange(B), rows).to(device) if ragged else None
        x = torch.randn(shape, device=device)
        pos, neg = torch.randn(shape, device=device), torch.randn(shape, device=device)
        x0_a, x0_b = 1 - sigma_min, -(sigma_min + (1 - sigma_min) * t)
        coef = torch.tensor(step_coefficients(dt, strength, 1 - strength, x0_a, x0_b), device=device)
        out = torch.empty_like(x)
        backend = "triton" if device == "cuda" or interpreting() else None  # None: the device's default (native)

        def per_sample_std(z):  # TRELLIS.2: population std per sample (over its rows when sparse)
            if not ragged:
                return z.std(dim=1, keepdim=True)
            n = rows.to(device).double()[:, None] * C
            s1 = torch.zeros(B, 1, device=device).index_add_(0, index, z.sum(1, keepdim=True)) / n
            s2 = torch.zeros(B, 1, device=device).index_add_(0, index, (z * z).sum(1, keepdim=True)) / n
            return (s2 - s1 ** 2).sqrt().float()[index]

        def eager():  # TRELLIS.2's CFG mixin with guidance_rescale, then the Euler update
            pred = strength * pos + (1 - strength) * neg
            x_0_pos = x0_a * x + x0_b * pos
            x_0_cfg = x0_a * x + x0_b * pred
            std_pos, std_cfg = per_sample_std(x_0_pos), per_sample_std(x_0_cfg)
            x_0 = phi * (x_0_cfg * (std_pos / std_cfg)) + (1 - phi) * x_0_cfg
            v = (x0_a * x - x_0) / -x0_b
            return x + dt * v

        def fused():
            guided_step(x, pos, neg, coef, out=out, offsets=offsets, rescale=phi, backend=backend)
            info["compiled_variants"] = None if device != "cuda" else compiled_variants(_guided_step_kernel,
                                                                                        _rescale_stats_kernel)
            return out

        impls = {"eager": eager, "flowkernels": fused}
        info = {"B": B, "rows": N if ragged else None, "channels": C}
        info["launches_per_step"] = {k: launches_per_call(f, device) for k, f in impls.items()}
        # two passes over x, pos, neg (statistics, then the step) and one write of the new state
        return Built(impls, x.numel() * 4 * 7, info=info)
    return build


for _device, _sizes in RESCALE_SIZES.items():
    for _name, _size in _sizes.items():
        register(Case("trellis2_rescale", _name, _rescale_case(*_size), devices=(_device,)))


# --- marching cubes in fp16 on CUDA at the sizes the GPU run times (1024^3 sphere is in the registry already) -----
def _register_mc_fp16():
    from .registry import MC_IMPLEMENTATIONS, _mc_case
    for n in (256, 512):
        register(Case("mc", f"sphere-{n}-fp16", _mc_case("sphere", n, torch.float16), baseline="flowkernels",
                      devices=("cuda",), implementations=MC_IMPLEMENTATIONS))
    for n in (256, 512, 1024):
        register(Case("mc", f"gyroid-{n}-fp16", _mc_case("gyroid", n, torch.float16), baseline="flowkernels",
                      devices=("cuda",), implementations=MC_IMPLEMENTATIONS))


_register_mc_fp16()
