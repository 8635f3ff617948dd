"""float64 references for the distance core, written from the definitions (slow, for tests only).

The distance from p to a triangle is the smaller of: the distance to its plane when p projects inside the
triangle, and the distances to its three edges (segments).
"""
from __future__ import annotations

import numpy as np


def _segment_dist2(p, a, b):
    d = b - a
    len2 = (d * d).sum(-1)
    t = np.where(len2 > 0, ((p - a) * d).sum(-1) / np.where(len2 > 0, len2, 1.0), 0.0)
    t = np.clip(t, 0.0, 1.0)
    q = a + t[..., None] * d
    return ((p - q) ** 2).sum(-1)


def point_triangle_distance(points, tris):
    """[P] distances from points [P, 3] to the nearest of triangles [T, 3, 3] (float64, brute force)."""
    p = np.asarray(points, dtype=np.float64)[:, None, :]
    t = np.asarray(tris, dtype=np.float64)[None]
    a, b, c = t[..., 0, :], t[..., 1, :], t[..., 2, :]
    n = np.cross(b - a, c - a)
    n2 = (n * n).sum(-1)
    # barycentric coordinates of the projection, by signed sub-triangle areas
    safe = np.where(n2 > 0, n2, 1.0)
    wa = (np.cross(c - b, p - b) * n).sum(-1) / safe
    wb = (np.cross(a - c, p - c) * n).sum(-1) / safe
    wc = (np.cross(b - a, p - a) * n).sum(-1) / safe
    inside = (n2 > 0) & (wa >= 0) & (wb >= 0) & (wc >= 0)
    plane2 = ((p - a) * n).sum(-1) ** 2 / safe
    edge2 = np.minimum(np.minimum(_segment_dist2(p, a, b), _segment_dist2(p, b, c)), _segment_dist2(p, c, a))
    d2 = np.where(inside, np.minimum(plane2, edge2), edge2)
    return np.sqrt(d2.min(axis=1))


def mesh_distance(points, verts, faces, chunk: int = 256):
    """Distance from each point to the mesh (verts [V, 3], faces [F, 3]), in chunks of points."""
    tris = np.asarray(verts, dtype=np.float64)[np.asarray(faces)]
    pts = np.asarray(points, dtype=np.float64)
    return np.concatenate([point_triangle_distance(pts[i:i + chunk], tris) for i in range(0, len(pts), chunk)]) \
        if len(pts) else np.zeros(0)


def band_grid(verts, faces, origin, step, shape, band):
    """The narrow-band grid by definition: distance where < band, band elsewhere (float64)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    pts = np.asarray(origin, dtype=np.float64) + idx * np.asarray(step, dtype=np.float64)
    d = mesh_distance(pts, verts, faces)
    return np.where(d < band, d, band).reshape(shape)
