"""Launch helpers shared by the row-wise flow kernels: backend choice, per-sample views, grid shape."""
from __future__ import annotations

import functools
import os

import torch
import triton

BLOCK = 1024          # elements per tile on the GPU
BLOCK_INTERPRET = 8192  # the interpreter pays per tile, not per element: bigger tiles run faster on CPU


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend, device: torch.device) -> str:
    if backend is None:
        return "triton" if device.type == "cuda" else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"backend={backend!r} is not one of ['torch', 'triton'] (or None for automatic)")
    if backend == "triton" and device.type != "cuda" and not interpreting():
        raise ValueError(
            "backend='triton' with CPU tensors needs TRITON_INTERPRET=1 set before flowkernels is imported; "
            "use backend='torch' (the default for CPU tensors) otherwise")
    return backend


def rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """View x as [B, M] without a copy when each sample is contiguous (batch stride may be anything);
    returns the tensor and its batch stride in elements. Other layouts are made contiguous."""
    B = x.shape[0]
    inner = x[0] if B > 0 else x
    if B > 0 and not inner.is_contiguous():
        x = x.contiguous()
    return x, (x.stride(0) if x.dim() > 0 else 1)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def grid_for(B: int, M: int, device: torch.device) -> tuple[int, int, int]:
    """(chunks per sample, elements per chunk, tile) for a grid of (B, chunks) programs.

    Each program walks its chunk in tiles, so the grid stays a few waves deep whatever M is, and a
    loss kernel writes only `chunks` partial sums per sample."""
    tile = BLOCK_INTERPRET if device.type != "cuda" else BLOCK
    target = 4 * _sm_count(device.index or 0) if device.type == "cuda" else 2
    chunks = max(1, min(triton.cdiv(M, tile), triton.cdiv(target, max(B, 1)), 65535))
    span = triton.cdiv(triton.cdiv(M, chunks), tile) * tile
    chunks = max(1, triton.cdiv(M, span))
    return chunks, span, tile


def seed_value(seed) -> int:
    """Seeds travel as CPU int64 tensors through the custom ops (no recompiles, no device sync)."""
    return int(seed.item()) if isinstance(seed, torch.Tensor) else int(seed)


def seeded_noise_torch(seed: int, shape, device) -> torch.Tensor:
    """The torch path's counterpart of the in-kernel Philox noise (a different stream, same role)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
