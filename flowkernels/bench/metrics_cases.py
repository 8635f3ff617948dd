"""Benchmark cases of `flowkernels bench --ops metrics`: the both-way nearest-neighbour search under every
reconstruction metric (Chamfer, F-score, normal consistency, Hausdorff all read its result).

Every implementation computes, for each sample, the squared distance and index of the nearest neighbour of every
pred point in gt and of every gt point in pred, on the same random points:
- flowkernels: the Triton kernel on CUDA (one launch, both directions), the KD-tree (pykdtree) on the CPU;
- scipy-ckdtree: scipy's cKDTree built on each set, queried with all cores (CPU);
- torch-cdist-chunked: torch.cdist on row chunks (its matmul expansion for large sets), row and column minima;
- pytorch3d-style: PyTorch3D's fallback brute force: the full [B, N, M] matrix of squared differences.
"""
from __future__ import annotations

import torch

from .registry import Built, Case, register

# (B, points per set); brute force only where its [B, N, M] fp32 matrix and temporaries fit
METRICS_SIZES = {"cuda": {"B8-20k": (8, 20_000), "B1-100k": (1, 100_000), "B32-2k": (32, 2_000)},
                 "cpu": {"B1-20k": (1, 20_000), "B4-2k": (4, 2_000)}}
BRUTE_FORCE_LIMIT = {"cuda": 8 * 20_000 * 20_000, "cpu": 4 * 2_000 * 2_000}   # N * M * B pairs


def torch_cdist_chunked(p: torch.Tensor, q: torch.Tensor, chunk: int = 4096):
    """Both directions from one pass over row chunks of the distance matrix (never the whole matrix)."""
    B, N, M = p.shape[0], p.shape[1], q.shape[1]
    d_pq = torch.empty(B, N, device=p.device)
    i_pq = torch.empty(B, N, device=p.device, dtype=torch.long)
    d_qp = torch.full((B, M), float("inf"), device=p.device)
    i_qp = torch.zeros(B, M, device=p.device, dtype=torch.long)
    for s in range(0, N, chunk):
        d = torch.cdist(p[:, s:s + chunk], q).square_()
        d_pq[:, s:s + chunk], i_pq[:, s:s + chunk] = d.min(dim=2)
        col, arg = d.min(dim=1)
        better = col < d_qp
        d_qp = torch.where(better, col, d_qp)
        i_qp = torch.where(better, arg + s, i_qp)
    return d_pq, i_pq, d_qp, i_qp


def pytorch3d_style(p: torch.Tensor, q: torch.Tensor):
    d = (p[:, :, None, :] - q[:, None, :, :]).square().sum(-1)
    a, ia = d.min(dim=2)
    b, ib = d.min(dim=1)
    return a, ia, b, ib


def _metrics_case(B: int, n: int):
    def build(device):
        from flowkernels.metrics import nearest
        gen = torch.Generator().manual_seed(0)
        p = torch.rand(B, n, 3, generator=gen).to(device)
        q = torch.rand(B, n, 3, generator=gen).to(device)
        impls, skipped = {"flowkernels": lambda: nearest(p, q)}, {}
        if device == "cpu":
            try:
                import scipy.spatial  # noqa: F401
                impls["scipy-ckdtree"] = lambda: nearest(p, q, backend="scipy")
            except ImportError:
                skipped["scipy-ckdtree"] = "scipy is not installed"
        impls["torch-cdist-chunked"] = lambda: torch_cdist_chunked(p, q)
        if B * n * n <= BRUTE_FORCE_LIMIT[device]:
            impls["pytorch3d-style"] = lambda: pytorch3d_style(p, q)
        else:
            skipped["pytorch3d-style"] = f"its [B, N, M] matrix needs {B * n * n * 4 / 2**30:.0f} GiB"
        return Built(impls, skipped=skipped, info={"B": B, "points": n})
    return build


IMPLEMENTATIONS = ("flowkernels", "scipy-ckdtree", "torch-cdist-chunked", "pytorch3d-style")
for _device, _sizes in METRICS_SIZES.items():
    for _name, (_B, _n) in _sizes.items():
        register(Case("metrics", _name, _metrics_case(_B, _n), devices=(_device,), implementations=IMPLEMENTATIONS,
                      baseline="scipy-ckdtree" if _device == "cpu" else "torch-cdist-chunked"))
