"""A plain Python marching cubes over the same tables, cell by cell with a dict of edges: slow, obvious, and
independent of the native row walk (its vertex numbering, ordering and NaN handling)."""
from __future__ import annotations

import numpy as np

from .mc_tables import CORNER_POS, EDGE_AXIS, EDGE_CORNER, TRIANGLES


def marching_cubes_reference(grid, level: float = 0.0, flip: bool = False):
    """(verts [V, 3] float64, faces [F, 3] int64) in index space; same ordering rules as flowkernels."""
    g = np.asarray(grid, dtype=np.float64)
    nx, ny, nz = g.shape
    edge_pos = {}  # (i, j, k, axis) -> position
    tris = []
    for i in range(nx - 1):
        for j in range(ny - 1):
            for k in range(nz - 1):
                corners = [g[i + dx, j + dy, k + dz] for dx, dy, dz in CORNER_POS]
                if not all(np.isfinite(corners)):
                    continue
                config = sum(1 << c for c, v in enumerate(corners) if v < level)
                for tri in TRIANGLES[config]:
                    keys = []
                    for e in tri:
                        dx, dy, dz = CORNER_POS[EDGE_CORNER[e]]
                        axis = EDGE_AXIS[e]
                        p = (i + dx, j + dy, k + dz)
                        q = tuple(p[a] + (a == axis) for a in range(3))
                        v0, v1 = g[p], g[q]
                        pos = np.array(p, dtype=np.float64)
                        pos[axis] += (level - v0) / (v1 - v0)
                        edge_pos[p + (axis,)] = pos
                        keys.append(p + (axis,))
                    tris.append((keys[0], keys[2], keys[1]) if flip else tuple(keys))
    order = sorted(edge_pos)  # (i, j, k, axis): grid point in C order, then axis
    index = {key: n for n, key in enumerate(order)}
    verts = np.array([edge_pos[k] for k in order], dtype=np.float64).reshape(-1, 3)
    faces = np.array([[index[k] for k in t] for t in tris], dtype=np.int64).reshape(-1, 3)
    return verts, faces
