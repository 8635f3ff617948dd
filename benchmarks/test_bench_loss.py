"""Full loss step (interpolate, loss, backward) for the eager SiT code, torch.compile of it, and flowkernels.

Run: python -m pytest benchmarks -q --benchmark-json benchmarks/results/<date>-<device>-<commit>.json
Sizes follow issue #2: Hunyuan3D (B=16, 4096x64, bf16 output), TRELLIS SS (B=32, 8x16^3), bandwidth (>=256 MB).
On a CPU only the small sizes run (the GPU sizes are marked, and measured only on a real GPU).
"""
import pytest
import torch

import flowkernels as fk
from flowkernels.reference import flow_matching as ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = {"hunyuan": (16, 4096, 64), "trellis_ss": (32, 8, 16, 16, 16), "bandwidth": (64, 1024 * 1024)}
if DEVICE == "cpu":
    SIZES = {"hunyuan_small": (4, 1024, 64), "trellis_ss": (8, 8, 16, 16, 16)}


def inputs(shape):
    x1 = torch.randn(shape, device=DEVICE)
    t = torch.rand(shape[0], device=DEVICE)
    noise = torch.randn_like(x1)
    pred = torch.randn(shape, device=DEVICE, dtype=torch.bfloat16 if DEVICE == "cuda" else torch.float32)
    return pred.requires_grad_(True), x1, noise, t


def eager_step(pred, x1, noise, t):
    xt, ut = ref.sit_plan("linear", t, noise, x1)
    ref.mean_flat((pred.float() - ut) ** 2).mean().backward()


def fused_step(pred, x1, noise, t):
    fk.flow_interpolate(x1, t, noise)
    fk.flow_matching_loss(pred, x1, t, noise, reduction="mean").backward()


def run(benchmark, fn, shape):
    args = inputs(shape)

    def once():
        fn(*args)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    # bytes the step must move at least: read x1, noise (for x_t) and pred/x1/noise (loss), write x_t and grad
    elems = args[1].numel()
    min_bytes = elems * (4 * 5 + 2 * args[0].element_size())
    benchmark.extra_info.update(device=DEVICE, shape=list(shape), min_bytes=min_bytes)
    benchmark(once)
    median = benchmark.stats.stats.median
    benchmark.extra_info["achieved_GBps"] = min_bytes / median / 1e9  # over the minimum bytes, not bytes moved


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", ["eager", "compiled", "flowkernels"])
def test_loss_step(benchmark, impl, size):
    benchmark.group = f"loss-step-{size}"
    if impl == "compiled":
        fn = torch.compile(eager_step)
    else:
        fn = eager_step if impl == "eager" else fused_step
    run(benchmark, fn, SIZES[size])
