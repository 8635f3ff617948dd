"""Each codebase's metric formulas, from one nearest-neighbour matching (see flowkernels/metrics.md).

All values are float64 per sample; `pred` is the reconstruction, `gt` the reference. Names follow OccNet:
accuracy = pred -> gt distances (precision side), completeness = gt -> pred distances (recall side).
"""
from __future__ import annotations

import torch

from ._points import Matching, PointSet, segment_max, segment_mean, segment_sum

CONVENTIONS = ("occnet", "pytorch3d", "kaolin", "open3d")
# PyTorch3D's chamfer_distance reduces over the batch by default (batch_reduction="mean"); the others report
# one value per shape.
DEFAULT_REDUCTION = {"occnet": "none", "pytorch3d": "mean", "kaolin": "none", "open3d": "none"}
# the Chamfer variant each codebase reports by default: squared (L2) or unsquared (L1) distances
DEFAULT_SQUARED = {"occnet": False, "pytorch3d": True, "kaolin": True, "open3d": False}
# F-scores on the 0..100 scale: Mesh R-CNN's PyTorch3D evaluation and Open3D (Tanks and Temples) report percent
F_SCORE_SCALE = {"occnet": 1.0, "pytorch3d": 100.0, "kaolin": 1.0, "open3d": 100.0}


def check_convention(convention: str) -> str:
    key = convention.lower() if isinstance(convention, str) else convention
    if key not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not one of {list(CONVENTIONS)}")
    return key


def chamfer(m: Matching, pred: PointSet, gt: PointSet, convention: str, squared=None) -> torch.Tensor:
    """occnet: ½(mean d_acc + mean d_comp) (Chamfer-L1) or ½ of the squared means (Chamfer-L2);
    pytorch3d: mean d² + mean d²; kaolin: mean d² + mean d² (squared=False: unsquared sum);
    open3d / point-cloud-utils: mean d + mean d."""
    if squared is None:
        squared = DEFAULT_SQUARED[convention]
    if convention == "pytorch3d" and not squared:
        raise ValueError("squared=False: PyTorch3D's chamfer_distance uses squared distances only")
    if convention == "open3d" and squared:
        raise ValueError("squared=True: Open3D / point-cloud-utils Chamfer distances are unsquared")
    if squared:
        acc, comp = segment_mean(m.sq_pred, pred), segment_mean(m.sq_gt, gt)
    else:
        acc, comp = segment_mean(m.sq_pred.sqrt(), pred), segment_mean(m.sq_gt.sqrt(), gt)
    total = acc + comp
    return 0.5 * total if convention == "occnet" else total


def hausdorff(m: Matching, pred: PointSet, gt: PointSet) -> torch.Tensor:
    """max(max_p d(p, gt), max_q d(q, pred)), unsquared (point-cloud-utils' hausdorff_distance); the same in every
    convention (PyTorch3D, Kaolin and Open3D define none of their own)."""
    return torch.maximum(segment_max(m.sq_pred, pred), segment_max(m.sq_gt, gt)).sqrt()


def f_score(m: Matching, pred: PointSet, gt: PointSet, thresholds, convention: str) -> torch.Tensor:
    """[B, T] F-scores at each threshold (absolute distances, unsquared)."""
    d_pred, d_gt = m.sq_pred.sqrt(), m.sq_gt.sqrt()
    n_pred = torch.tensor(pred.counts, dtype=torch.float64, device=d_pred.device)
    cols = []
    for t in thresholds:
        if convention == "occnet":          # dist <= t; 0/0 (no hits either way) is reported as 0, not NaN
            precision = segment_mean((d_pred <= t).double(), pred)
            recall = segment_mean((d_gt <= t).double(), gt)
            denom = precision + recall
            f = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(denom))
        elif convention == "pytorch3d":     # Mesh R-CNN's compare_meshes: strict <, percent, eps 1e-8
            precision = 100.0 * segment_mean((d_pred < t).double(), pred)
            recall = 100.0 * segment_mean((d_gt < t).double(), gt)
            f = 2.0 * precision * recall / (precision + recall + 1e-8)
        elif convention == "kaolin":        # true positives from pred, misses from gt: the two counts mix
            false_pos = segment_sum((d_pred > t).double(), pred)
            false_neg = segment_sum((d_gt > t).double(), gt)
            true_pos = n_pred - false_pos
            precision = true_pos / (true_pos + false_pos)
            recall = true_pos / (true_pos + false_neg)
            f = 2 * (precision * recall) / (precision + recall + 1e-8)
        else:                               # open3d / Tanks and Temples: strict <, percent; 0 when no hits
            precision = segment_mean((d_pred < t).double(), pred)
            recall = segment_mean((d_gt < t).double(), gt)
            denom = precision + recall
            f = 100.0 * torch.where(denom > 0, 2 * recall * precision / denom.clamp_min(1e-300),
                                    torch.zeros_like(denom))
        cols.append(f)
    return torch.stack(cols, dim=-1)


def normal_consistency(m: Matching, pred: PointSet, gt: PointSet, convention: str) -> torch.Tensor:
    """occnet: ½(mean |cos| both ways), higher is better, normals normalised (a zero normal counts as cos 0);
    pytorch3d: chamfer_distance's normal term, mean(1 - |cos|) summed over both directions, lower is better."""
    if convention not in ("occnet", "pytorch3d"):
        raise ValueError(f"convention={convention!r} defines no normal consistency (only 'occnet' and 'pytorch3d' "
                         "do)")
    if pred.normals is None or gt.normals is None:
        raise ValueError("normal consistency needs pred_normals and gt_normals")
    n_pred, n_gt = pred.normals.double(), gt.normals.double()
    if convention == "occnet":
        def unit(n):
            return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        cos_pred = (unit(n_pred) * unit(n_gt)[m.index_pred]).sum(-1).abs()
        cos_gt = (unit(n_gt) * unit(n_pred)[m.index_gt]).sum(-1).abs()
        return 0.5 * segment_mean(cos_pred, pred) + 0.5 * segment_mean(cos_gt, gt)
    cos_pred = torch.nn.functional.cosine_similarity(n_pred, n_gt[m.index_pred], dim=-1, eps=1e-6)
    cos_gt = torch.nn.functional.cosine_similarity(n_gt, n_pred[m.index_gt], dim=-1, eps=1e-6)
    return segment_mean(1 - cos_pred.abs(), pred) + segment_mean(1 - cos_gt.abs(), gt)
