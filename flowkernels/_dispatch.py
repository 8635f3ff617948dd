"""Which implementation runs the flow ops on a given device: the one place in the package that decides it.

CUDA tensors run the Triton kernels; CPU tensors run the native C++ kernels of the extension (csrc/flow/); other
devices, or a build without the extension, run the plain torch implementation (also the reference). `backend=` on
the public functions overrides the choice for tests and benchmarks ("triton" on CPU tensors needs
TRITON_INTERPRET=1).
"""
from __future__ import annotations

import os

import torch

BACKENDS = ("native", "torch", "triton")


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (TRITON_INTERPRET=1), which accepts CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend, device: torch.device) -> str:
    """The implementation for tensors on `device`: `backend` when given (checked), else the device's default."""
    if backend is None:  # the per-step call: a torch.device already, no new one built
        kind = device.type if isinstance(device, torch.device) else torch.device(device).type
        if kind == "cuda":
            return "triton"
        return "native" if kind == "cpu" and (_native_cpu or _native_cpu_available()) else "torch"
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {list(BACKENDS)} (or None for automatic)")
    if backend == "native" and device.type != "cpu":
        raise ValueError(f"backend='native' runs on CPU tensors only (got {device.type} tensors)")
    if backend == "triton" and device.type != "cuda" and not interpreting():
        raise ValueError(
            "backend='triton' with CPU tensors needs TRITON_INTERPRET=1 set before flowkernels is imported; "
            "use backend='native' (the default for CPU tensors) or 'torch' otherwise")
    return backend


_native_cpu = None


def _native_cpu_available() -> bool:
    """Whether the extension with the CPU flow kernels loads (checked once)."""
    global _native_cpu
    if _native_cpu is None:
        from . import _native
        try:
            _native_cpu = hasattr(_native.load(), "flow_loss_cpu")
        except RuntimeError:
            _native_cpu = False
    return _native_cpu
