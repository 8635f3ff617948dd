"""Launch plans: one Triton launch as data (kernel, grid, arguments, constexprs, warps).

Each launcher builds its plan with one function and then runs `plan.launch()`. The compile check
(`flowkernels compile-check`) calls the same functions with CPU tensors and a GPU `Target`, and hands the plan to
Triton's own argument binder and compiler: the list of compiled specializations comes from the launchers
themselves and cannot drift from what a GPU run compiles.

Grid size. The row kernels stream memory: what they need from the grid is enough warps resident on every
multiprocessor to keep loads in flight, and no more programs than fit at once (each program then walks a longer
chunk, and a loss writes fewer partial sums). Each kernel declares how many programs of its warps it expects to be
resident per SM (`programs_per_sm`); the compile check fails if the compiled kernel's registers or shared memory
would not let that many fit, so the number stays true as kernels change.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
import triton

# the per-SM limits the occupancy check uses (sm_80 and sm_90 alike)
SM_REGISTERS = 65536
SM_THREADS = 2048
WARP = 32

TILE = 1024             # elements per tile of a program on the GPU
TILE_INTERPRET = 8192   # the interpreter pays per tile, not per element: bigger tiles run faster on CPU


@dataclass(frozen=True)
class Target:
    """Where a plan runs: a CUDA GPU with `sm_count` multiprocessors, or Triton's interpreter (CPU tensors)."""
    cuda: bool
    sm_count: int = 0

    @property
    def tile(self) -> int:
        return TILE if self.cuda else TILE_INTERPRET


INTERPRETER = Target(False, 0)
# what the compile check plans for: an H100/H200-sized part (the grid only changes runtime integers, which are
# not specialized, so the count does not change what compiles)
COMPILE_TARGET = Target(True, 132)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_of(device: torch.device) -> Target:
    if device.type != "cuda":
        return INTERPRETER
    return Target(True, _sm_count(device.index if device.index is not None else torch.cuda.current_device()))


@dataclass
class KernelSpec:
    """How a kernel is launched: its warps and the programs per SM its grid is sized for."""
    num_warps: int
    programs_per_sm: int

    @property
    def register_budget(self) -> int:
        """The most registers per thread that still lets `programs_per_sm` programs be resident."""
        return min(255, SM_REGISTERS // (self.programs_per_sm * self.num_warps * WARP) // 8 * 8)

    def __post_init__(self):
        assert self.programs_per_sm * self.num_warps * WARP <= SM_THREADS


@dataclass
class LaunchPlan:
    kernel: Any                      # a triton.JITFunction
    grid: tuple
    args: tuple                      # runtime arguments, in the kernel's order
    constexprs: dict                 # compile-time arguments by name
    spec: KernelSpec
    outputs: dict = field(default_factory=dict)  # buffers the launcher reads back (partial sums, ...)

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    def launch(self):
        self.kernel[self.grid](*self.args, **self.constexprs, num_warps=self.spec.num_warps)
        return self


def row_grid(B: int, M: int, target: Target, spec: KernelSpec) -> tuple[int, int, int]:
    """(chunks per sample, elements per chunk, tile) for a grid of (B, chunks) programs.

    Enough programs to fill every SM with `spec.programs_per_sm` resident programs (one wave), each walking its
    chunk in tiles; never more chunks than a sample has tiles. On the interpreter: two chunks (still exercises
    the multi-chunk paths)."""
    tile = target.tile
    want = spec.programs_per_sm * target.sm_count if target.cuda else 2
    chunks = max(1, min(triton.cdiv(M, tile), triton.cdiv(want, max(B, 1)), 65535))
    span = triton.cdiv(triton.cdiv(M, chunks), tile) * tile
    chunks = max(1, triton.cdiv(M, span))
    return chunks, span, tile


def pow2_alignment(*values: int, cap: int = 16) -> int:
    """The largest power of two (at most `cap`) dividing every value: a divisibility hint that is always true.

    Triton specializes integer arguments only as 'divisible by 16' or not, so a row length of 8 floats (TRELLIS's
    sparse latents) or 4104 gets no 128-bit accesses without this; the kernels state it with tl.multiple_of."""
    a = cap
    for v in values:
        v = abs(int(v))
        if v:
            a = min(a, v & -v)
    return a
