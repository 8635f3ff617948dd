"""Launch helpers shared by the row-wise flow kernels: per-sample views, grid shape, ragged extents, seeds.

Which implementation runs (Triton or torch) is decided in `flowkernels._dispatch`, not here."""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

BLOCK = 1024          # elements per tile on the GPU
BLOCK_INTERPRET = 8192  # the interpreter pays per tile, not per element: bigger tiles run faster on CPU


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


def layout(x: torch.Tensor, offsets) -> tuple[int, int, bool]:
    """(samples, elements per sample (dense) or per row (ragged), ragged?) of a per-sample tensor."""
    # numel // rows rather than x[0].numel(): no view built on the per-step path
    per = x.numel() // x.shape[0] if x.shape[0] else 0
    if offsets is None:
        return x.shape[0], per, False
    return offsets.shape[0] - 1, per, True


def mean_sample_size(x: torch.Tensor, B: int, M: int, ragged: bool) -> int:
    """Elements per sample, on average for ragged batches (sizes the grid without reading the offsets)."""
    return triton.cdiv(x.numel(), max(B, 1)) if ragged else M


def sample_index(offsets: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The sample each row belongs to (torch path of ragged batches), without a host sync."""
    counts = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=offsets.device), counts,
                                   output_size=n_rows)


def seed_value(seed) -> int:
    """Seeds travel as CPU int64 tensors through the custom ops (no recompiles, no device sync)."""
    return int(seed.item()) if isinstance(seed, torch.Tensor) else int(seed)


def seeded_noise_torch(seed: int, shape, device) -> torch.Tensor:
    """The in-kernel noise stream as a tensor (for the torch path): the same Philox normals the Triton and native
    kernels draw for this seed, element by element, drawn on the CPU by the native extension."""
    from .native_cpu import philox_normals
    return philox_normals(seed, shape).to(device)


@triton.jit
def sample_extent(offsets_ptr, n_rows, row, chunk, M, span, n_chunks, RAGGED: tl.constexpr, ALIGN: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Where program (row, chunk) works, as (first element of the sample in a contiguous buffer, the sample's
    element count, the chunk's first element, the chunk's length), all int64.

    Dense: every sample has M elements. Ragged: sample `row` is rows offsets[row]:offsets[row + 1] of a [N, M]
    buffer (sparse latents); its chunk length is derived here, so the host never needs the row counts. Offsets
    are clamped to [0, n_rows] and made non-decreasing, so bad offsets on the device (which the host cannot check
    without a sync) give wrong sums, never out-of-bounds accesses. ALIGN (a power of two dividing M, from the
    host) is stated on the start and the count, so rows of 8 fp32 channels still get 128-bit accesses."""
    if RAGGED:
        r0 = tl.minimum(tl.maximum(tl.load(offsets_ptr + row), 0), n_rows)
        r1 = tl.minimum(tl.maximum(tl.load(offsets_ptr + row + 1), r0), n_rows)
        base = r0 * M
        n = (r1 - r0) * M
        chunk_len = tl.cdiv(tl.cdiv(n, n_chunks), BLOCK) * BLOCK
    else:
        zero = tl.full([], 0, tl.int64)
        base = row * M + zero
        n = M + zero
        chunk_len = span + zero
    return tl.multiple_of(base, ALIGN), tl.multiple_of(n, ALIGN), chunk * chunk_len, chunk_len


@triton.jit
def quad_aligned_span(base, n_el, chunk, chunk_len, n_chunks, ALIGN: tl.constexpr):
    """[lo, hi) of chunk `chunk` of a sample (from `sample_extent`), in the sample's element indices, moved back by
    base % 4 so that each tile starts at a flat index divisible by 4: the noise stream draws four normals per
    Philox counter (see philox_normal.py). lo may be negative (those lanes are masked); the last chunk runs to the
    end of the sample, so the chunks still cover it exactly once. When ALIGN (a power of two dividing base) is a
    multiple of 4 the shift is 0, stated at compile time so the tiles keep their 16-byte alignment."""
    if ALIGN % 4 == 0:
        lo = chunk * chunk_len
    else:
        lo = chunk * chunk_len - base % 4
    hi = tl.minimum(tl.where(chunk == n_chunks - 1, n_el, lo + chunk_len), n_el)
    return lo, hi


@triton.jit
def tile_offsets(start, ROWS: tl.constexpr, WIDTH: tl.constexpr):
    """[ROWS, WIDTH] element offsets start + WIDTH r + j of one tile. Seeded tiles are WIDTH 4, a row holding the
    four elements of one Philox counter; tiles reading a noise tensor are WIDTH 8, so the compiler sees 8
    contiguous elements per row and 16-bit rows still fill 128-bit loads."""
    return start + (tl.arange(0, ROWS) * WIDTH).to(tl.int64)[:, None] + tl.arange(0, WIDTH).to(tl.int64)[None, :]


def tile_width(has_noise: bool) -> int:
    """The kernels' WIDTH constexpr (see tile_offsets)."""
    return 8 if has_noise else 4
