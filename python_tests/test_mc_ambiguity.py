"""The value-decided marching cubes reference (asymptotic face decider, flowkernels.reference.mc_ambiguity): its
tables stay watertight whatever each face decides, the two cells sharing a face decide it alike from its values
(ties included), and whole fields come out watertight. How far it moves the area toward scikit-image's (Lewiner)
is measured in marching_cubes.md: on its own it is not within 5e-4 at 16^3 on every saddle-dense field, so no
test asserts that yet."""
import numpy as np
import pytest
import torch

from flowkernels.reference.marching_cubes import marching_cubes_reference
from flowkernels.reference.mc_ambiguity import (AMBIGUOUS, CENTRE, CENTRE_FAN_MIN, VARIANTS, _loops,
                                                body_diagonal_pair, cell_triangles, in_face, interior_joins,
                                                marching_cubes_decided, trilinear_joins)
from flowkernels.reference.mc_tables import CORNER_POS, EDGE_AXIS, EDGE_CORNER, FACE_EDGES, TRIANGLES

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
