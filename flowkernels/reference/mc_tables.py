"""Marching-cubes lookup tables, derived from first principles rather than copied.

Corner c of a cell sits at (c & 1, c >> 1 & 1, c >> 2 & 1); a corner is *inside* when its value < level.
Edge e joins corner EDGE_CORNER[e] and the corner one step along EDGE_AXIS[e].

For each of the 256 inside/outside patterns, every cube face contributes segments between its crossed edges,
oriented so the inside corners lie on their left seen from outside the cube. On a face with four crossings the
inside corners are cut off separately: the rule depends on that face's signs alone, so the two cells sharing a
face always agree. The segments chain into closed loops, each fanned into triangles wound counter-clockwise seen
from the outside (value >= level) side.

A loop is triangulated with no edge between two vertices of one cube face other than its segments. A segment is
the only mesh edge between two vertices of one face that the cells on both sides of the face agree on; a diagonal
between two vertices of one face (possible only on a face with four crossings, whose two segments a loop can pass
through) could be drawn by the neighbour too, and where both cells draw it, or draw a triangle lying in the face,
the edge is used four times and the mesh is not watertight. Among the triangulations that keep every diagonal
inside the cube, the one of largest area at the edge midpoints is taken: a fan from the first admissible apex loses
area systematically against scikit-image's (Lewiner's) tables (marching_cubes.md), except for the loops of 7
vertices (Lewiner's case 6), which take the one of smallest area: their largest-area triangulation bulges away
from Lewiner's strip (measured: marching_cubes.md). Every loop of the sign rule has such a triangulation (a test
checks all 256 cases).

Twisted paths (each side's four corners a path of three cube edges along three axes, Lewiner's cases 11 and 14:
24 cases, one loop of 6 vertices, no ambiguous face) are the exception: they take the central triangulation (a
triangle joining alternate vertices, and three ears) that scikit-image's (Lewiner's) tiling draws, stated in
`TWISTED_PATH_DIAGONAL`. A half turn of the cube maps such a case to itself and swaps its two central
triangulations, so no rule of the cube's geometry picks one; Lewiner's tiling picks by its orientation (its only
symmetries are the turns about the cube diagonal (0,0,1)-(1,1,0)), and where the two differ by a fifth of a cell
face any other choice puts a small field's area 5e-4 off his (measured: marching_cubes.md). These 12 numbers are
the one thing taken from his tables; a test reads them back from scikit-image cell by cell.

`python -m flowkernels.reference.mc_tables > csrc/mc_tables.h` writes the C++ header (a test checks it is current).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

CORNER_POS = [(c & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8)]
EDGE_CORNER, EDGE_AXIS = [], []
for _axis in range(3):
    for _c in range(8):
        if not (_c >> _axis) & 1:
            EDGE_CORNER.append(_c)
            EDGE_AXIS.append(_axis)


def _edge_id(c0: int, c1: int) -> int:
    lo, axis = min(c0, c1), (c0 ^ c1).bit_length() - 1
    return next(e for e in range(12) if EDGE_CORNER[e] == lo and EDGE_AXIS[e] == axis)


def _faces():
    """Each face's corners, counter-clockwise seen from outside the cube."""
    out = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for side in (0, 1):
            square = [(0, 0), (1, 0), (1, 1), (0, 1)]
            corners = [(side << axis) | (a << u) | (b << v) for a, b in square]
            out.append(corners if side else corners[::-1])
    return out


FACES = _faces()


def _loops(config: int):
    inside = [(config >> c) & 1 for c in range(8)]
    nxt = {}
    for face in FACES:
        crossings = []  # (edge, leaves_inside) in counter-clockwise order
        for i in range(4):
            a, b = face[i], face[(i + 1) % 4]
            if inside[a] != inside[b]:
                crossings.append((_edge_id(a, b), bool(inside[a])))
        for i, (edge, leaves) in enumerate(crossings):
            if leaves:  # link to the crossing that entered this inside corner region
                j = (i - 1) % len(crossings)
                assert not crossings[j][1]
                assert edge not in nxt
                nxt[edge] = crossings[j][0]
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, e = [], start
        while e not in seen:
            seen.add(e)
            loop.append(e)
            e = nxt[e]
        assert e == start
        loops.append(loop)
    return loops


FACE_EDGES = [frozenset(_edge_id(f[i], f[(i + 1) % 4]) for i in range(4)) for f in FACES]


def share_face(e0: int, e1: int) -> bool:
    """Do cube edges e0 and e1 lie on one cube face?"""
    return any(e0 in face and e1 in face for face in FACE_EDGES)


def _edge_mid(e):
    p = np.array(CORNER_POS[EDGE_CORNER[e]], dtype=float)
    p[EDGE_AXIS[e]] += 0.5
    return p


def _area(tri) -> float:
    a, b, c = (_edge_mid(e) for e in tri)
    return 0.5 * float(np.linalg.norm(np.cross(b - a, c - a)))


SMALLEST_AREA_LOOP = 7  # loops this long (case 6) take the smallest-area triangulation

# A twisted path's case (the one of the case and its complement below 128) -> the body diagonal, corners c and
# 7 - c, that its central triangle leaves out: the triangle lies across the cube perpendicular to that diagonal.
TWISTED_PATH_DIAGONAL = {27: 1, 29: 2, 39: 0, 46: 3, 53: 3, 58: 1, 71: 0, 78: 2, 83: 0, 92: 2, 114: 3, 116: 1}


def is_twisted_path(config: int) -> bool:
    """Four corners on each side, each side's a path of three cube edges along three different axes."""
    for side in (config, 255 - config):
        corners = [c for c in range(8) if side >> c & 1]
        edges = [(c, c | 1 << a) for c in corners for a in range(3) if not c >> a & 1 and side >> (c | 1 << a) & 1]
        degree = sorted(sum(c in e for e in edges) for c in corners)
        if len(corners) != 4 or degree != [1, 1, 2, 2] or len({a ^ b for a, b in edges}) != 3:
            return False
    return True


def twisted_path_triangulation(loop, config: int):
    """The central triangulation of a twisted path's loop of 6 (edge ids in order) that leaves out the corners
    of `TWISTED_PATH_DIAGONAL`, in loop order (so wound as the loop)."""
    c = TWISTED_PATH_DIAGONAL[min(config, 255 - config)]
    skip = {c, 7 - c}
    for s in (0, 1):
        centre = [loop[s], loop[s + 2], loop[(s + 4) % 6]]
        ends = {EDGE_CORNER[e] for e in centre} | {EDGE_CORNER[e] | 1 << EDGE_AXIS[e] for e in centre}
        if not ends & skip:
            ears = [(loop[(s + 2 * n) % 6], loop[(s + 2 * n + 1) % 6], loop[(s + 2 * n + 2) % 6]) for n in range(3)]
            return ears + [tuple(centre)]
    raise AssertionError(f"case {config}: no central triangle leaves out corners {sorted(skip)}")


def handedness(config: int, e0: int, e1: int) -> int:
    """The sign of det[p1 - p0, s0, s1] for a mesh edge between the vertices on cube edges e0 and e1: p the edge's
    inside corner, s the unit step from it to the outside corner. Taking both outside corners instead gives the same
    sign (a complement draws the same edges), a rotation of the cube keeps it and a mirror flips it: it tells apart
    the two diagonals of a loop that a mirror symmetry of the case exchanges, which the area cannot."""
    ends = []
    for e in (e0, e1):
        lo = EDGE_CORNER[e]
        hi = lo | 1 << EDGE_AXIS[e]
        inside, outside = (lo, hi) if (config >> lo) & 1 else (hi, lo)
        ends.append((np.array(CORNER_POS[inside]), np.array(CORNER_POS[outside]) - np.array(CORNER_POS[inside])))
    (p0, s0), (p1, s1) = ends
    return int(round(np.linalg.det(np.array([p1 - p0, s0, s1]))))


def largest_area_triangulation(loop, largest: bool = True, config: int | None = None):
    """The triangulation of `loop` (edge ids in order) of largest (or, `largest=False`, smallest) area at the edge
    midpoints with no diagonal between two vertices of one cube face, or None when every triangulation needs one.
    Among triangulations of equal area, the one whose diagonals have the largest summed `handedness` (given the
    case `config`), then the first split: every case then takes the rotated image of its rotated case's
    triangulation (a table that rotating the field only rotates), where breaking ties by split order alone did not.
    Dynamic programming over the polygon's sub-chains."""
    n = len(loop)
    sign = 1.0 if largest else -1.0

    def ok(i, j):
        return (j - i) % n in (1, n - 1) or not share_face(loop[i], loop[j])

    def hand(i, j):
        return 0 if j - i < 2 or config is None else handedness(config, loop[i], loop[j])

    @lru_cache(None)
    def best(i, j):
        if j - i < 2:
            return 0.0, 0, ()
        out = None
        for k in range(i + 1, j):
            left, right = best(i, k), best(k, j)
            if ok(i, k) and ok(k, j) and left is not None and right is not None:
                t = (loop[i], loop[k], loop[j])
                area = left[0] + right[0] + sign * _area(t)
                hands = left[1] + right[1] + hand(i, k) + hand(k, j)
                if out is None or area > out[0] + 1e-9 or (area > out[0] - 1e-9 and hands > out[1]):
                    out = (area, hands, left[2] + (t,) + right[2])
        return out

    r = best(0, n - 1)
    return None if r is None else list(r[2])


def _build():
    raw = []
    for config in range(256):
        tris = []
        for loop in _loops(config):
            if is_twisted_path(config):
                tris += twisted_path_triangulation(loop, config)
            else:
                tris += largest_area_triangulation(loop, len(loop) != SMALLEST_AREA_LOOP, config)
        raw.append(tris)
    # orient: for corner 0 alone inside, the normal must point away from corner 0 (toward the outside side)
    a, b, c = (_edge_mid(e) for e in raw[1][0])
    flip = np.dot(np.cross(b - a, c - a), [1, 1, 1]) < 0
    return [[(t[0], t[2], t[1]) if flip else t for t in tris] for tris in raw]


TRIANGLES = _build()
MAX_TRIANGLES = max(len(t) for t in TRIANGLES)


def header() -> str:
    rows = []
    for config, tris in enumerate(TRIANGLES):
        flat = [e for t in tris for e in t] + [-1] * (3 * MAX_TRIANGLES - 3 * len(tris))
        rows.append("    {" + ", ".join(f"{e:2d}" for e in flat) + "},  /* " + f"{config:3d} */")
    counts = ", ".join(str(len(t)) for t in TRIANGLES)
    return f"""// Generated by `python -m flowkernels.reference.mc_tables`; do not edit (see that module for the derivation).
#pragma once

// Initialisers only: mc_core.h places them in __constant__ memory (device) and static constexpr arrays (host).
#define FK_MAX_TRIANGLES {MAX_TRIANGLES}
// edge e joins corner kEdgeCorner[e] = (x | y << 1 | z << 2) and the corner one step along axis kEdgeAxis[e]
#define FK_EDGE_CORNER {{{", ".join(map(str, EDGE_CORNER))}}}
#define FK_EDGE_AXIS {{{", ".join(map(str, EDGE_AXIS))}}}
#define FK_TRI_COUNT {{{counts}}}
#define FK_TRI_EDGES {{ \\
""" + " \\\n".join(rows) + " \\\n}\n"


if __name__ == "__main__":
    print(header(), end="")
