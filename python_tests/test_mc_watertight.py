"""Marching cubes is watertight on every closed field: the table (every case next to every neighbour across a
shared face, with random and tie-prone values for the decided faces), then smooth random fields full of saddles on
every CPU method, checked against an Euler characteristic counted from the grid alone."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowkernels as fk
from flowkernels.marching_cubes import CPU_METHODS
from flowkernels.reference.marching_cubes import inside_euler_characteristic, marching_cubes_reference
from flowkernels.reference.mc_ambiguity import decided_euler_characteristic, marching_cubes_decided
from flowkernels.reference.mc_tables import CORNER_POS, EDGE_AXIS, EDGE_CORNER, FACE_EDGES, TRIANGLES


@pytest.fixture
def seed():
    """This test's fresh seed (set by conftest from FLOWKERNELS_TEST_SEED and the test's id), printed on failure."""
    value = torch.initial_seed()
    print(f"numpy seed {value}")
    return value


def check_watertight(verts, faces, level_grid=None, level=0.0, decided=True):
    """Every undirected edge used exactly twice, each direction once; no degenerate, duplicate or zero-area face;
    positive enclosed volume; and, given the grid, Euler characteristic 2 * chi(inside), the inside as the
    value-decided faces join it (decided=False: as the sign rule's table does)."""
    verts, faces = np.asarray(verts, dtype=np.float64), np.asarray(faces)
    assert len(faces) > 0 and np.isfinite(verts).all() and faces.min() >= 0 and faces.max() < len(verts)
    assert len(np.unique(faces)) == len(verts), "unreferenced vertices"
    assert ((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])).all()
    n = np.int64(len(verts))  # pairs and triples of ids encoded as one int64 (n < 2e6), so np.unique is 1-D
    tri = np.sort(faces, axis=1).astype(np.int64)
    assert len(np.unique((tri[:, 0] * n + tri[:, 1]) * n + tri[:, 2])) == len(faces), "duplicate faces"
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    undirected, uses = np.unique(directed.min(1) * n + directed.max(1), return_counts=True)
    assert (uses == 2).all(), f"{(uses != 2).sum()} edges not used exactly twice (uses {sorted(set(uses))})"
    assert len(np.unique(directed[:, 0] * n + directed[:, 1])) == len(directed), "a directed edge repeats"
    a, b, c = (verts[faces[:, i]] for i in range(3))
    assert (np.linalg.norm(np.cross(b - a, c - a), axis=1) > 0).all(), "zero-area faces"
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6 > 0, "faces wind inward"
    euler = len(verts) - len(undirected) + len(faces)
    if level_grid is not None:
        chi = decided_euler_characteristic if decided else inside_euler_characteristic
        assert euler == 2 * chi(level_grid, level)
    return euler


def test_no_triangle_edge_joins_two_vertices_of_one_cube_face_except_a_segment():
    """The cells on both sides of a face agree only on its segments; any other in-face edge may be drawn twice."""
    in_face = 0
    for config, tris in enumerate(TRIANGLES):
        uses = {}
        for t in tris:
            assert not any(set(t) <= face for face in FACE_EDGES), f"case {config}: triangle {t} lies in a face"
            for e0, e1 in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                uses[frozenset((e0, e1))] = uses.get(frozenset((e0, e1)), 0) + 1
        for pair, n in uses.items():
            if any(pair <= face for face in FACE_EDGES):
                in_face += 1
                assert n == 1, f"case {config}: in-face edge {sorted(pair)} used {n} times"
    assert in_face > 0


def _cell_triangles(config, origin):
    """The table's triangles of one cell, on global vertex keys (grid point, axis)."""
    out = []
    for tri in TRIANGLES[config]:
        keys = []
        for e in tri:
            p = tuple(o + d for o, d in zip(origin, CORNER_POS[EDGE_CORNER[e]]))
            keys.append(p + (EDGE_AXIS[e],))
        out.append(tuple(keys))
    return out


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_table_every_case_next_to_every_neighbour(axis):
    """Two cells sharing the face normal to `axis`, all 2^12 sign patterns of their 12 corners (each of the 256
    cases meets every neighbour it can have): every mesh edge on the shared face is drawn exactly twice, once in
    each direction, and no edge anywhere more than twice."""
    step = tuple(int(a == axis) for a in range(3))
    corners = sorted({tuple(c + s * d for c, d in zip(CORNER_POS[n], step)) for n in range(8) for s in (0, 1)})
    slot = {p: n for n, p in enumerate(corners)}

    def config_of(pattern, origin):
        return sum(1 << c for c in range(8)
                   if pattern >> slot[tuple(o + d for o, d in zip(origin, CORNER_POS[c]))] & 1)

    for pattern in range(1 << 12):
        directed = {}
        for origin in ((0, 0, 0), step):
            for t in _cell_triangles(config_of(pattern, origin), origin):
                for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                    assert (a, b) not in directed, f"pattern {pattern:#x}: directed edge repeats"
                    directed[(a, b)] = True
        for (a, b) in directed:
            on_face = a[axis] == b[axis] == 1 and a[3] != axis and b[3] != axis
            assert (b, a) in directed or not on_face, f"pattern {pattern:#x}: open edge on the shared face"
            assert sum(k in directed for k in ((a, b), (b, a))) <= 2


def pair_tiling(axis, seed, ties=False):
    """All 2^12 sign patterns of two cells sharing a face normal to `axis`, each in its own block with an outside
    margin, in one grid (values inside: -1..-0.2, outside: 0.2..1; ties: magnitudes from {0.25, 0.5, 1}, whose
    products on an ambiguous face often tie, i.e. the saddle lies exactly on the level)."""
    rng = np.random.default_rng(seed)
    block = [4, 4, 4]
    block[axis] = 5
    pair = [2, 2, 2]
    pair[axis] = 3
    grid = rng.uniform(0.2, 1.0, size=(16 * block[0], 16 * block[1], 16 * block[2]))
    patterns = np.arange(1 << 12)
    bits = (patterns[:, None] >> np.arange(12)) & 1  # corner order: C order over the pair's 2 x 2 x 3 points
    signs = np.where(bits == 1, -1.0, 1.0).reshape(16, 16, 16, *pair).transpose(0, 3, 1, 4, 2, 5)
    blocks = grid.reshape(16, block[0], 16, block[1], 16, block[2])  # a view: writes land in grid
    mags = rng.choice([0.25, 0.5, 1.0], size=signs.shape) if ties else rng.uniform(0.2, 1.0, size=signs.shape)
    blocks[:, 1:1 + pair[0], :, 1:1 + pair[1], :, 1:1 + pair[2]] = signs * mags
    return grid


@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_every_case_next_to_every_neighbour_on_each_cpu_method(axis, ties, seed):
    """Every variant next to every neighbour it can have: both cells decide their shared face from the same four
    values, ties included (the products are exact in double for every dtype but fp64, where they round alike),
    in every dtype (the topology counted from the values the dtype holds)."""
    grid = pair_tiling(axis, seed, ties)
    tied = 0
    for a in range(3):  # ambiguous faces whose two diagonal products are equal: the saddle on the level
        m = np.moveaxis(grid, (a, (a + 1) % 3, (a + 2) % 3), (0, 1, 2))
        p, q, r, t = m[:, :-1, :-1], m[:, 1:, :-1], m[:, 1:, 1:], m[:, :-1, 1:]
        amb = ((p < 0) == (r < 0)) & ((q < 0) == (t < 0)) & ((p < 0) != (q < 0))
        tied += int((amb & (np.abs(p * r) == np.abs(q * t))).sum())
    assert (tied > 0) == ties
    for dtype in (np.float64, np.float32, np.float16, torch.bfloat16):
        g = torch.from_numpy(grid).to(dtype) if dtype is torch.bfloat16 else grid.astype(dtype)
        meshes = [fk.marching_cubes(g, 0.0, return_normals=True, cpu_method=m) for m in CPU_METHODS]
        held = (g.double().numpy() if dtype is torch.bfloat16 else g.astype(np.float64))
        check_watertight(meshes[0].verts, meshes[0].faces, held)
        for m in meshes[1:]:
            np.testing.assert_array_equal(np.asarray(m.faces), np.asarray(meshes[0].faces))
            np.testing.assert_array_equal(np.asarray(m.verts), np.asarray(meshes[0].verts))
            np.testing.assert_array_equal(np.asarray(m.normals), np.asarray(meshes[0].normals))


def test_issue_reproducer_is_watertight():
    g = np.ones((4, 5, 4))
    g[1:3, 1:4, 1:3] = [[[-1, -1], [1, -1], [-1, -1]], [[-1, 1], [-1, 1], [-1, 1]]]
    for method in CPU_METHODS:
        mesh = fk.marching_cubes(g, 0.0, cpu_method=method)
        check_watertight(mesh.verts, mesh.faces, g)
    v, f = marching_cubes_reference(g, 0.0)  # the sign rule's table alone is watertight too
    check_watertight(v, f, g, decided=False)
    v, f = marching_cubes_decided(g, 0.0)
    check_watertight(v, f, g)


def smooth_field(kind, shape, rng):
    """A smooth field with many saddles, outside (> 0) on the grid's boundary so the surface is closed."""
    axes = [np.linspace(0, 1, n) for n in shape]
    if kind == "gaussians":  # bumps of both signs that overlap: necks, tunnels and saddles between them
        X, Y, Z = np.meshgrid(*axes, indexing="ij")
        field = np.full(shape, 0.35)
        for _ in range(rng.integers(6, 20)):
            c, s = rng.uniform(0.15, 0.85, 3), rng.uniform(0.06, 0.18)
            amp = rng.choice([-1.0, 0.6]) * rng.uniform(0.5, 1.5)
            field += amp * np.exp(-((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) / (2 * s * s))
    else:  # trilinear noise: random lattice values interpolated along each axis (ambiguous faces everywhere)
        coarse = rng.normal(size=tuple(rng.integers(3, 8, size=3)))
        field = coarse
        for axis, n in enumerate(shape):
            src = np.linspace(0, 1, field.shape[axis])
            field = np.apply_along_axis(lambda line: np.interp(axes[axis], src, line), axis, field)
        field = field + 0.2
    field[[0, -1]] = field[:, [0, -1]] = field[:, :, [0, -1]] = 1.0
    # Keep values off the level by a margin a float32 position resolves (no vertex rounds onto a grid point).
    return np.where(np.abs(field) < 1e-3, np.copysign(1e-3, field), field)


def nan_holes(grid, rng):
    """NaN balls where every point within one step lies on one side: no cell the surface crosses loses a corner."""
    inside = grid < 0
    same = np.ones_like(inside)
    for shift in np.ndindex(3, 3, 3):
        sl = tuple(slice(s, n - 2 + s) for s, n in zip(shift, grid.shape))
        core = tuple(slice(1, n - 1) for n in grid.shape)
        same[core] &= inside[sl] == inside[core]
    same[[0, -1]] = same[:, [0, -1]] = same[:, :, [0, -1]] = False
    holed = grid.copy()
    idx = np.indices(grid.shape).reshape(3, -1).T
    for _ in range(3):
        c, r = rng.uniform(0, grid.shape), rng.uniform(1.5, 4)
        ball = (np.linalg.norm(idx - c, axis=1) < r).reshape(grid.shape)
        holed[ball & same] = np.nan
    return holed


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["gaussians", "trilinear"]),
       shape=st.sampled_from([(37, 53, 29), (19, 23, 17), (31, 17, 25), (16, 16, 16), (9, 11, 13), (45, 21, 33)]),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_smooth_random_fields_are_watertight_with_the_known_topology(kind, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    grid = smooth_field(kind, shape, rng).astype(dtype)
    meshes = [fk.marching_cubes(grid, 0.0, cpu_method=m) for m in CPU_METHODS]
    holed = nan_holes(grid, rng)
    meshes += [fk.marching_cubes(holed, 0.0, cpu_method=m) for m in CPU_METHODS]
    want = meshes[0]
    if len(want.faces) == 0:
        assert (grid >= 0).all()
        return
    check_watertight(want.verts, want.faces, grid.astype(np.float64))
    for m in meshes[1:]:  # every method, with and without NaN holes away from the surface: the same mesh
        np.testing.assert_array_equal(m.faces, want.faces)
        np.testing.assert_array_equal(m.verts, want.verts)
    if grid.size <= 2000:
        v, f = marching_cubes_decided(grid, 0.0)
        np.testing.assert_array_equal(f, want.faces)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sdf_unions_have_the_analytic_topology(dtype, seed):
    """k separated spheres (Euler characteristic 2k) and a torus (0) at an odd size."""
    rng = np.random.default_rng(seed)
    shape = (37, 53, 29)
    idx = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64)
    sdf, centres = np.full(shape, np.inf), []
    while len(centres) < 4:
        c, r = rng.uniform([5, 5, 5], np.array(shape) - 6), rng.uniform(2.5, 4.5)
        if all(np.linalg.norm(c - c2) > r + r2 + 2 for c2, r2 in centres):
            centres.append((c, r))
            sdf = np.minimum(sdf, np.linalg.norm(idx - c, axis=-1) - r)
    mesh = fk.marching_cubes(sdf.astype(dtype), 0.0)
    assert check_watertight(mesh.verts, mesh.faces) == 2 * len(centres)
    q = np.sqrt((idx[..., 0] - 18) ** 2 + (idx[..., 1] - 26) ** 2)
    torus = np.sqrt((q - 11) ** 2 + (idx[..., 2] - 14) ** 2) - 4.3
    mesh = fk.marching_cubes(torus.astype(dtype), 0.0)
    assert check_watertight(mesh.verts, mesh.faces) == 0
