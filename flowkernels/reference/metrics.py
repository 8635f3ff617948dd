"""Reconstruction metrics written plainly from each codebase's published formula, in float64 with a full
distance matrix: slow, obvious, independent of the KD-tree / Triton matching and the segment reductions.

One sample at a time: pred [N, 3], gt [M, 3] numpy arrays (normals likewise)."""
from __future__ import annotations

import numpy as np


def distances(a, b):
    """[N, M] Euclidean distances, float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def nearest(a, b):
    """(distance, index) of each point of a to b."""
    d = distances(a, b)
    j = d.argmin(axis=1)
    return d[np.arange(len(a)), j], j


def chamfer(pred, gt, convention, squared=None):
    acc, _ = nearest(pred, gt)    # pred -> gt
    comp, _ = nearest(gt, pred)   # gt -> pred
    if convention == "occnet":    # Chamfer-L1 = 0.5 (completeness + accuracy); L2 = 0.5 of the squared means
        if squared:
            return 0.5 * ((comp**2).mean() + (acc**2).mean())
        return 0.5 * (comp.mean() + acc.mean())
    if convention == "pytorch3d":  # chamfer_distance: squared, mean per cloud, both directions summed
        return (acc**2).mean() + (comp**2).mean()
    if convention == "kaolin":     # chamfer_distance(squared=True default): mean + mean
        if squared is False:
            return acc.mean() + comp.mean()
        return (acc**2).mean() + (comp**2).mean()
    if convention == "open3d":     # point-cloud-utils chamfer_distance / Open3D distances: unsquared means summed
        return acc.mean() + comp.mean()
    raise ValueError(convention)


def f_score(pred, gt, t, convention):
    acc, _ = nearest(pred, gt)
    comp, _ = nearest(gt, pred)
    if convention == "occnet":
        precision, recall = (acc <= t).mean(), (comp <= t).mean()
        return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    if convention == "pytorch3d":
        precision, recall = 100.0 * (acc < t).mean(), 100.0 * (comp < t).mean()
        return 2.0 * precision * recall / (precision + recall + 1e-8)
    if convention == "kaolin":     # kaolin.metrics.pointcloud.f_score(gt_points, pred_points, radius)
        fn = float((comp > t).sum())
        fp = float((acc > t).sum())
        tp = float(len(pred)) - fp
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        return 2 * (precision * recall) / (precision + recall + 1e-8)
    if convention == "open3d":
        recall, precision = float((comp < t).sum()) / len(comp), float((acc < t).sum()) / len(acc)
        return 0.0 if recall + precision == 0 else 100.0 * 2 * recall * precision / (recall + precision)
    raise ValueError(convention)


def normal_consistency(pred, gt, pred_normals, gt_normals, convention):
    _, j_acc = nearest(pred, gt)
    _, j_comp = nearest(gt, pred)
    pn, gn = np.asarray(pred_normals, np.float64), np.asarray(gt_normals, np.float64)
    if convention == "occnet":
        pn_u = pn / np.linalg.norm(pn, axis=-1, keepdims=True)
        gn_u = gn / np.linalg.norm(gn, axis=-1, keepdims=True)
        completeness_normals = np.abs((pn_u[j_comp] * gn_u).sum(-1)).mean()
        accuracy_normals = np.abs((gn_u[j_acc] * pn_u).sum(-1)).mean()
        return 0.5 * completeness_normals + 0.5 * accuracy_normals

    def cos(a, b):  # torch.nn.functional.cosine_similarity with eps=1e-6
        return (a * b).sum(-1) / (np.maximum(np.linalg.norm(a, axis=-1), 1e-6)
                                  * np.maximum(np.linalg.norm(b, axis=-1), 1e-6))
    return (1 - np.abs(cos(pn, gn[j_acc]))).mean() + (1 - np.abs(cos(gn, pn[j_comp]))).mean()


def hausdorff(pred, gt):
    d = distances(pred, gt)
    return max(d.min(axis=1).max(), d.min(axis=0).max())


def winding_number(verts, faces, points):
    """Exact generalized winding number: Σ solid angles / 4π (Van Oosterom and Strackee's formula)."""
    v = np.asarray(verts, np.float64)
    f = np.asarray(faces, np.int64)
    out = []
    for q in np.asarray(points, np.float64):
        a, b, c = v[f[:, 0]] - q, v[f[:, 1]] - q, v[f[:, 2]] - q
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = (a * np.cross(b, c)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(np.arctan2(det, den).sum() / (2 * np.pi))
    return np.array(out)
