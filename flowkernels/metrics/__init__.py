"""3D reconstruction metrics with every codebase's convention named: Chamfer distance, F-score, normal
consistency, Hausdorff distance and volume IoU, on batched / ragged point sets (torch or numpy) and meshes.

    from flowkernels import metrics
    metrics.evaluate(pred_mesh, gt_mesh)                                 # OccNet's numbers, 100k samples each
    metrics.chamfer(pred, gt, convention="pytorch3d")                   # [B, N, 3] tensors, PyTorch3D's value
    metrics.f_score(pred, gt, thresholds=(0.01, 0.02), pred_offsets=po, gt_offsets=go)   # ragged: [B, 2]

Nearest neighbours: a Triton kernel on CUDA tensors (both directions in one launch, fp32 differences, no
N x M matrix), a KD-tree (pykdtree, else scipy) on the CPU. Conventions and the factors between them:
flowkernels/metrics.md.
"""
from __future__ import annotations

import numpy as np
import torch

from . import conventions as _conv
from ._points import Matching, as_point_set, check_pair, match
from .conventions import CONVENTIONS, check_convention
from .surface import as_mesh, check_seed, genus, is_mesh, sample_surface, volume_iou, weld, winding_number

DEFAULT_THRESHOLDS = (0.01, 0.015, 0.02)   # OccNet / ConvONet: 1%, 1.5%, 2% of a unit cube
REDUCTIONS = ("none", "mean")

__all__ = ["chamfer", "f_score", "normal_consistency", "hausdorff", "volume_iou", "evaluate", "nearest",
           "sample_surface", "winding_number", "genus", "weld", "chamfer_to_nearest", "score_samples", "CONVENTIONS",
           "DEFAULT_THRESHOLDS"]


def _prepare(pred, gt, pred_offsets, gt_offsets, pred_normals=None, gt_normals=None, device=None):
    p = as_point_set("pred", pred, pred_offsets, pred_normals, device)
    g = as_point_set("gt", gt, gt_offsets, gt_normals, p.points.device if device is None else device)
    check_pair(p, g)
    return p, g


def _finish(values: torch.Tensor, ps, convention: str, reduction, default_mean: bool = True):
    if reduction is None:
        reduction = _conv.DEFAULT_REDUCTION[convention] if default_mean else "none"
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {list(REDUCTIONS)} (or None for the convention's)")
    if reduction == "mean":
        values = values.mean(dim=0)
    elif not ps.batched:
        values = values[0]
    return values.cpu().numpy() if ps.as_numpy else values


def _thresholds(thresholds):
    ts = (thresholds,) if isinstance(thresholds, (int, float)) else tuple(thresholds)
    if not ts or any(isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer))
                     or not np.isfinite(t) or t < 0 for t in ts):
        raise ValueError(f"thresholds must be finite non-negative numbers, got {thresholds!r}")
    return tuple(float(t) for t in ts)


def nearest(pred, gt, *, pred_offsets=None, gt_offsets=None, backend=None) -> Matching:
    """Both-way nearest neighbours: `Matching` with squared distances (float64) and global indices."""
    p, g = _prepare(pred, gt, pred_offsets, gt_offsets)
    return match(p, g, backend)


def chamfer(pred, gt, *, convention: str = "occnet", squared=None, reduction=None, pred_offsets=None,
            gt_offsets=None, backend=None):
    """Chamfer distance per sample ([B], or a scalar for one [N, 3] set) in a codebase's definition:
    occnet ½(mean d + mean d) (squared=True: Chamfer-L2, ½ of the squared means); pytorch3d mean d² + mean d²
    averaged over the batch (reduction="none" keeps [B]); kaolin mean d² + mean d²; open3d mean d + mean d."""
    convention = check_convention(convention)
    p, g = _prepare(pred, gt, pred_offsets, gt_offsets)
    values = _conv.chamfer(match(p, g, backend), p, g, convention, squared)
    return _finish(values, p, convention, reduction)


def f_score(pred, gt, thresholds=DEFAULT_THRESHOLDS, *, convention: str = "occnet", reduction="none",
            pred_offsets=None, gt_offsets=None, backend=None):
    """F-scores at several absolute distance thresholds at once: [B, T] (or [T] for one set). occnet: dist <= t,
    fraction; pytorch3d (Mesh R-CNN's evaluation): dist < t, percent; kaolin: dist <= t with precision and
    recall built from mixed counts; open3d (Tanks and Temples): dist < t, percent."""
    convention = check_convention(convention)
    ts = _thresholds(thresholds)
    p, g = _prepare(pred, gt, pred_offsets, gt_offsets)
    return _finish(_conv.f_score(match(p, g, backend), p, g, ts, convention), p, convention, reduction)


def normal_consistency(pred, gt, pred_normals, gt_normals, *, convention: str = "occnet", reduction=None,
                       pred_offsets=None, gt_offsets=None, backend=None):
    """occnet: ½(mean |cos|) both ways (higher is better); pytorch3d: chamfer_distance's normal loss,
    Σ over both directions of mean(1 - |cos|), batch mean (lower is better). Kaolin and Open3D define none."""
    convention = check_convention(convention)
    p, g = _prepare(pred, gt, pred_offsets, gt_offsets, pred_normals, gt_normals)
    values = _conv.normal_consistency(match(p, g, backend), p, g, convention)
    return _finish(values, p, convention, reduction)


def hausdorff(pred, gt, *, reduction="none", pred_offsets=None, gt_offsets=None, backend=None):
    """Symmetric Hausdorff distance max(max_p d(p, gt), max_q d(q, pred)), unsquared, per sample."""
    p, g = _prepare(pred, gt, pred_offsets, gt_offsets)
    return _finish(_conv.hausdorff(match(p, g, backend), p, g), p, "occnet", reduction)


def _surface_points(name, obj, n_points, seed, device):
    """(points, normals or None, mesh or None) of a mesh (sampled) or a point cloud (used as given)."""
    if is_mesh(obj):
        mesh = as_mesh(name, obj, device)
        points, normals = sample_surface(mesh, n_points, seed=seed, name=name)
        return points, normals, mesh
    if isinstance(obj, (tuple, list)) and len(obj) == 2:   # (points, normals)
        points, normals = obj
        return points, normals, None
    return obj, None, None


def evaluate(pred, gt, n_points: int = 100_000, convention: str = "occnet", *, thresholds=DEFAULT_THRESHOLDS,
             seed: int = 0, iou_points: int = 100_000, iou_query=None, backend=None, device=None) -> dict:
    """Every metric of one prediction against its reference, as plain floats.

    `pred` / `gt`: a mesh (flowkernels Mesh, trimesh.Trimesh, (verts, faces)) whose surface is sampled with
    `n_points` area-weighted points with face normals (seeded: pred with `seed`, gt with `seed + 1`), or a point
    cloud [N, 3] (or (points [N, 3], normals [N, 3])) used as given. Volume IoU needs two meshes (inside test:
    winding number > 0.5 on `iou_points` uniform points in the padded union of bounding boxes, or `iou_query`);
    a metric that the inputs or the convention do not define is None."""
    convention = check_convention(convention)
    ts = _thresholds(thresholds)
    seed = check_seed(seed)
    p_pts, p_nrm, p_mesh = _surface_points("pred", pred, n_points, seed, device)
    g_pts, g_nrm, g_mesh = _surface_points("gt", gt, n_points, seed + 1, device)
    p, g = _prepare(p_pts, g_pts, None, None, p_nrm, g_nrm, device)
    if p.batched or g.batched:
        raise ValueError("evaluate() takes one prediction and one reference; loop over a batch, or use the point "
                         "metrics (chamfer, f_score, ...) on [B, N, 3] sets")
    m = match(p, g, backend)
    unsquared = None if convention == "pytorch3d" else _conv.chamfer(m, p, g, convention, squared=False)
    squared = None if convention == "open3d" else _conv.chamfer(m, p, g, convention, squared=True)
    out = {"convention": convention, "n_pred_points": p.counts[0], "n_gt_points": g.counts[0],
           "chamfer": _conv.chamfer(m, p, g, convention), "chamfer_l1": unsquared, "chamfer_l2": squared,
           "hausdorff": _conv.hausdorff(m, p, g)}
    scores = _conv.f_score(m, p, g, ts, convention)[0]
    for t, value in zip(ts, scores):
        out[f"f_score@{t:g}"] = value
    has_normals = p.normals is not None and g.normals is not None and convention in ("occnet", "pytorch3d")
    out["normal_consistency"] = _conv.normal_consistency(m, p, g, convention) if has_normals else None
    both_meshes = p_mesh is not None and g_mesh is not None
    out["volume_iou"] = (volume_iou(p_mesh, g_mesh, iou_points, seed=seed, points=iou_query)
                         if both_meshes else None)
    return {k: (float(v.reshape(-1)[0]) if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


def chamfer_to_nearest(sample, references, n_points: int = 10_000, convention: str = "occnet", *, seed: int = 0,
                       backend=None):
    """(distance, index): the Chamfer distance (the convention's default) from `sample` to the closest of
    `references` (meshes or [N, 3] point clouds), e.g. how far a generated shape is from its nearest training
    shape (memorisation check). All pairs run as one ragged batch."""
    convention = check_convention(convention)
    if len(references) == 0:
        raise ValueError("references is empty")
    seed = check_seed(seed)
    s_pts = _surface_points("sample", sample, n_points, seed, None)[0]
    s_pts = torch.as_tensor(s_pts)
    refs = [torch.as_tensor(_surface_points(f"references[{i}]", r, n_points, seed + 1 + i, s_pts.device)[0])
            for i, r in enumerate(references)]
    dtype = torch.promote_types(s_pts.dtype, refs[0].dtype)
    values = chamfer([s_pts.to(dtype)] * len(refs), [r.to(device=s_pts.device, dtype=dtype) for r in refs],
                     convention=convention, reduction="none", backend=backend)
    best = int(torch.argmin(values))
    return float(values[best]), best


def _has_area(mesh) -> bool:
    from .surface import face_geometry
    m = as_mesh("mesh", mesh)
    return m.faces.shape[0] > 0 and bool((face_geometry(m)[0] > 0).any())


def score_samples(samples, references, n_points: int = 2_000, convention: str = "occnet", *, seed: int = 0,
                  backend=None) -> list:
    """For each generated mesh: {"genus", "nearest_index", "chamfer_to_nearest"} against `references` (e.g. meshes
    of the training shapes); None for a sample with no surface. References are sampled once and every
    (sample, reference) pair runs in one ragged batch."""
    convention = check_convention(convention)
    if len(references) == 0:
        raise ValueError("references is empty")
    seed = check_seed(seed)
    ref_pts = [torch.as_tensor(_surface_points(f"references[{i}]", r, n_points, seed + 1 + i, None)[0]).float()
               for i, r in enumerate(references)]
    out, pairs_p, pairs_g, owners = [], [], [], []
    for k, s in enumerate(samples):
        if is_mesh(s) and not _has_area(s):
            out.append({"genus": None, "nearest_index": None, "chamfer_to_nearest": None})
            continue
        pts = torch.as_tensor(_surface_points(f"samples[{k}]", s, n_points, seed, None)[0]).float()
        out.append({"genus": genus(s) if is_mesh(s) else None})
        pairs_p += [pts] * len(ref_pts)
        pairs_g += ref_pts
        owners.append(k)
    if owners:
        values = chamfer(pairs_p, pairs_g, convention=convention, reduction="none", backend=backend)
        values = values.reshape(len(owners), len(ref_pts))
        best = values.argmin(dim=1)
        for row, k in enumerate(owners):
            out[k].update(nearest_index=int(best[row]), chamfer_to_nearest=float(values[row, best[row]]))
    return out
