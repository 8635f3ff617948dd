"""Marching cubes with ambiguous faces decided from values, as Lewiner's (scikit-image's) method does: a slow
float64 reference, and the variant tables every native driver reads, derived here (not copied).
`python -m flowkernels.reference.mc_ambiguity > csrc/mc_variants.h` writes the C++ header (a test checks it is
current); marching_cubes.md says how this differs from Lewiner and what each choice is worth in area.

Face rule. A face whose diagonal corners share a side (four crossings) is ambiguous. The asymptotic decider joins
its inside corners when the bilinear interpolant's saddle lies inside (value < level): with the face's corner
values relative to the level taken in an order fixed by the face, a = (0,0), b = (1,0), c = (1,1), d = (0,1) in the
face's own (u, v) axes (the same four grid points, in the same order, for both cells sharing the face), the inside
pair is joined iff |product of the inside pair| > |product of the outside pair|. A tie (saddle exactly at the
level) counts as outside, like a grid point exactly at the level: inside corners cut off separately, the sign rule
of `mc_tables`; so does a product that overflows (float64 grids only), where the comparison means nothing. Both
cells evaluate the same two products of the same four numbers, so they agree.

Cube rule. With the faces decided, the surface on the cube's boundary is a set of closed loops (as in `mc_tables`,
each face linking its crossings per its decision). A loop is triangulated with no edge between two vertices of one
cube face other than its segments (watertight whatever the neighbour does), choosing among those triangulations the
one of largest area at the edge midpoints, except a loop of 7 vertices (case 6, its face joined or not), which takes
the one of smallest area, as the 256-case table does (both measured choices: marching_cubes.md). A loop
of 8 or more vertices (only a joined face makes one: the sign rule's loops have at most 7) is fanned from a vertex
inside the cell (placed as scikit-image places its centre vertex: `centre_offset`), whether or not a triangulation
off the faces exists: 116 such loops have none, and where one exists Lewiner fans from the centre too and the fan
measured closer to his area. Of the interior ambiguities (Lewiner's cases 4, 6, 7, 10, 12, 13: tubes through the
cell) only case 4's is decided.

Twisted paths (Lewiner's cases 11 and 14: no ambiguous face, one loop of 6 vertices) draw the central
triangulation of `mc_tables` (scikit-image's), whatever the values.
"""
from __future__ import annotations

import itertools

import numpy as np

from .mc_tables import (CORNER_POS, EDGE_AXIS, EDGE_CORNER, FACE_EDGES, FACES, _edge_id, is_twisted_path,
                        largest_area_triangulation, SMALLEST_AREA_LOOP, twisted_path_triangulation)

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
    with np.errstate(over="ignore", invalid="ignore"):
        p_in, p_out = abs(inside[0] * inside[1]), abs(outside[0] * outside[1])
    return p_in > p_out and p_in < np.inf


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


CENTRE_FAN_MIN = 8  # loops this long are fanned from the cell centre
def _loop_triangles(loop, config):
    if is_twisted_path(config):
        return twisted_path_triangulation(loop, config)
    largest = len(loop) != SMALLEST_AREA_LOOP  # joined or not, as the 256-case table
    tris = largest_area_triangulation(loop, largest, config) if len(loop) < CENTRE_FAN_MIN else None
    if tris is None:  # fan from the cell centre: every edge from it crosses the cell's interior
        tris = [(CENTRE, loop[i], loop[(i + 1) % len(loop)]) for i in range(len(loop))]
    return tris


def _orient(tris):
    """mc_tables' winding: for corner 0 alone inside, the normal points away from corner 0."""
    return [(t[0], t[2], t[1]) for t in tris]


def body_diagonal_pair(config: int):
    """Lewiner's case 4: the corners (c, 7 - c) when they are the only two on their side of the level (the cell's
    interior then decides whether they are joined by a tube), else None."""
    for side in (config, 255 - config):
        if bin(side).count("1") == 2:
            c = (side & -side).bit_length() - 1
            if side == (1 << c | 1 << (7 - c)):
                return c, 7 - c
    return None


def _tube(tris):
    """Case 4's tube: the two corners' triangles (p, q, r), (u, v, w) replaced by a band of 6 triangles joining
    them. Each triangle keeps one of the 6 face segments in its direction (the neighbours still draw them the other
    way) and takes the vertex of the other loop whose edge is along the third axis, the one between the segment's
    ends around the diagonal; every other edge of the band crosses the cell's interior."""
    a, b = tris
    band = []
    for loop, other in ((a, b), (b, a)):
        for n in range(3):
            p, q = loop[n], loop[(n + 1) % 3]
            third = 3 - EDGE_AXIS[p] - EDGE_AXIS[q]
            band.append((p, q, next(e for e in other if EDGE_AXIS[e] == third)))
    return band


def interior_joins(vals, config: int) -> bool:
    """Case 4 (corners c, 7 - c alone on their side): does the trilinear interpolant join them through the cell?
    In the frame where they are corners 0 and 7 and negative, the slice z = t is bilinear with corner values A, B,
    C, D (the linear interpolations of the cube's four z edges at t; B, D >= 0); its A and C corners are joined
    where A < 0, C < 0 and A C > B D. A C - B D is quadratic in t and <= 0 where A or C reaches 0, so the corners
    are joined iff it is concave with its vertex t* in (0, 1) and there A < 0, C < 0 and A C > B D (then the
    cube's z edges at corners 0 and 7 carry the path to t*). The drivers evaluate the same operations in the same
    order in double (a test checks it against a flood fill of the interpolant)."""
    c0, c1 = body_diagonal_pair(config)
    sign = 1.0 if config >> c0 & 1 else -1.0
    e = [sign * vals[n ^ c0] for n in range(8)]
    with np.errstate(over="ignore", invalid="ignore"):  # float64 grids near its range: inf / NaN compare false
        da, db, dc, dd = e[4] - e[0], e[5] - e[1], e[7] - e[3], e[6] - e[2]
        q2 = da * dc - db * dd
        q1 = e[0] * dc + e[3] * da - e[1] * dd - e[2] * db
        if not q2 < 0.0:
            return False
        t = -q1 / (2.0 * q2)
        if not 0.0 < t < 1.0:
            return False
        a, b, c, d = e[0] + da * t, e[1] + db * t, e[3] + dc * t, e[2] + dd * t
        return a < 0.0 and c < 0.0 and a * c > b * d


def _build():
    table = {}
    for config in range(256):
        faces = AMBIGUOUS[config]
        for bits in range(1 << len(faces)):
            joined = {f for n, f in enumerate(faces) if bits >> n & 1}
            loops = _loops(config, joined)
            table[config, bits] = _orient([t for loop in loops for t in _loop_triangles(loop, config)])
        if body_diagonal_pair(config) is not None:  # case 4: its interior decides a second variant, the tube
            table[config, 1] = _tube(table[config, 0])
    return table
VARIANTS = _build()


def face_bits(vals, config: int) -> int:
    """Bit n set: the n-th ambiguous face of `config` joins its inside corners (vals: the 8 corner values minus the
    level, in corner order); for case 4 (no ambiguous face), bit 0: its interior joins its two corners."""
    bits = 0
    for n, f in enumerate(AMBIGUOUS[config]):
        if face_joins_inside(*(vals[c] for c in _face_grid_order(f))):
            bits |= 1 << n
    if body_diagonal_pair(config) is not None and interior_joins(vals, config):
        bits |= 1
    return bits


def cell_triangles(vals, config: int):
    """Triangles (edge slots, CENTRE for the centre vertex) of one cell; vals relative to the level."""
    return VARIANTS[config, face_bits(vals, config)]


CENTRE_EPS = float(np.finfo(np.float64).eps)
CENTRE_MARGIN = 1.0 / 1024.0


def centre_offset(vals):
    """A centre vertex's place in its cell (vals: the corners minus the level): the corners' mean weighted by
    1 / (CENTRE_EPS + |value|), as scikit-image places it (Lewiner's C++ takes the mean of the edge vertices; the
    weighted mean measured closer to scikit-image's area, marching_cubes.md), each coordinate kept CENTRE_MARGIN
    inside the cell so that a corner at the level cannot put it on an edge vertex."""
    w = np.array([1.0 / (CENTRE_EPS + abs(v)) for v in vals])
    with np.errstate(invalid="ignore"):  # every difference overflowing: no weight, the margin clamp decides
        f = (w[:, None] * np.array(CORNER_POS, dtype=float)).sum(axis=0) / w.sum()
    return np.array([min(max(x, CENTRE_MARGIN) if x == x else CENTRE_MARGIN, 1.0 - CENTRE_MARGIN) for x in f])


def marching_cubes_decided(grid, level: float = 0.0):
    """(verts, faces) in index space, float64, cell by cell: the `mc_tables` vertices (one per crossed grid edge)
    followed by the centre vertices of the cells that need one. Cells with a non-finite corner emit nothing."""
    g = np.asarray(grid, dtype=np.float64)
    keys, tris = {}, []
    for i, j, k in itertools.product(*(range(n - 1) for n in g.shape)):
        raw = [g[i + dx, j + dy, k + dz] for dx, dy, dz in CORNER_POS]
        if not np.isfinite(raw).all():
            continue
        with np.errstate(over="ignore"):
            vals = [v - level for v in raw]  # the decider's input (an overflow to inf compares as a tie)
        config = sum(1 << c for c, v in enumerate(raw) if v < level)
        cell = cell_triangles(vals, config) if 0 < config < 255 else []
        pos = {}
        for e in range(12):
            c0 = EDGE_CORNER[e]
            c1 = c0 | 1 << EDGE_AXIS[e]
            if (config >> c0 & 1) != (config >> c1 & 1):
                p = np.array((i, j, k), dtype=float) + CORNER_POS[c0]
                v0, v1 = raw[c0], raw[c1]
                with np.errstate(over="ignore"):
                    d = v1 - v0
                # values further apart than float64 holds: interpolate their halves, as the drivers do
                p[EDGE_AXIS[e]] += (level - v0) / d if np.isfinite(d) else (level / 2 - v0 / 2) / (v1 / 2 - v0 / 2)
                pos[e] = ((i + CORNER_POS[c0][0], j + CORNER_POS[c0][1], k + CORNER_POS[c0][2], EDGE_AXIS[e]), p)
        if any(CENTRE in t for t in cell):
            pos[CENTRE] = ((i, j, k, 3), np.array((i, j, k), dtype=float) + centre_offset(vals))
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


def _cube_pieces(config: int, joined_mask: int) -> int:
    """Inside pieces of a cube: inside corners joined along its edges and across its joined faces (bit f)."""
    links = [(c, c | 1 << a) for a in range(3) for c in range(8) if not (c >> a) & 1]
    for f in range(6):
        if joined_mask >> f & 1:
            a, b, c, d = _face_grid_order(f)
            links += [(a, c), (b, d)]  # only the inside pair links: the outside pair's corners are outside
    parent = list(range(8))

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in links:
        if config >> a & 1 and config >> b & 1:
            parent[root(a)] = root(b)
    return len({root(c) for c in range(8) if config >> c & 1})


_CUBE_PIECES = np.array([[_cube_pieces(c, m) for m in range(64)] for c in range(256)])


def decided_euler_characteristic(grid, level: float = 0.0) -> int:
    """Euler characteristic of the region {value < level} that the value-decided mesh encloses, from the grid
    alone (no triangles), as `marching_cubes.inside_euler_characteristic` counts it for the sign rule: a joined
    face holds one inside piece instead of two, and links its two inside corners in both cubes sharing it; a
    case-4 cube whose interior is joined counts one less."""
    g = np.asarray(grid, dtype=np.float64) - level
    inside = g < 0
    if inside[[0, -1]].any() or inside[:, [0, -1]].any() or inside[:, :, [0, -1]].any():
        raise ValueError("the inside region touches the grid boundary: the surface is not closed")
    n = inside.shape
    config = np.zeros(tuple(m - 1 for m in n), dtype=np.int64)
    for c, (dx, dy, dz) in enumerate(CORNER_POS):
        config |= inside[dx:n[0] - 1 + dx, dy:n[1] - 1 + dy, dz:n[2] - 1 + dz].astype(np.int64) << c
    mask = np.zeros_like(config)
    chi = 0
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        moved = np.moveaxis(g, (axis, u, v), (0, 1, 2))  # a, b, c, d = (0,0), (1,0), (1,1), (0,1) in (u, v)
        a, b, c, d = moved[:, :-1, :-1], moved[:, 1:, :-1], moved[:, 1:, 1:], moved[:, :-1, 1:]
        ambiguous = ((a < 0) == (c < 0)) & ((b < 0) == (d < 0)) & ((a < 0) != (b < 0))
        with np.errstate(over="ignore", invalid="ignore"):
            p_in = np.abs(np.where(a < 0, a * c, b * d))
            p_out = np.abs(np.where(a < 0, b * d, a * c))
        joined = ambiguous & (p_in > p_out) & (p_in < np.inf)
        square = (a < 0).astype(np.int64) + (b < 0) + (c < 0) + (d < 0)  # corners inside; pieces below
        pieces = np.where(ambiguous, 2 - joined, square.clip(0, 1))
        chi -= int(pieces.sum())
        back = np.moveaxis(joined, (0, 1, 2), (axis, u, v))  # [face position along axis, cell, cell]
        for side in (0, 1):
            sl = [slice(None)] * 3
            sl[axis] = slice(side, n[axis] - 1 + side)
            mask |= back[tuple(sl)].astype(np.int64) << (2 * axis + side)
        along = np.moveaxis(inside, axis, 0)
        chi += int((along[:-1] | along[1:]).sum())
    chi += int(_CUBE_PIECES[config, mask].sum())
    # a case-4 cell whose interior joins its pair: one piece instead of two (pair inside), or the inside pierced
    # by the outside tube, a solid torus (chi 0 instead of 1): one less either way
    case4 = np.array([body_diagonal_pair(c) is not None for c in range(256)])
    for i, j, k in zip(*np.nonzero(case4[config])):
        vals = [g[i + dx, j + dy, k + dz] for dx, dy, dz in CORNER_POS]
        chi -= int(interior_joins(vals, int(config[i, j, k])))
    return chi - int(inside.sum())


def trilinear_joins(vals, c0: int, c1: int, n: int = 41) -> bool:
    """Does the trilinear interpolant of a cell (vals: corner values minus the level) connect corners c0 and c1
    through the region on their side of the level? Flood fill of that region sampled on an n^3 lattice of the cell:
    a slow check (the drivers do not decide cell interiors), used to tell a real tube from a missing one."""
    from scipy import ndimage
    t = np.linspace(0.0, 1.0, n)
    x, y, z = np.meshgrid(t, t, t, indexing="ij")
    f = sum(vals[c] * (x if c & 1 else 1 - x) * (y if c >> 1 & 1 else 1 - y) * (z if c >> 2 & 1 else 1 - z)
            for c in range(8))
    region = f < 0 if vals[c0] < 0 else f >= 0
    labels, _ = ndimage.label(region)
    at = [tuple((n - 1) * p for p in CORNER_POS[c]) for c in (c0, c1)]
    return labels[at[0]] != 0 and labels[at[0]] == labels[at[1]]


def body_diagonal_cells(grid, level: float = 0.0):
    """Cells of Lewiner's case 4 in a grid, with whether the trilinear interpolant joins their two corners:
    [((i, j, k), joined)]. Where it does not, scikit-image may still draw a tube (marching_cubes.md: its interior
    test for this case falls through), and its area differs from ours there."""
    g = np.asarray(grid, dtype=np.float64) - level
    n = g.shape
    config = np.zeros(tuple(m - 1 for m in n), dtype=np.int64)
    finite = np.ones(config.shape, dtype=bool)
    for c, (dx, dy, dz) in enumerate(CORNER_POS):
        corner = g[dx:n[0] - 1 + dx, dy:n[1] - 1 + dy, dz:n[2] - 1 + dz]
        config |= (corner < 0).astype(np.int64) << c
        finite &= np.isfinite(corner)
    case4 = np.array([body_diagonal_pair(c) is not None for c in range(256)])
    out = []
    for i, j, k in zip(*np.nonzero(case4[config] & finite)):
        vals = [g[i + dx, j + dy, k + dz] for dx, dy, dz in CORNER_POS]
        out.append(((int(i), int(j), int(k)), trilinear_joins(vals, *body_diagonal_pair(int(config[i, j, k])))))
    return out


def header() -> str:
    """csrc/mc_variants.h: the variant tables in the layout the native drivers read."""
    keys = sorted(VARIANTS)
    base, at, pairs = [], 0, []
    for config in range(256):
        base.append(at)
        pair = body_diagonal_pair(config)
        at += 2 if pair else 1 << len(AMBIGUOUS[config])
        pairs.append(-1 if pair is None else pair[0] | (0 if config >> pair[0] & 1 else 4))
    most = max(len(t) for t in VARIANTS.values())
    decided = ", ".join(str(int(n > 1)) for n in np.diff(base + [at]))
    rows = []
    for n, (config, bits) in enumerate(keys):
        assert n == base[config] + bits
        flat = [e for t in VARIANTS[config, bits] for e in t]
        flat += [-1] * (3 * most - len(flat))
        rows.append("    {" + ",".join(f"{e:2d}" for e in flat) + "},  /* " + f"{config:3d} {bits:2d} */")
    faces = ", ".join("{" + ", ".join(map(str, _face_grid_order(f))) + "}" for f in range(6))
    masks = ", ".join(str(sum(1 << f for f in AMBIGUOUS[c])) for c in range(256))
    counts = ", ".join(str(len(VARIANTS[k])) for k in keys)
    centre = ", ".join(str(int(any(CENTRE in t for t in VARIANTS[k]))) for k in keys)
    return f"""// Generated by `python -m flowkernels.reference.mc_ambiguity`; do not edit (see that module for the derivation).
#pragma once

// Variant v = FK_VARIANT_BASE[case] + decisions: bit n of the decisions set when the n-th ambiguous face of the
// case (faces in order, FK_AMBIGUOUS_FACES: bit f) joins its inside corners. Edge slot {CENTRE} is the cell-centre
// vertex.
#define FK_VARIANTS {len(keys)}
#define FK_MAX_VARIANT_TRIANGLES {most}
#define FK_CENTRE_SLOT {CENTRE}
// Face f's corners a, b, c, d at (0,0), (1,0), (1,1), (0,1) of its (u, v) axes: the same grid points, in the
// same order, for the two cells sharing the face.
#define FK_FACE_CORNERS {{{faces}}}
#define FK_AMBIGUOUS_FACES {{{masks}}}
// Case 4 (two body-diagonal corners alone on their side; no ambiguous face): its lower corner c (0..3), plus 4 when
// the pair lies outside; -1 for other cases. Decision bit 0: the interior joins the pair (a tube).
#define FK_INTERIOR_PAIR {{{", ".join(map(str, pairs))}}}
// 1 where the case has more than one variant: its cells read their values.
#define FK_DECIDED_CASE {{{decided}}}
#define FK_VARIANT_BASE {{{", ".join(map(str, base))}}}
#define FK_VARIANT_TRI_COUNT {{{counts}}}
#define FK_VARIANT_CENTRE {{{centre}}}
#define FK_VARIANT_TRI_EDGES {{ \\
""" + " \\\n".join(rows) + " \\\n}\n"


if __name__ == "__main__":
    print(header(), end="")
