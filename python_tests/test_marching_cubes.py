"""Marching cubes against the plain Python reference, analytic shapes, scikit-image, and mesh invariants."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkernels as fk
from flowkernels.marching_cubes import CPU_METHODS
from flowkernels.reference import mc_ambiguity, mc_tables
from flowkernels.reference.mc_ambiguity import cell_triangles, marching_cubes_decided

ROOT = Path(__file__).resolve().parents[1]


def assert_same_as_reference(grid, level=0.0):
    mesh = fk.marching_cubes(np.asarray(grid), level)
    v, f = marching_cubes_decided(grid, level)
    assert mesh.verts.shape == v.shape and mesh.faces.shape == f.shape
    np.testing.assert_allclose(mesh.verts, v, atol=2e-6)
    np.testing.assert_array_equal(mesh.faces, f)
    return mesh


def check_closed_mesh(verts, faces, euler):
    """Watertight, consistently wound (each directed edge once), outward (positive volume), right topology."""
    verts, faces = np.asarray(verts, dtype=np.float64), np.asarray(faces)
    assert np.isfinite(verts).all() and faces.min() >= 0 and faces.max() < len(verts)
    assert len(np.unique(faces)) == len(verts), "unreferenced vertices"
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed), "a directed edge repeats: inconsistent winding"
    undirected = np.sort(directed, axis=1)
    _, counts = np.unique(undirected, axis=0, return_counts=True)
    assert (counts == 2).all(), "boundary or non-manifold edges: not watertight"
    assert len(verts) - len(counts) + len(faces) == euler
    a, b, c = (verts[faces[:, i]] for i in range(3))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()
    assert volume > 0, "faces wind inward"
    return area, volume


def sphere_sdf(n, r=0.6, lo=-1.0, hi=1.0, dtype=np.float64):
    x = np.linspace(lo, hi, n)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return (np.sqrt(X**2 + Y**2 + Z**2) - r).astype(dtype)


def torus_sdf(n, R=0.55, r=0.25):
    x = np.linspace(-1, 1, n)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return np.sqrt((np.sqrt(X**2 + Y**2) - R) ** 2 + Z**2) - r


def test_generated_table_headers_are_current():
    assert (ROOT / "csrc" / "mc_tables.h").read_text() == mc_tables.header()
    assert (ROOT / "csrc" / "mc_variants.h").read_text() == mc_ambiguity.header()


@pytest.mark.parametrize("config", range(256))
def test_each_cube_configuration_alone_and_embedded(config):
    rng = np.random.default_rng(config)
    corners = np.array([(-1 if (config >> c) & 1 else 1) * rng.uniform(0.2, 1.0) for c in range(8)])
    cube = np.zeros((2, 2, 2))
    for c in range(8):
        cube[c & 1, (c >> 1) & 1, (c >> 2) & 1] = corners[c]
    mesh = assert_same_as_reference(cube)
    padded = np.full((4, 5, 4), 1.0)
    padded[1:3, 2:4, 1:3] = cube
    assert_same_as_reference(padded)
    assert len(mesh.faces) == len(cell_triangles(corners, config) if 0 < config < 255 else [])


@pytest.mark.parametrize("n,tol", [(24, 0.03), (48, 0.008), (96, 0.002)])
def test_sphere_area_and_volume_converge(n, tol):
    mesh = fk.marching_cubes(torch.from_numpy(sphere_sdf(n)), bounds=1.0)
    area, volume = check_closed_mesh(mesh.verts.numpy(), mesh.faces.numpy(), euler=2)
    assert abs(area / (4 * np.pi * 0.36) - 1) < tol
    assert abs(volume / (4 / 3 * np.pi * 0.216) - 1) < tol


def test_torus_topology_area_volume():
    mesh = fk.marching_cubes(torus_sdf(80), bounds=1.0)
    area, volume = check_closed_mesh(mesh.verts, mesh.faces, euler=0)
    assert abs(area / (4 * np.pi**2 * 0.55 * 0.25) - 1) < 0.01
    assert abs(volume / (2 * np.pi**2 * 0.55 * 0.25**2) - 1) < 0.01


def _gyroid(shape, rng, cells_per_period):
    X, Y, Z = np.meshgrid(*(np.arange(n) * 2 * np.pi / cells_per_period + rng.uniform(0, 6) for n in shape),
                          indexing="ij")
    return np.sin(X) * np.cos(Y) + np.sin(Y) * np.cos(Z) + np.sin(Z) * np.cos(X) + rng.uniform(-0.5, 0.5)


def assert_same_vertex_set(verts, want, atol=2e-5):
    """Equal as multisets up to atol: around every vertex of either set, both sets hold as many points within atol
    (sorting rows instead would split near-equal coordinates; two vertices can nearly meet at a grid point)."""
    from scipy.spatial import cKDTree
    ours, theirs = np.asarray(verts, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert len(ours) == len(theirs)
    trees = cKDTree(ours), cKDTree(theirs)
    for points in (ours, theirs):
        near = [tree.query_ball_point(points, atol, return_length=True) for tree in trees]
        np.testing.assert_array_equal(near[0], near[1])


@pytest.mark.parametrize("field", ["gyroid-16", "gyroid-odd", "sphere-16", "torus-odd", "gyroid-41"])
def test_matches_scikit_image_vertex_set_and_area(field):
    """The same edge vertices as scikit-image (both methods; cell-centre vertices differ in where they are added),
    and the area of its default (Lewiner) mesh within 5e-4 on smooth fields whose smallest side is >= 16 (the
    saddle-dense fields: test_mc_skimage_area.py)."""
    skimage = pytest.importorskip("skimage.measure")
    seed = torch.initial_seed()
    rng = np.random.default_rng(seed)
    level = 0.0
    if field == "gyroid-16":
        grid = _gyroid((16, 16, 16), rng, 32)
    elif field == "gyroid-odd":
        grid = _gyroid((37, 53, 29), rng, 32)
    elif field == "sphere-16":
        grid = sphere_sdf(16, r=rng.uniform(0.4, 0.8))
    elif field == "torus-odd":
        grid = torus_sdf(33)[:, 2:31, 5:]
    else:
        x = np.linspace(0, 2 * np.pi, 41)
        X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
        grid, level = np.sin(X) * np.cos(Y) + np.sin(Y) * np.cos(Z) + np.sin(Z) * np.cos(X), 0.2
    grid = grid + rng.normal(0, 1e-6, grid.shape)  # no exact ties at the level
    mesh = fk.marching_cubes(grid, level)

    def area(v, f):
        v = np.asarray(v, dtype=np.float64)
        return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()

    def edge_vertices(v):  # on a grid edge: two of the three coordinates are whole (cell-centre vertices are not)
        v = np.asarray(v, dtype=np.float64)
        return v[(v == np.round(v)).sum(1) >= 2]

    for method in ("lewiner", "lorensen"):
        sv, sf, _, _ = skimage.marching_cubes(grid, level, method=method)
        assert_same_vertex_set(edge_vertices(mesh.verts), edge_vertices(sv))
        if method == "lewiner":
            assert abs(area(mesh.verts, mesh.faces) / area(sv, sf) - 1) < 5e-4, seed


def test_nan_holes_emit_no_nan_and_no_dangling_vertices():
    grid = sphere_sdf(40)
    grid[:, :, 25:] = np.nan  # a decoder that never evaluated the top of the box
    grid[10:14, 10:30, 5:9] = np.inf
    mesh = assert_same_as_reference(grid)
    assert np.isfinite(mesh.verts).all() and len(mesh.faces) > 0
    assert mesh.faces.max() < len(mesh.verts) and len(np.unique(mesh.faces)) == len(mesh.verts)


@pytest.mark.parametrize("fill", [-1.0, 1.0, 0.0])
def test_constant_grids_are_empty(fill):
    mesh = fk.marching_cubes(torch.full((5, 6, 7), fill), 0.0 if fill else 0.0, return_normals=True)
    assert mesh.verts.shape == (0, 3) and mesh.faces.shape == (0, 3) and mesh.normals.shape == (0, 3)
    assert mesh.faces.dtype == torch.int64 and mesh.verts.dtype == torch.float32


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 2), (1, 5, 5), (3, 7, 2), (9, 4, 13)])
def test_tiny_and_non_cubic_grids(shape):
    assert_same_as_reference(np.random.default_rng(1).normal(size=shape))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_and_double_grids(dtype):
    grid = torch.from_numpy(sphere_sdf(21)).to(dtype)
    mesh = fk.marching_cubes(grid)
    want = fk.marching_cubes(grid.double())  # the same values, exactly representable in float64
    torch.testing.assert_close(mesh.verts, want.verts, atol=1e-5, rtol=0)
    assert torch.equal(mesh.faces, want.faces)


def test_non_contiguous_input():
    grid = torch.from_numpy(sphere_sdf(30)).float()
    view = grid.permute(2, 0, 1)[:, ::2, 1:]
    mesh = fk.marching_cubes(view)
    want = fk.marching_cubes(view.contiguous())
    assert torch.equal(mesh.verts, want.verts) and torch.equal(mesh.faces, want.faces)


def test_bounds_world_space_and_hunyuan_box():
    grid = sphere_sdf(17)
    idx = fk.marching_cubes(grid).verts
    lo, hi = np.array([-1.0, -2.0, 0.0]), np.array([1.0, 2.0, 3.0])
    step = (hi - lo) / 16
    for bounds in ([*lo, *hi], list(zip(lo, hi))):
        np.testing.assert_allclose(fk.marching_cubes(grid, bounds=bounds).verts, lo + idx * step, atol=1e-5)
    np.testing.assert_allclose(fk.marching_cubes(grid, bounds=(-1, 1)).verts, -1 + idx / 8, atol=1e-6)


def test_ascent_flips_winding_and_normals_point_outward():
    grid = torch.from_numpy(sphere_sdf(32)).float()
    down = fk.marching_cubes(grid, bounds=1.0, return_normals=True)
    up = fk.marching_cubes(grid, bounds=1.0, gradient_direction="ascent", return_normals=True)
    assert torch.equal(up.faces, down.faces[:, [0, 2, 1]])
    norms = down.normals.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    radial = down.verts / down.verts.norm(dim=1, keepdim=True)
    assert (down.normals * radial).sum(1).min() > 0.98
    assert torch.allclose(up.normals, -down.normals)


def test_batched_grids_give_a_list():
    grids = torch.stack([torch.from_numpy(sphere_sdf(20, r)) for r in (0.3, 0.5, 0.7)])
    meshes = fk.marching_cubes(grids)
    assert len(meshes) == 3
    for g, m in zip(grids, meshes):
        assert torch.equal(m.faces, fk.marching_cubes(g).faces)


BAD = {
    "ndim": (lambda: fk.marching_cubes(torch.zeros(4, 4)), "grid"),
    "int-dtype": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4, dtype=torch.int32)), "grid"),
    "numpy-int": (lambda: fk.marching_cubes(np.zeros((4, 4, 4), dtype=np.int64)), "grid"),
    "not-array": (lambda: fk.marching_cubes([[[0.0]]]), "grid"),
    "level-nan": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4), float("nan")), "level"),
    "level-type": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4), "0"), "level"),
    "bounds-inverted": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4), bounds=(1, -1)), "bounds"),
    "bounds-shape": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4), bounds=[1, 2, 3]), "bounds"),
    "bounds-text": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4), bounds="big"), "bounds"),
    "meta-device": (lambda: fk.marching_cubes(torch.zeros(3, 3, 3, device="meta")), "grid"),
    "direction": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4), gradient_direction="up"), "gradient_direction"),
    "cpu-method": (lambda: fk.marching_cubes(torch.zeros(4, 4, 4), cpu_method="fast"), "cpu_method"),
}


def test_level_may_be_a_one_value_tensor_or_array():
    """level=grid.mean() (a 0-d tensor) or a 0-d numpy array was refused ('level must be a number, got Tensor')."""
    grid = torch.randn(9, 10, 11, dtype=torch.float64)
    want = fk.marching_cubes(grid, float(grid.mean()))
    for level in (grid.mean(), grid.mean().reshape(1), np.asarray(float(grid.mean()))):
        got = fk.marching_cubes(grid, level)
        assert torch.equal(got.verts, want.verts) and torch.equal(got.faces, want.faces)
    for level in (grid[0, 0, :2], torch.tensor(True), np.array(["0"])):
        with pytest.raises(ValueError, match="level must be a number"):
            fk.marching_cubes(grid, level)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises_named_value_error(name):
    fn, match = BAD[name]
    with pytest.raises(ValueError, match=match):
        fn()


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(*(st.integers(1, 6),) * 3), seed=st.integers(0, 2**31), nan_frac=st.sampled_from([0, 0.1]),
       level=st.floats(-0.5, 0.5))
def test_random_grids_match_reference_and_invariants(shape, seed, nan_frac, level):
    rng = np.random.default_rng(seed)
    grid = rng.normal(size=shape)
    grid[rng.random(shape) < nan_frac] = np.nan
    mesh = assert_same_as_reference(grid, level)
    if len(mesh.faces):
        assert len(np.unique(mesh.faces)) == len(mesh.verts)
        assert (mesh.faces[:, 0] != mesh.faces[:, 1]).all() and (mesh.faces[:, 1] != mesh.faces[:, 2]).all()
        lo = np.zeros(3)
        assert (mesh.verts >= lo - 1e-6).all() and (mesh.verts <= np.array(shape) - 1 + 1e-6).all()


# Rows longer than one 64-point word, ending on and just past a word boundary, with NaN holes that straddle it.
@pytest.mark.parametrize("shape", [(3, 4, 70), (2, 3, 64), (4, 2, 65), (3, 3, 129), (5, 6, 200)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_multiword_rows_match_reference(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    grid = rng.normal(size=shape)
    grid[..., 60:68][rng.random(grid[..., 60:68].shape) < 0.3] = np.nan
    grid = grid.astype(dtype)
    if np.prod(shape) <= 3000:  # the plain reference is slow: small grids only
        assert_same_as_reference(grid.astype(np.float64) if dtype == np.float16 else grid, 0.1)
    meshes = {}
    for method in CPU_METHODS:
        meshes[method] = fk.marching_cubes(grid, 0.1, return_normals=True, cpu_method=method)
    a = meshes["bitplanes"]
    assert len(a.faces) > 0
    for b in meshes.values():
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(a.verts, b.verts)
        np.testing.assert_array_equal(a.normals, b.normals)


@pytest.mark.parametrize("case", ["gyroid-nan", "sphere-strided", "torus-bf16", "noise-inf-ascent", "uniform-rows"])
def test_bitplanes_match_the_cuda_row_walk_exactly(case):
    """The CPU bit-plane driver and the row walk (the CUDA driver's code, run on CPU threads) give the same mesh,
    bit for bit, on grids large enough for many words per row, NaN slabs and several threads."""
    rng = np.random.default_rng(7)
    if case == "gyroid-nan":
        x, z = np.linspace(0, 4 * np.pi, 97), np.linspace(0, 6 * np.pi, 150)
        X, Y, Z = np.meshgrid(x, x, z, indexing="ij")
        grid = torch.from_numpy(np.sin(X) * np.cos(Y) + np.sin(Y) * np.cos(Z) + np.sin(Z) * np.cos(X)).float()
        grid[40:43] = float("nan")                      # whole NaN slices (the slow path near them)
        grid[:, :, 63:66][torch.rand(grid[:, :, 63:66].shape) < 0.2] = float("nan")
        kwargs = dict(level=0.2)
    elif case == "sphere-strided":
        grid = torch.from_numpy(sphere_sdf(90, r=0.7)).float().permute(2, 0, 1)[:, ::2].contiguous().transpose(0, 2)
        kwargs = dict(bounds=1.0)
    elif case == "torus-bf16":
        grid = torch.from_numpy(torus_sdf(81)).to(torch.bfloat16)
        kwargs = dict(bounds=[-1, -1, -1, 1, 1, 1])
    elif case == "uniform-rows":  # whole rows on one side (skipped when all four around a cell row agree)
        grid = torch.from_numpy(sphere_sdf(70, r=0.5)).float()
        grid[:, 5:12] = -1.0                            # all-inside rows ...
        grid[:, 12:14] = 1.0                            # ... next to all-outside rows: crossings between them
        grid[20:30, 40:50] = float("nan")               # NaN rows (outside in the bits) by the sphere
        grid[-2:, :, :] = -0.5                          # inside rows on the last slices
        kwargs = dict(level=0.0)
    else:
        grid = torch.from_numpy(rng.normal(size=(23, 17, 140))).float()
        grid[5, 6, 20], grid[11, 3, 100], grid[20, 16, 139] = float("inf"), -float("inf"), float("inf")  # vector lanes
        kwargs = dict(level=0.3, gradient_direction="ascent")
    meshes = []
    for method in CPU_METHODS:
        meshes.append(fk.marching_cubes(grid, return_normals=True, num_threads=3, cpu_method=method, **kwargs))
    a = meshes[0]
    assert len(a.faces) > 100
    for b in meshes[1:]:
        assert torch.equal(a.faces, b.faces) and torch.equal(a.verts, b.verts) and torch.equal(a.normals, b.normals)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (runs on GPU machines)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_cuda_matches_cpu_exactly(dtype):
    grid = torch.from_numpy(torus_sdf(67)).to(dtype)
    grid[:, :, 50:] = float("nan")
    cpu = fk.marching_cubes(grid, bounds=1.0, return_normals=True)
    gpu = fk.marching_cubes(grid.cuda(), bounds=1.0, return_normals=True)
    assert gpu.verts.is_cuda and torch.equal(gpu.faces.cpu(), cpu.faces)
    torch.testing.assert_close(gpu.verts.cpu(), cpu.verts, atol=1e-6, rtol=0)
    torch.testing.assert_close(gpu.normals.cpu(), cpu.normals, atol=1e-5, rtol=0)


def test_import_never_loads_the_extension():
    import subprocess
    import sys
    code = "import sys, flowkernels; assert 'flowkernels._C' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_cpu_only_build_explains_how_to_rebuild(monkeypatch):
    from flowkernels import _native

    class CpuOnly:
        @staticmethod
        def cuda_built():
            return False

    monkeypatch.setattr(_native, "_module", CpuOnly)
    with pytest.raises(RuntimeError, match="FLOWKERNELS_CUDA=ON"):
        _native.require_cuda_build()
