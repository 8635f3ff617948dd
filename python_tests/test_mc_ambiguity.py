"""The value-decided marching cubes reference (asymptotic face decider, flowkernels.reference.mc_ambiguity): its
tables stay watertight whatever each face decides, the two cells sharing a face decide it alike from its values
(ties included), and whole fields come out watertight. How far the drivers' area is from scikit-image's
(Lewiner's) is tested in test_mc_skimage_area.py and measured in marching_cubes.md."""
import itertools

import numpy as np
import pytest
import torch

from flowkernels.reference.marching_cubes import marching_cubes_reference
from flowkernels.reference.mc_ambiguity import (AMBIGUOUS, CENTRE, CENTRE_FAN_MIN, VARIANTS, _loops,
                                                body_diagonal_pair, cell_triangles, in_face,
                                                interior_joins, marching_cubes_decided, trilinear_joins)
from flowkernels.reference.mc_tables import (CORNER_POS, EDGE_AXIS, EDGE_CORNER, FACE_EDGES, TRIANGLES,
                                             TWISTED_PATH_DIAGONAL, _edge_id, is_twisted_path)

from test_mc_watertight import check_watertight, smooth_field


def test_every_variant_keeps_its_edges_off_the_cube_faces():
    """No triangle in a face, and the only edges joining two vertices of one face are its segments (once each), in
    every case under every combination of face decisions; with no face joined the sign-rule table's loops return."""
    centre = 0
    for (config, bits), tris in VARIANTS.items():
        uses = {}
        for t in tris:
            assert not in_face(t), (config, bits, t)
            for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                uses[frozenset((a, b))] = uses.get(frozenset((a, b)), 0) + 1
        for pair, n in uses.items():
            if CENTRE not in pair and any(pair <= face for face in FACE_EDGES):
                assert n == 1, (config, bits, sorted(pair))
        centre += any(CENTRE in t for t in tris)
        if bits == 0:  # the sign rule's loops: same vertices and number of triangles as mc_tables
            assert sorted({e for t in tris for e in t}) == sorted({e for t in TRIANGLES[config] for e in t})
            assert len(tris) == len(TRIANGLES[config])
    assert 0 < centre < len(VARIANTS) // 3  # only some joined variants have a centre vertex
    for (config, bits), tris in VARIANTS.items():  # exactly those with a loop of CENTRE_FAN_MIN or more vertices
        if body_diagonal_pair(config) is not None:
            continue  # case 4's tube: a band, no loop of its own
        joined = {f for n, f in enumerate(AMBIGUOUS[config]) if bits >> n & 1}
        long_loop = any(len(loop) >= CENTRE_FAN_MIN for loop in _loops(config, joined))
        assert long_loop == any(CENTRE in t for t in tris), (config, bits)


def _pair_triangles(values, axis):
    """Triangles, on global vertex keys, of the two cells sharing the face normal to `axis` of a 2 x 2 x 3 block."""
    step = tuple(int(a == axis) for a in range(3))
    out = []
    for origin in ((0, 0, 0), step):
        vals = [values[tuple(o + d for o, d in zip(origin, CORNER_POS[c]))] for c in range(8)]
        config = sum(1 << c for c, v in enumerate(vals) if v < 0)
        for t in cell_triangles(vals, config) if 0 < config < 255 else []:
            keys = []
            for e in t:
                if e == CENTRE:
                    keys.append(origin + (3,))
                else:
                    p = tuple(o + d for o, d in zip(origin, CORNER_POS[EDGE_CORNER[e]]))
                    keys.append(p + (EDGE_AXIS[e],))
            out.append(tuple(keys))
    return out


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_neighbours_decide_their_shared_face_alike(axis):
    """Every sign pattern of two cells sharing a face (2^12), with random magnitudes and with magnitudes from
    {1, 2, 4}, whose products tie often (saddle exactly at the level): every mesh edge on the shared face is drawn
    exactly twice, once in each direction, so both cells took the same decision there."""
    seed = torch.initial_seed()
    rng = np.random.default_rng(seed)
    shape = [2, 2, 2]
    shape[axis] = 3
    points = list(np.ndindex(*shape))
    ties = 0
    for pattern in range(1 << 12):
        signs = np.array([-1.0 if pattern >> n & 1 else 1.0 for n in range(12)])
        for mags in (rng.uniform(0.05, 1.0, 12), rng.choice([1.0, 2.0, 4.0], 12)):
            values = dict(zip(points, signs * mags))
            directed = {}
            for t in _pair_triangles(values, axis):
                for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                    assert (a, b) not in directed, (seed, pattern, "directed edge repeats")
                    directed[a, b] = True
            for a, b in directed:
                on_face = a[axis] == b[axis] == 1 and a[3] not in (axis, 3) and b[3] not in (axis, 3)
                assert (b, a) in directed or not on_face, (seed, pattern, "open edge on the shared face")
            face = [values[p] for p in points if p[axis] == 1]
            ties += face[0] * face[3] == face[1] * face[2] and (face[0] < 0) == (face[3] < 0) != (face[1] < 0)
    assert ties > 0


@pytest.mark.parametrize("kind", ["gaussians", "trilinear"])
def test_decided_fields_are_watertight(kind):
    seed = torch.initial_seed()
    rng = np.random.default_rng(seed)
    grid = smooth_field(kind, (16, 19, 17), rng)
    verts, faces = marching_cubes_decided(grid, 0.0)
    check_watertight(verts, faces)
    v0, _ = marching_cubes_reference(grid, 0.0)  # the edge vertices are the sign-rule table's; centres come last
    np.testing.assert_allclose(verts[:len(v0)], v0, atol=1e-12)
    assert np.isfinite(verts).all() and len(verts) - len(v0) < 0.01 * len(v0) + 4  # centre vertices are rare



def test_case_4_interior_test_follows_the_trilinear_interpolant():
    """The closed-form interior test (the pair joined through the cell) against a flood fill of the interpolant on
    a 61^3 sample of the cell, in every case-4 configuration (pair inside or outside), away from ties."""
    seed = torch.initial_seed()
    rng = np.random.default_rng(seed)
    configs = [c for c in range(256) if body_diagonal_pair(c) is not None]
    assert len(configs) == 8
    joined = 0
    for n in range(400):
        config = configs[n % 8]
        vals = [(-1.0 if config >> c & 1 else 1.0) * rng.uniform(0.02, 1.0) ** 2 for c in range(8)]
        want = trilinear_joins(vals, *body_diagonal_pair(config), n=61)
        assert interior_joins(vals, config) == want, (seed, config, vals)
        joined += want
        assert len(VARIANTS[config, 1]) == 6 and len(VARIANTS[config, 0]) == 2  # the tube, the two corners
    assert 0 < joined < 400


def cube_rotations():
    """The cube's 24 rotations as permutations of the corners."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3), dtype=int)
            m[range(3), perm] = signs
            if round(np.linalg.det(m)) == 1:
                moved = [(m @ (2 * np.array(p) - 1) + 1) // 2 for p in CORNER_POS]
                out.append([int(q[0] | q[1] << 1 | q[2] << 2) for q in moved])
    return out


def mesh_edges(tris, corners=None):
    """A cell's triangles as their set of edges (pairs of cube edges), moved by a corner permutation if given."""
    def moved(e):
        if corners is None or e == CENTRE:
            return e
        return _edge_id(corners[EDGE_CORNER[e]], corners[EDGE_CORNER[e] | 1 << EDGE_AXIS[e]])
    return frozenset(frozenset(moved(e) for e in pair) for t in tris for pair in itertools.combinations(t, 2))


def test_twisted_paths_take_one_central_triangulation_whatever_the_values():
    """Each side's four corners a path of three edges (Lewiner's cases 11 and 14, 24 cases): one variant, the
    256-case table's, a central triangulation (a triangle of three diagonals) whose triangle leaves out the corners
    of the stated body diagonal, the same for a case and its complement; whether it is scikit-image's is checked
    against scikit-image (test_mc_skimage_area.py)."""
    twisted = [c for c in range(256) if is_twisted_path(c)]
    assert len(twisted) == 24 and all(255 - c in twisted for c in twisted)
    for config in twisted:
        assert (config, 1) not in VARIANTS and VARIANTS[config, 0] == TRIANGLES[config]
        tris = TRIANGLES[config]
        uses = [frozenset(p) for t in tris for p in itertools.combinations(t, 2)]
        central = [t for t in tris if all(uses.count(frozenset(p)) == 2 for p in itertools.combinations(t, 2))]
        assert len(tris) == 4 and len(central) == 1, (config, tris)
        c = TWISTED_PATH_DIAGONAL[min(config, 255 - config)]
        ends = {EDGE_CORNER[e] for e in central[0]} | {EDGE_CORNER[e] | 1 << EDGE_AXIS[e] for e in central[0]}
        assert ends == set(range(8)) - {c, 7 - c}, (config, central)
        assert mesh_edges(TRIANGLES[255 - config]) == mesh_edges(tris)


def test_rotating_a_case_rotates_its_triangulation():
    """Where the rotations that fix a case leave its triangulation unchanged, every rotation of the case takes the
    rotated triangulation, as Lewiner's tables do (so rotating a field rotates the mesh and keeps its area): only
    the four corners of one face (both diagonals are rotations of each other) and the twisted paths of four corners
    (a half turn fixes the case and swaps its two central triangulations; they take scikit-image's, whose
    orientation picks one, marching_cubes.md) cannot. Ties broken by the order of the loop's
    vertices alone gave 8 of the 21 rotation classes."""
    rotations, seen, free = cube_rotations(), set(), []
    for config in range(1, 255):
        if config in seen:
            continue
        orbit = {}
        for r in rotations:
            orbit.setdefault(sum(1 << r[c] for c in range(8) if config >> c & 1), []).append(r)
        seen |= set(orbit)
        if any(mesh_edges(TRIANGLES[config], r) != mesh_edges(TRIANGLES[config]) for r in orbit[config]):
            free.append(config)
            continue
        for other, rs in orbit.items():
            for r in rs:
                assert mesh_edges(TRIANGLES[config], r) == mesh_edges(TRIANGLES[other]), (config, other)
    assert free == [15, 27, 29], free
