"""Shared assertion helpers (relative-RMS closeness and the 2x rule of flowkernels/flow_kernels.md)."""
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def assert_close(name, actual, expected, tol):
    err = rel_rms(actual, expected)
    assert err <= tol, f"{name}: relative RMS error {err:.3e} > {tol:.1e}"


def assert_2x_rule(name, actual, eager32, ref64, floor=2.0**-22):
    """The 2x rule: our error against float64 is at most twice the fp32 eager error (plus a float floor)."""
    err = rel_rms(actual, ref64)
    base = rel_rms(eager32, ref64)
    assert err <= 2 * base + floor, f"{name}: error {err:.3e} > 2 x eager fp32 error {base:.3e} (+{floor:.1e})"
