"""Marching cubes with ambiguities decided from values, as Lewiner's (scikit-image's) method does: a slow float64
reference and the tables it reads, derived here (not copied), to measure how far each decision moves the area from
scikit-image's before any of it goes into the native drivers (marching_cubes.md, "Toward Lewiner's area").

Face rule. A face whose diagonal corners share a side (four crossings) is ambiguous. The asymptotic decider joins
its inside corners when the bilinear interpolant's saddle lies inside (value < level): with the face's corner
values relative to the level taken in an order fixed by the face, a = (0,0), b = (1,0), c = (1,1), d = (0,1) in the
face's own (u, v) axes (the same four grid points, in the same order, for both cells sharing the face), the inside
pair is joined iff |product of the inside pair| > |product of the outside pair|. A tie (saddle exactly at the
level) counts as outside, like a grid point exactly at the level: inside corners cut off separately, the sign rule
of `mc_tables`. Both cells evaluate the same two products of the same four numbers, so they agree.

Cube rule. With the faces decided, the surface on the cube's boundary is a set of closed loops (as in `mc_tables`,
each face linking its crossings per its decision). A loop is triangulated with no edge between two vertices of one
cube face other than its segments (watertight whatever the neighbour does), choosing among those triangulations the
one of largest area at the edge midpoints (a measured choice: marching_cubes.md); a loop that has no such
triangulation is fanned from a vertex at the cell centre (the mean of the cell's vertices, as Lewiner places his).
Interior ambiguities (Lewiner's cases 4, 6, 7, 10, 12, 13: tubes through the cell) are not decided here.
"""
from __future__ import annotations

import itertools

import numpy as np

from .mc_tables import (CORNER_POS, EDGE_AXIS, EDGE_CORNER, FACE_EDGES, FACES, _edge_id,
                        largest_area_triangulation)

CENTRE = 12  # vertex slot of the cell-centre vertex (edges are 0..11)


def _face_grid_order(f: int):
    """Corners of face f as a, b, c, d = (0,0), (1,0), (1,1), (0,1) in the face's (u, v) axes: an order fixed by
    the face's grid points, identical for the two cells that share it (FACES lists side-0 faces reversed)."""
    face = FACES[f]
    return face if f % 2 else face[::-1]


def ambiguous_faces(config: int):
    """Faces (0..5, as in mc_tables.FACES) with four crossings, in face order."""
    out = []
    for f in range(6):
        a, b, c, d = ((config >> n) & 1 for n in _face_grid_order(f))
        if a == c and b == d and a != b:
            out.append(f)
    return out


AMBIGUOUS = [ambiguous_faces(c) for c in range(256)]


def face_joins_inside(a: float, b: float, c: float, d: float) -> bool:
    """Asymptotic decider for one ambiguous face, values relative to the level in the face's fixed order: are the
    two inside corners joined (saddle value < level)? Exactly one of the pairs (a, c), (b, d) is inside."""
    inside, outside = ((a, c), (b, d)) if a < 0 else ((b, d), (a, c))
    return abs(inside[0] * inside[1]) > abs(outside[0] * outside[1])


def _loops(config: int, joined):
    inside = [(config >> c) & 1 for c in range(8)]
    nxt = {}
    for f, face in enumerate(FACES):
        crossings = []
        for i in range(4):
            a, b = face[i], face[(i + 1) % 4]
            if inside[a] != inside[b]:
                crossings.append((_edge_id(a, b), bool(inside[a])))
        for i, (edge, leaves) in enumerate(crossings):
            if leaves:  # cut off this inside corner (i - 1), or, joined, the outside corner after it (i + 1)
                nxt[edge] = crossings[(i + 1 if f in joined else i - 1) % len(crossings)][0]
    loops, seen = [], set()
    for start in sorted(nxt):
        if start not in seen:
            loop, e = [], start
            while e not in seen:
                seen.add(e)
                loop.append(e)
                e = nxt[e]
            loops.append(loop)
    return loops


def _loop_triangles(loop):
    tris = largest_area_triangulation(loop)
    if tris is None:  # fan from the cell centre: every edge from it crosses the cell's interior
        tris = [(CENTRE, loop[i], loop[(i + 1) % len(loop)]) for i in range(len(loop))]
    return tris


def _orient(tris):
    """mc_tables' winding: for corner 0 alone inside, the normal points away from corner 0."""
    return [(t[0], t[2], t[1]) for t in tris]


def _build():
    table = {}
    for config in range(256):
        faces = AMBIGUOUS[config]
        for bits in range(1 << len(faces)):
            joined = {f for n, f in enumerate(faces) if bits >> n & 1}
            loops = _loops(config, joined)
            table[config, bits] = _orient([t for loop in loops for t in _loop_triangles(loop)])
    return table


VARIANTS = _build()


def face_bits(vals, config: int) -> int:
    """Bit n set: the n-th ambiguous face of `config` joins its inside corners (vals: the 8 corner values minus the
    level, in corner order)."""
    bits = 0
    for n, f in enumerate(AMBIGUOUS[config]):
        if face_joins_inside(*(vals[c] for c in _face_grid_order(f))):
            bits |= 1 << n
    return bits


def cell_triangles(vals, config: int):
    """Triangles (edge slots, CENTRE for the centre vertex) of one cell; vals relative to the level."""
    return VARIANTS[config, face_bits(vals, config)]


def marching_cubes_decided(grid, level: float = 0.0):
    """(verts, faces) in index space, float64, cell by cell: the `mc_tables` vertices (one per crossed grid edge)
    followed by the centre vertices of the cells that need one. Cells with a non-finite corner emit nothing."""
    g = np.asarray(grid, dtype=np.float64)
    keys, tris = {}, []
    for i, j, k in itertools.product(*(range(n - 1) for n in g.shape)):
        vals = [g[i + dx, j + dy, k + dz] - level for dx, dy, dz in CORNER_POS]
        if not np.isfinite(vals).all():
            continue
        config = sum(1 << c for c, v in enumerate(vals) if v < 0)
        cell = cell_triangles(vals, config) if 0 < config < 255 else []
        pos = {}
        for e in range(12):
            c0 = EDGE_CORNER[e]
            c1 = c0 | 1 << EDGE_AXIS[e]
            if (config >> c0 & 1) != (config >> c1 & 1):
                p = np.array((i, j, k), dtype=float) + CORNER_POS[c0]
                p[EDGE_AXIS[e]] += vals[c0] / (vals[c0] - vals[c1])
                pos[e] = ((i + CORNER_POS[c0][0], j + CORNER_POS[c0][1], k + CORNER_POS[c0][2], EDGE_AXIS[e]), p)
        if any(CENTRE in t for t in cell):
            pos[CENTRE] = ((i, j, k, 3), np.mean([p for _, p in pos.values()], axis=0))
        for t in cell:
            tris.append(tuple(pos[e][0] for e in t))
            for e in t:
                keys[pos[e][0]] = pos[e][1]
    order = sorted(keys, key=lambda key: (key[3] == 3,) + key)
    index = {key: n for n, key in enumerate(order)}
    verts = np.array([keys[key] for key in order], dtype=np.float64).reshape(-1, 3)
    faces = np.array([[index[key] for key in t] for t in tris], dtype=np.int64).reshape(-1, 3)
    return verts, faces


def in_face(tri) -> bool:
    """Do all three vertices of a triangle (edge slots) lie on one cube face?"""
    return CENTRE not in tri and any(set(tri) <= face for face in FACE_EDGES)
