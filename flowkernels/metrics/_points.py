"""Point-set inputs (torch or numpy; [N, 3], [B, N, 3], ragged with offsets, or a list) and the nearest-neighbour
search behind every metric: the Triton kernel on CUDA, a KD-tree on the CPU, or a chunked brute force."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

POINT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BACKENDS = ("triton", "kdtree", "pykdtree", "scipy", "torch")


@dataclass
class PointSet:
    """Points of B samples concatenated: points [N, 3], offsets [B + 1] (int64, on the points' device)."""
    points: torch.Tensor
    offsets: torch.Tensor
    normals: Optional[torch.Tensor]
    counts: list          # points per sample, on the host (validation already needed them)
    batched: bool         # False for a single [N, 3] set: results drop the batch dimension
    as_numpy: bool        # the caller gave numpy: results come back as numpy


def _tensor(name, x, device=None):
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number):
            raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, a numpy array or a list of them, got {type(x).__name__}")
    if device is not None:
        x = x.to(device)
    return x


def as_point_set(name: str, points, offsets=None, normals=None, device=None) -> PointSet:
    """Validate one argument's point sets; every error names `name`."""
    as_numpy = isinstance(points, np.ndarray) or (isinstance(points, (list, tuple)) and len(points) > 0
                                                 and isinstance(points[0], np.ndarray))
    if isinstance(points, (list, tuple)):
        if offsets is not None:
            raise ValueError(f"{name}: give either a list of point sets or offsets, not both")
        if len(points) == 0:
            raise ValueError(f"{name}: the list of point sets is empty")
        parts = [_tensor(f"{name}[{i}]", p, device) for i, p in enumerate(points)]
        for i, p in enumerate(parts):
            if p.dim() != 2 or p.shape[-1] != 3:
                raise ValueError(f"{name}[{i}] must have shape [N, 3], got {tuple(p.shape)}")
        counts = [p.shape[0] for p in parts]
        points = torch.cat(parts)
        if normals is not None:
            if not isinstance(normals, (list, tuple)) or len(normals) != len(parts):
                raise ValueError(f"{name}_normals must be a list of {len(parts)} arrays like {name}")
            normals = torch.cat([_tensor(f"{name}_normals[{i}]", n, points.device) for i, n in enumerate(normals)])
            if normals.shape != points.shape:
                raise ValueError(f"{name}_normals hold {tuple(normals.shape)} values but {name} {tuple(points.shape)}")
        offsets = torch.tensor([0] + counts, device=points.device).cumsum(0)
        batched = True
    else:
        points = _tensor(name, points, device)
        if points.dim() not in (2, 3) or points.shape[-1] != 3:
            raise ValueError(f"{name} must have shape [N, 3] or [B, N, 3], got {tuple(points.shape)}")
        if normals is not None:
            normals = _tensor(f"{name}_normals", normals, points.device)
            if normals.shape != points.shape:
                raise ValueError(f"{name}_normals has shape {tuple(normals.shape)} but {name} has shape "
                                 f"{tuple(points.shape)}")
            normals = normals.reshape(-1, 3)
        if points.dim() == 3:
            if offsets is not None:
                raise ValueError(f"{name}_offsets is for ragged [N, 3] points; {name} is dense [B, N, 3]")
            B, N = points.shape[:2]
            counts = [N] * B
            points = points.reshape(-1, 3)
            offsets = torch.arange(B + 1, device=points.device) * N
            batched = True
        elif offsets is None:
            counts = [points.shape[0]]
            offsets = torch.tensor([0, points.shape[0]], device=points.device)
            batched = False
        else:
            offsets = _tensor(f"{name}_offsets", offsets, points.device)
            if offsets.dtype not in (torch.int32, torch.int64) or offsets.dim() != 1 or offsets.numel() < 2:
                raise ValueError(f"{name}_offsets must be a 1-D integer tensor [B + 1], got "
                                 f"{offsets.dtype} {tuple(offsets.shape)}")
            offsets = offsets.long()
            host = offsets.cpu()
            counts = (host[1:] - host[:-1]).tolist()
            if host[0] != 0 or host[-1] != points.shape[0] or min(counts) < 0:
                raise ValueError(f"{name}_offsets must start at 0, never decrease and end at {name}.shape[0]="
                                 f"{points.shape[0]}; got {host.tolist()[:8]}{'...' if host.numel() > 8 else ''}")
            batched = True
    if points.dtype not in POINT_DTYPES:
        raise TypeError(f"{name} has dtype {points.dtype}; expected a floating dtype")
    if normals is not None and normals.dtype not in POINT_DTYPES:
        raise TypeError(f"{name}_normals has dtype {normals.dtype}; expected a floating dtype")
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name} holds non-finite coordinates (NaN or inf)")
    if normals is not None and not bool(torch.isfinite(normals).all()):
        raise ValueError(f"{name}_normals holds non-finite values (NaN or inf)")
    empty = [i for i, c in enumerate(counts) if c == 0]
    if empty:
        raise ValueError(f"{name}: sample {empty[0]} has no points (every metric needs both sets non-empty)")
    return PointSet(points, offsets.long(), normals, counts, batched, as_numpy)


def check_pair(pred: PointSet, gt: PointSet):
    if len(pred.counts) != len(gt.counts):
        raise ValueError(f"pred has {len(pred.counts)} sample(s) but gt has {len(gt.counts)}")
    if pred.points.device != gt.points.device:
        raise ValueError(f"pred is on {pred.points.device} but gt is on {gt.points.device}")


@dataclass
class Matching:
    """Nearest neighbours both ways: squared distances (float64) and global indices into the other set."""
    sq_pred: torch.Tensor    # [N_pred]: each pred point to its sample's nearest gt point
    index_pred: torch.Tensor
    sq_gt: torch.Tensor      # [N_gt]: each gt point to its sample's nearest pred point
    index_gt: torch.Tensor


def resolve_backend(backend, device: torch.device) -> str:
    from .._dispatch import interpreting
    if backend is None:
        return "triton" if device.type == "cuda" else "kdtree"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {list(BACKENDS)} (or None for automatic)")
    if backend == "triton" and device.type != "cuda" and not interpreting():
        raise ValueError("backend='triton' with CPU tensors needs TRITON_INTERPRET=1 set before flowkernels is "
                         "imported; use backend='kdtree' (the default on the CPU)")
    return backend


def match(pred: PointSet, gt: PointSet, backend=None) -> Matching:
    backend = resolve_backend(backend, pred.points.device)
    if backend == "triton":
        from ..ops.nearest_neighbor import nearest_both_triton
        sp, ip, sg, ig = nearest_both_triton(pred.points, pred.offsets, gt.points, gt.offsets)
    elif backend == "torch":
        sp, ip = _nearest_torch(pred, gt)
        sg, ig = _nearest_torch(gt, pred)
    else:
        sp, ip = _nearest_kdtree(pred, gt, backend)
        sg, ig = _nearest_kdtree(gt, pred, backend)
    return Matching(sp.double(), ip, sg.double(), ig)


def _nearest_torch(src: PointSet, dst: PointSet, budget: int = 1 << 22):
    """Brute force by differences (no matmul expansion), in chunks of at most `budget` pairs."""
    dist = torch.empty(src.points.shape[0], dtype=torch.float32, device=src.points.device)
    index = torch.empty(src.points.shape[0], dtype=torch.int64, device=src.points.device)
    s_off, d_off = src.offsets.tolist(), dst.offsets.tolist()
    p, q = src.points.float(), dst.points.float()
    for b in range(len(src.counts)):
        targets = q[d_off[b]:d_off[b + 1]]
        step = max(1, budget // max(targets.shape[0], 1))
        for start in range(s_off[b], s_off[b + 1], step):
            stop = min(start + step, s_off[b + 1])
            d = (p[start:stop, None, :] - targets[None, :, :]).square().sum(-1)
            dist[start:stop], j = d.min(dim=1)
            index[start:stop] = j + d_off[b]
    return dist, index


# Below this many queries per tree scipy's cKDTree is used even when pykdtree is installed: pykdtree's OpenMP
# fork/join costs a fixed few ms per call (tens of ms when the cores are oversubscribed), which only large queries
# amortise (measurements in metrics.md).
PYKDTREE_MIN_QUERIES = 16384


def kdtree_library(choice: str = "kdtree", n_queries: int = PYKDTREE_MIN_QUERIES) -> str:
    """The KD-tree library for `backend`: "kdtree" takes pykdtree for large queries when it is installed."""
    if choice == "pykdtree" or (choice == "kdtree" and n_queries >= PYKDTREE_MIN_QUERIES):
        try:
            import pykdtree.kdtree  # noqa: F401
            return "pykdtree"
        except ImportError:
            if choice == "pykdtree":
                raise RuntimeError("backend='pykdtree' needs pykdtree: pip install pykdtree") from None
    try:
        import scipy.spatial  # noqa: F401
    except ImportError:
        if choice == "kdtree":   # small queries on a machine with pykdtree only
            try:
                import pykdtree.kdtree  # noqa: F401
                return "pykdtree"
            except ImportError:
                pass
        raise RuntimeError("CPU metrics need a KD-tree: pip install pykdtree scipy, or pass backend='torch'") from None
    return "scipy"


def _nearest_kdtree(src: PointSet, dst: PointSet, choice: str):
    library = kdtree_library(choice, max(src.counts))
    # the trees work in the points' own precision: fp32 stays fp32 (as OccNet's float32 clouds), fp64 stays fp64
    dtype = np.float64 if src.points.dtype == torch.float64 or dst.points.dtype == torch.float64 else np.float32
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32   # fp16 / bf16 are widened exactly
    p = src.points.detach().to("cpu", torch_dtype).numpy()
    q = dst.points.detach().to("cpu", torch_dtype).numpy()
    dist = np.empty(p.shape[0], dtype=np.float64)
    index = np.empty(p.shape[0], dtype=np.int64)
    s_off, d_off = src.offsets.tolist(), dst.offsets.tolist()
    for b in range(len(src.counts)):
        queries, targets = p[s_off[b]:s_off[b + 1]], q[d_off[b]:d_off[b + 1]]
        if library == "pykdtree":
            from pykdtree.kdtree import KDTree
            d2, j = KDTree(targets).query(queries, k=1, sqr_dists=True)
        else:
            from scipy.spatial import cKDTree
            # threads pay for themselves only on larger queries (2k points: 1 worker 2.7 ms, all 5-9 ms here)
            d, j = cKDTree(targets).query(queries, k=1, workers=-1 if len(queries) >= 4096 else 1)
            d2 = np.square(d)
        dist[s_off[b]:s_off[b + 1]] = d2
        index[s_off[b]:s_off[b + 1]] = j.astype(np.int64) + d_off[b]
    dev = src.points.device
    return torch.from_numpy(dist).to(dev), torch.from_numpy(index).to(dev)


def segment_sum(values: torch.Tensor, ps: PointSet) -> torch.Tensor:
    """Per-sample sums of a per-point float64 quantity."""
    sample = torch.repeat_interleave(torch.arange(len(ps.counts), device=values.device),
                                     torch.tensor(ps.counts, device=values.device), output_size=values.shape[0])
    return torch.zeros(len(ps.counts), dtype=values.dtype, device=values.device).index_add_(0, sample, values)


def segment_mean(values: torch.Tensor, ps: PointSet) -> torch.Tensor:
    return segment_sum(values, ps) / torch.tensor(ps.counts, dtype=values.dtype, device=values.device)


def segment_max(values: torch.Tensor, ps: PointSet) -> torch.Tensor:
    sample = torch.repeat_interleave(torch.arange(len(ps.counts), device=values.device),
                                     torch.tensor(ps.counts, device=values.device), output_size=values.shape[0])
    out = torch.full((len(ps.counts),), -float("inf"), dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, sample, values, reduce="amax")
