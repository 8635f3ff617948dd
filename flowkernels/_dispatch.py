"""Which implementation runs the flow ops on a given device: the one place in the package that decides it.

CUDA tensors run the Triton kernels; CPU tensors run the plain torch implementation. `backend=` on the public
functions overrides the choice for tests and benchmarks ("triton" on CPU tensors needs TRITON_INTERPRET=1).
"""
from __future__ import annotations

import os

import torch

BACKENDS = ("torch", "triton")


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (TRITON_INTERPRET=1), which accepts CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend, device: torch.device) -> str:
    """The implementation for tensors on `device`: `backend` when given (checked), else the device's default."""
    device = torch.device(device)
    if backend is None:
        return "triton" if device.type == "cuda" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {list(BACKENDS)} (or None for automatic)")
    if backend == "triton" and device.type != "cuda" and not interpreting():
        raise ValueError(
            "backend='triton' with CPU tensors needs TRITON_INTERPRET=1 set before flowkernels is imported; "
            "use backend='torch' (the default for CPU tensors) otherwise")
    return backend
