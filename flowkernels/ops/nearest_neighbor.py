"""Nearest neighbours between two batched point sets, both directions in one Triton launch.

Each program takes BLOCK_M query points of one direction (P -> Q or Q -> P) and walks the other set of the same
sample in tiles of BLOCK_N points, keeping the running minimum squared distance and its index in registers: no
[N, M] matrix is ever stored. Distances are sums of squared coordinate differences in fp32, not the
|p|^2 - 2 p.q + |q|^2 expansion that a matmul would use (its cancellation error, ~1e-7 * |p|^2, moves points
across F-score thresholds of 0.01 on shapes a unit away from the origin).

Ragged batches: points of all samples are concatenated; `offsets` [B + 1] gives each sample's rows. A block of
queries may straddle samples: it walks the union of its rows' target ranges and masks every pair whose target
lies outside the query's own sample.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _plan

# GPU: 32 x 32 fp32 distances per tile, 8 per thread at 4 warps. Larger tiles need 150-250 registers per thread
# (the compile check shows it), 64 x 64 spills.
BLOCK_M, BLOCK_N = 32, 32
MAX_POINTS = 2**30 - 2 * max(BLOCK_M, 128)  # int32 indices inside the kernel, incl. the z row's 2 n + row
BLOCK_INTERPRET = 128             # the interpreter pays per tile: bigger tiles run faster on CPU
_alloc = torch.empty              # tests swap in a NaN-filled allocator: every output element must be written


@triton.jit
def _nearest_block(src_ptr, n_src, src_sample_ptr, dst_ptr, n_dst, dst_offsets_ptr, dist_ptr, index_ptr, block,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One block of `src` queries against their samples' `dst` points. Points are SoA: x[n], y[n], z[n].

    Point indices are int32 (the host checks both sets hold fewer than 2^30 points, so 2 n + row fits): int64 index tiles would
    double the registers the [BLOCK_M, BLOCK_N] tile needs."""
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_src
    sample = tl.load(src_sample_ptr + rows, mask=valid, other=0)
    lo_row = tl.load(dst_offsets_ptr + sample, mask=valid, other=0).to(tl.int32)
    hi_row = tl.load(dst_offsets_ptr + sample + 1, mask=valid, other=0).to(tl.int32)
    hi_row = tl.where(valid, hi_row, 0)
    lo_row = tl.where(valid, lo_row, hi_row)
    qx = tl.load(src_ptr + rows, mask=valid, other=0.0)
    qy = tl.load(src_ptr + n_src + rows, mask=valid, other=0.0)
    qz = tl.load(src_ptr + 2 * n_src + rows, mask=valid, other=0.0)
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    best_index = tl.full([BLOCK_M], -1, tl.int32)
    # The block's target span: the union of its rows' samples (one sample unless the block straddles two).
    span_lo = tl.min(tl.where(valid, lo_row, n_dst), axis=0)
    span_hi = tl.max(hi_row, axis=0)
    for start in range(span_lo, span_hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        in_span = cols < span_hi
        tx = tl.load(dst_ptr + cols, mask=in_span, other=0.0)
        ty = tl.load(dst_ptr + n_dst + cols, mask=in_span, other=0.0)
        tz = tl.load(dst_ptr + 2 * n_dst + cols, mask=in_span, other=0.0)
        dx = qx[:, None] - tx[None, :]
        dy = qy[:, None] - ty[None, :]
        dz = qz[:, None] - tz[None, :]
        d = dx * dx + dy * dy + dz * dz
        mine = (cols[None, :] >= lo_row[:, None]) & (cols[None, :] < hi_row[:, None])
        d = tl.where(mine, d, float("inf"))
        tile_best, tile_arg = tl.min(d, axis=1, return_indices=True, return_indices_tie_break_left=True)
        # strict <: on equal distances the earlier target (lower index) is kept, as a brute-force argmin does
        better = tile_best < best
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, start + tile_arg, best_index)
    tl.store(dist_ptr + rows, best, mask=valid)
    tl.store(index_ptr + rows, best_index.to(tl.int64), mask=valid)


@triton.jit
def _nearest_both_kernel(p_ptr, n_p, p_sample_ptr, p_offsets_ptr, q_ptr, n_q, q_sample_ptr, q_offsets_ptr,
                         dist_pq_ptr, index_pq_ptr, dist_qp_ptr, index_qp_ptr, blocks_p,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    if pid < blocks_p:
        _nearest_block(p_ptr, n_p, p_sample_ptr, q_ptr, n_q, q_offsets_ptr, dist_pq_ptr, index_pq_ptr, pid,
                       BLOCK_M, BLOCK_N)
    else:
        _nearest_block(q_ptr, n_q, q_sample_ptr, p_ptr, n_p, p_offsets_ptr, dist_qp_ptr, index_qp_ptr,
                       pid - blocks_p, BLOCK_M, BLOCK_N)


def _sample_of_row(offsets: torch.Tensor, n_rows: int) -> torch.Tensor:
    counts = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=offsets.device), counts,
                                   output_size=n_rows)


NEAREST_KERNEL = _plan.KernelSpec(num_warps=4, programs_per_sm=6)


def nearest_both_triton(p: torch.Tensor, p_offsets: torch.Tensor, q: torch.Tensor, q_offsets: torch.Tensor):
    """(squared distance [Np] fp32, index [Nq-global] int64) from each p to its sample's q, and back.

    p [Np, 3], q [Nq, 3] (any float dtype, converted to fp32), offsets [B + 1] int64 on the same device, already
    validated (non-decreasing, ending at Np / Nq). A sample with no targets gives inf and index -1."""
    plan = nearest_both_plan(p, p_offsets, q, q_offsets)
    if p.shape[0] or q.shape[0]:
        plan.launch()
    out = plan.outputs
    return out["dist_pq"], out["index_pq"], out["dist_qp"], out["index_qp"]


def nearest_both_plan(p, p_offsets, q, q_offsets, target=None) -> _plan.LaunchPlan:
    """The launch of `nearest_both_triton` (outputs: dist_pq, index_pq, dist_qp, index_qp)."""
    target = target or _plan.target_of(p.device)
    n_p, n_q = p.shape[0], q.shape[0]
    for name, n in (("p", n_p), ("q", n_q)):
        if n >= MAX_POINTS:
            raise ValueError(f"{name} has {n} points; the GPU nearest-neighbour kernel takes fewer than {MAX_POINTS}")
    dev = p.device
    out = {}
    for name, n in (("pq", n_p), ("qp", n_q)):
        out["dist_" + name] = _alloc(n, device=dev, dtype=torch.float32)
        out["index_" + name] = _alloc(n, device=dev, dtype=torch.int64)
    # SoA copies in fp32: each coordinate of a tile is one contiguous load
    p_soa = p.to(torch.float32).t().contiguous()
    q_soa = q.to(torch.float32).t().contiguous()
    block_m = BLOCK_M if target.cuda else BLOCK_INTERPRET
    block_n = BLOCK_N if target.cuda else BLOCK_INTERPRET
    blocks_p, blocks_q = triton.cdiv(n_p, block_m), triton.cdiv(n_q, block_m)
    args = (p_soa, n_p, _sample_of_row(p_offsets, n_p), p_offsets, q_soa, n_q, _sample_of_row(q_offsets, n_q),
            q_offsets, out["dist_pq"], out["index_pq"], out["dist_qp"], out["index_qp"], blocks_p)
    return _plan.LaunchPlan(_nearest_both_kernel, (max(blocks_p + blocks_q, 1),), args,
                            dict(BLOCK_M=block_m, BLOCK_N=block_n), NEAREST_KERNEL, out)
