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
                        with np.errstate(over="ignore"):
                            d = v1 - v0
                        # values further apart than float64 holds: interpolate their halves (d would be inf)
                        pos[axis] += (level - v0) / d if np.isfinite(d) else (level / 2 - v0 / 2) / (v1 / 2 - v0 / 2)
                        edge_pos[p + (axis,)] = pos
                        keys.append(p + (axis,))
                    tris.append((keys[0], keys[2], keys[1]) if flip else tuple(keys))
    order = sorted(edge_pos)  # (i, j, k, axis): grid point in C order, then axis
    index = {key: n for n, key in enumerate(order)}
    verts = np.array([edge_pos[k] for k in order], dtype=np.float64).reshape(-1, 3)
    faces = np.array([[index[k] for k in t] for t in tris], dtype=np.int64).reshape(-1, 3)
    return verts, faces


def _components(corners, edges, config):
    """Connected components of the inside corners of `config`, joined along `edges` (pairs of corner slots)."""
    parent = list(range(len(corners)))

    def root(a):
        while parent[a] != a:
            a = parent[a]
        return a

    inside = [(config >> n) & 1 for n in range(len(corners))]
    for a, b in edges:
        if inside[a] and inside[b]:
            parent[root(a)] = root(b)
    return len({root(n) for n in range(len(corners)) if inside[n]})


# The inside of a cube (or a face) under the face rule: inside corners are joined only along the cube's edges (an
# ambiguous face cuts its inside corners off separately), and each joined group is one ball (disc). Those counts
# are the Euler characteristics of the inside part of each closed cube and face.
_CUBE_EDGES = [(c, c | 1 << a) for a in range(3) for c in range(8) if not (c >> a) & 1]
_CUBE_PIECES = np.array([_components(range(8), _CUBE_EDGES, config) for config in range(256)])
_SQUARE_PIECES = np.array([_components(range(4), [(0, 1), (1, 2), (2, 3), (3, 0)], config) for config in range(16)])


def inside_euler_characteristic(grid, level: float = 0.0) -> int:
    """Euler characteristic of the region {value < level} that marching cubes with the face rule encloses,
    counted from the grid's signs alone (no triangles): by inclusion-exclusion over the closed cubes, faces, edges
    and points of the grid, chi = sum(cube pieces) - sum(face pieces) + sum(edge pieces) - inside points. A closed
    surface bounding that region has Euler characteristic 2 * chi. The region must not touch the grid's boundary."""
    inside = np.asarray(grid, dtype=np.float64) < level
    if inside[[0, -1]].any() or inside[:, [0, -1]].any() or inside[:, :, [0, -1]].any():
        raise ValueError("the inside region touches the grid boundary: the surface is not closed")
    nx, ny, nz = inside.shape
    config = np.zeros((nx - 1, ny - 1, nz - 1), dtype=np.int64)
    for c, (dx, dy, dz) in enumerate(CORNER_POS):
        config |= inside[dx:nx - 1 + dx, dy:ny - 1 + dy, dz:nz - 1 + dz].astype(np.int64) << c
    chi = int(_CUBE_PIECES[config].sum())
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        moved = np.moveaxis(inside, (axis, u, v), (0, 1, 2))  # faces normal to `axis`: corners cyclic in (u, v)
        a, b = moved[:, :-1, :-1], moved[:, 1:, :-1]
        c, d = moved[:, 1:, 1:], moved[:, :-1, 1:]
        square = a.astype(np.int64) | b << 1 | c << 2 | d << 3
        chi -= int(_SQUARE_PIECES[square].sum())
        along = np.moveaxis(inside, axis, 0)
        chi += int((along[:-1] | along[1:]).sum())
    return chi - int(inside.sum())
