"""flowkernels.data: the narrow-band distance core against float64 references, sampling laws, labels, bad inputs."""
import numpy as np
import pytest
import torch

from flowkernels import data
from flowkernels.reference import distance as ref

trimesh = pytest.importorskip("trimesh")


def _seed():
    return int(torch.randint(0, 2**31, ()).item())  # follows the per-test seed printed by conftest


def random_soup(rng, n_verts=40, n_faces=60):
    verts = rng.random((n_verts, 3))
    faces = rng.integers(0, n_verts, (n_faces, 3))
    faces[0] = [1, 1, 2]          # repeated vertex
    verts[5] = verts[6]           # coincident vertices
    faces[1] = [3, 5, 6]          # -> a sliver with two equal corners
    verts[7:10] = verts[7] + np.outer([0.0, 1.0, 2.0], rng.normal(size=3)) * 0.1  # collinear triangle
    faces[2] = [7, 8, 9]
    return verts, faces


def test_band_grid_matches_float64_reference_on_odd_anisotropic_grids():
    seed = _seed()
    rng = np.random.default_rng(seed)
    for shape, band in [((27, 41, 13), 0.12), ((1, 9, 5), 0.3), ((17, 3, 29), 0.05)]:
        verts, faces = random_soup(rng)
        origin = rng.uniform(-0.3, 0.1, 3)
        step = rng.uniform(0.02, 0.09, 3)
        got = data.udf_grid(verts, faces, origin, step, shape, band, num_threads=3).numpy()
        want = ref.band_grid(verts, faces, origin, step, shape, band)
        assert got.dtype == np.float32 and got.shape == shape
        np.testing.assert_allclose(got, want, atol=2e-6, err_msg=f"seed {seed} shape {shape}")
        assert (got <= np.float32(band)).all()


def test_band_grid_is_thread_count_independent():
    rng = np.random.default_rng(_seed())
    verts, faces = random_soup(rng, 200, 400)
    args = (verts, faces, (-0.1, -0.1, -0.1), (0.02, 0.025, 0.03), (61, 47, 39), 0.07)
    one = data.udf_grid(*args, num_threads=1)
    assert torch.equal(one, data.udf_grid(*args, num_threads=5))


def test_cuda_tile_decomposition_gives_the_cpu_grid_bit_for_bit():
    """The CUDA driver's per-triangle / per-tile logic (tile counts, scan, owner search, one column per lane, min
    on the float bits), run on the CPU: the same grid as the CPU driver, bit for bit (a min is order-free). Large
    triangles span many tiles; the odd shapes leave partial tiles on every side."""
    seed = _seed()
    rng = np.random.default_rng(seed)
    verts, faces = random_soup(rng, 60, 90)
    big = np.array([[-0.2, -0.1, 0.3], [1.3, 0.1, 0.5], [0.2, 1.2, 0.9]])  # one triangle over the whole grid
    verts, faces = np.concatenate([verts, big]), np.concatenate([faces, [[60, 61, 62]]])
    for shape, band in [((37, 29, 23), 0.09), ((1, 19, 11), 0.2), ((26, 3, 41), 0.05)]:
        origin = rng.uniform(-0.3, 0.1, 3)
        step = rng.uniform(0.02, 0.07, 3)
        cpu = data.udf_grid(verts, faces, origin, step, shape, band, num_threads=2)
        tiles = data._udf_grid_tiles(verts, faces, origin, step, shape, band)
        assert torch.equal(cpu.view(torch.int32), tiles.view(torch.int32)), f"seed {seed} shape {shape}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_grid_equals_cpu_grid():
    seed = _seed()
    rng = np.random.default_rng(seed)
    verts, faces = random_soup(rng, 200, 400)
    args = ((-0.1, -0.1, -0.1), (0.02, 0.025, 0.03), (61, 47, 39), 0.07)
    cpu = data.udf_grid(verts, faces, *args)
    gpu = data.udf_grid(torch.tensor(verts, device="cuda"), torch.tensor(faces, device="cuda"), *args)
    assert torch.equal(cpu.view(torch.int32), gpu.cpu().view(torch.int32)), f"seed {seed}"


def test_point_distance_matches_reference_near_and_far():
    seed = _seed()
    rng = np.random.default_rng(seed)
    verts, faces = random_soup(rng, 300, 500)
    pts = np.concatenate([rng.uniform(-2, 3, (700, 3)), verts[:50] + rng.normal(scale=1e-3, size=(50, 3)),
                          verts[:10]])
    got = data.point_distance(pts, verts, faces, num_threads=2)
    np.testing.assert_allclose(got, ref.mesh_distance(pts, verts, faces), rtol=2e-6, atol=2e-7,
                               err_msg=f"seed {seed}")


def test_bad_inputs_name_the_argument():
    v, f = np.random.default_rng(0).random((4, 3)), np.array([[0, 1, 2], [1, 2, 3]])
    for kwargs, match in [(dict(faces=np.array([[0, 1, 4]])), "faces"), (dict(faces=f.astype(float)), "faces"),
                          (dict(verts=np.full((4, 3), np.nan)), "verts"), (dict(verts=v[:, :2]), "verts"),
                          (dict(resolution=1), "resolution"), (dict(eps=-1.0), "eps"),
                          (dict(faces=np.zeros((0, 3), int)), "faces")]:
        args = dict(verts=v, faces=f, resolution=8, eps=0.1) | kwargs
        with pytest.raises(ValueError, match=match):
            data.watertight(**args)
    with pytest.raises(ValueError, match="band"):
        data.udf_grid(v, f, (0, 0, 0), (1, 1, 1), (2, 2, 2), float("nan"))
    with pytest.raises(ValueError, match="points"):
        data.point_distance(np.ones((3, 2)), v, f)


def _closed_box():
    # thick enough on every axis that the offset surface fits the original's 5%-padded grid (a thinner box's
    # shell is cut open by the grid's faces, in the original as here)
    box = trimesh.creation.box(extents=(1.0, 0.7, 0.5))
    return data.normalize_to_unit_box(box.vertices), np.asarray(box.faces)


@pytest.mark.parametrize("outer_only", [False, True])
def test_watertight_box_is_closed_and_oriented(outer_only):
    verts, faces = _closed_box()
    shell = data.watertight(verts, faces, 40, 0.02, outer_only, return_shell=True)
    mesh = trimesh.Trimesh(shell.verts, shell.faces, process=False)
    assert mesh.is_winding_consistent and mesh.volume > 0
    comps = trimesh.graph.connected_components(mesh.edges, nodes=np.arange(len(mesh.vertices)))
    assert len(comps) == (1 if outer_only else 2)
    # every vertex lies eps from the box (up to the grid's interpolation error)
    d = ref.mesh_distance(shell.verts[::7], verts, faces)
    assert np.abs(d - 0.02).max() < 0.25 * shell.step.max()
    # the box's anisotropic spacing is the original's linspace over the 5%-padded box
    lo, hi = verts.min(0), verts.max(0)
    np.testing.assert_allclose(shell.step, 1.1 * (hi - lo) / 39)


def test_sampling_laws_and_seeding():
    seed = _seed()
    verts, faces = _closed_box()
    pts, normals = data.sample_surface(verts, faces, 20000, seed)
    assert np.abs(ref.mesh_distance(pts[:300], verts, faces)).max() < 1e-12
    # area-weighted: each side of the box gets its area's share of the samples
    lo, hi = verts.min(0), verts.max(0)
    ext = hi - lo
    for axis in range(3):
        on_side = np.isclose(pts[:, axis], lo[axis]) | np.isclose(pts[:, axis], hi[axis])
        side_area = 2 * np.prod(np.delete(ext, axis))
        area = 2 * (ext[0] * ext[1] + ext[1] * ext[2] + ext[0] * ext[2])
        assert abs(on_side.mean() - side_area / area) < 0.02, f"seed {seed} axis {axis}"
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
    again = data.sample_surface(verts, faces, 20000, seed)
    assert np.array_equal(pts, again[0])
    # every box corner is sharp, so by the original's rule (both ends sharp) all 18 triangle edges, the face
    # diagonals too, are sampled: points lie on those edges, by length
    sp, sn = data.sample_sharp_edges(verts, faces, 5000, seed)
    assert sp.shape == sn.shape == (5000, 3)
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1), axis=0)
    assert len(edges) == 18
    segs = verts[edges]
    dists = np.stack([ref.mesh_distance(sp, segs[:, [0, 1, 1]][e:e + 1].reshape(-1, 3), [[0, 1, 2]])
                      for e in range(18)])
    assert dists.min(0).max() < 1e-12
    share = np.bincount(dists.argmin(0), minlength=18) / len(sp)
    length = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)
    assert np.abs(share - length / length.sum()).max() < 0.03, f"seed {seed}"


def test_sharp_edges_empty_case_gives_empty_arrays():
    sphere = trimesh.creation.icosphere(subdivisions=4)  # every dihedral is small: no sharp vertex
    pts, normals = data.sample_sharp_edges(sphere.vertices, sphere.faces, 100, 0)
    assert pts.shape == normals.shape == (0, 3)


@pytest.mark.parametrize("outer_only", [False, True])
def test_labels_sign_and_magnitude_against_shell(outer_only):
    seed = _seed()
    rng = np.random.default_rng(seed)
    verts, faces = _closed_box()
    shell = data.watertight(verts, faces, 24, 0.02, outer_only, return_shell=True)
    pts = np.concatenate([rng.uniform(-0.2, 1.2, (1000, 3)), verts[faces[:, 0]] + rng.normal(scale=0.05, size=(12, 3))])
    label = data.shell_labels(shell, pts)
    exact = ref.mesh_distance(pts, shell.verts, shell.faces)
    voxel = shell.step.max()
    # exact near the shell; farther out d - eps from the box, which differs from the distance to the shell's
    # triangles by the shell's marching-cubes error only (a fraction of a voxel)
    near = exact < data.FAR_VOXELS * voxel - 0.5 * voxel
    assert near.sum() > 30 and (~near).sum() > 30, f"seed {seed}"
    np.testing.assert_allclose(np.abs(label[near]), exact[near], rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}")
    assert np.abs(np.abs(label) - exact).max() < 0.25 * voxel, f"seed {seed}"
    dist = np.abs(label)
    udf = ref.mesh_distance(pts, verts, faces)
    clear = dist > voxel
    if outer_only:  # inside the outer shell <=> inside the box or closer than eps to it
        solid = np.all((pts >= verts.min(0)) & (pts <= verts.max(0)), axis=1) | (udf < 0.02)
        assert np.array_equal((label > 0)[clear], solid[clear]), f"seed {seed}"
    else:  # inside the double shell <=> closer than eps to the box (for points clear of the shell)
        assert np.array_equal((label > 0)[clear], (udf < 0.02)[clear]), f"seed {seed}"


def test_labels_are_exact_where_the_offset_surface_leaves_the_grid():
    """A sheet thinner than 20 eps: the grid's faces cut its offset surface open, so d - eps would measure to
    surface that is not there; every label is then the exact distance to the shell's triangles."""
    seed = _seed()
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 1, 5), indexing="ij")
    v = np.stack([x.ravel(), y.ravel(), 0.02 * x.ravel()], 1)
    q = (np.arange(4)[:, None] * 5 + np.arange(4)[None]).ravel()
    f = np.concatenate([np.stack([q, q + 5, q + 1], 1), np.stack([q + 1, q + 5, q + 6], 1)])
    shell = data.watertight(v, f, 20, 0.03, return_shell=True)
    assert not data._offset_fits_grid(shell)
    pts = rng.uniform(-0.5, 1.5, (500, 3))
    np.testing.assert_allclose(np.abs(data.shell_labels(shell, pts)), ref.mesh_distance(pts, shell.verts, shell.faces),
                               rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}")


def test_point_distance_parallel_bvh_build_matches_reference():
    """Enough triangles that the BVH's top levels are split first and its subtrees built on several threads."""
    seed = _seed()
    rng = np.random.default_rng(seed)
    verts, faces = random_soup(rng, 4000, 24000)
    verts = verts * np.array([1.0, 0.5, 0.2])  # flat-ish: splits along every axis
    pts = np.concatenate([rng.uniform(-0.5, 1.5, (80, 3)), verts[:40] + rng.normal(scale=1e-3, size=(40, 3))])
    one = data.point_distance(pts, verts, faces, num_threads=1)
    assert np.array_equal(one, data.point_distance(pts, verts, faces, num_threads=3)), f"seed {seed}"
    np.testing.assert_allclose(one, ref.mesh_distance(pts, verts, faces), rtol=2e-6, atol=2e-7,
                               err_msg=f"seed {seed}")


def test_write_obj_matches_the_plain_format(tmp_path):
    seed = _seed()
    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.normal(size=(70000, 3)) * 10.0 ** rng.integers(-12, 12, (70000, 1)),
                        [[0.0, -0.0, 1.0], [1e300, -1e-300, 123456789.0]]])
    f = rng.integers(0, len(v), (90001, 3))
    data.write_obj(tmp_path / "m.obj", v, f)
    want = ("v %.9g %.9g %.9g\n" * len(v)) % tuple(v.ravel()) + ("f %d %d %d\n" * len(f)) % tuple((f + 1).ravel())
    assert (tmp_path / "m.obj").read_text() == want, f"seed {seed}"
    with pytest.raises(ValueError, match="faces"):
        data.write_obj(tmp_path / "bad.obj", v, f + len(v))
    with pytest.raises(RuntimeError, match="cannot open"):
        data.write_obj(tmp_path / "missing" / "m.obj", v, f)


def test_sampling_on_tensors_runs_the_device_code_path():
    """Torch tensors in, float64 tensors out on their device; the per-face passes in torch (the path CUDA meshes
    take) equal the native CPU ones; the draws are the same torch code whatever the input kind."""
    from flowkernels import data_sampling

    seed = _seed()
    rng = np.random.default_rng(seed)
    box = trimesh.creation.box(extents=(1.0, 0.7, 0.5))
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = np.concatenate([box.vertices, sphere.vertices * 0.3 + 2.0, rng.random((30, 3))])
    faces = np.concatenate([box.faces, sphere.faces + 8, rng.integers(8 + len(sphere.vertices), len(verts), (40, 3))])
    faces[-1] = faces[-1, 0]  # a degenerate face
    v, f = torch.tensor(verts), torch.tensor(faces)
    native = [data_sampling._face_normals(v, f), data_sampling._sharp_weights(v, f, data.SHARP_COS)]
    data_sampling.USE_NATIVE = False
    try:
        plain = [data_sampling._face_normals(v, f), data_sampling._sharp_weights(v, f, data.SHARP_COS)]
        for got, want in zip([*native[0], *native[1]], [*plain[0], *plain[1]]):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"seed {seed}")
        pts, nrm = data.sample_surface(v, f, 5000, seed)
        sp, sn = data.sample_sharp_edges(v, f, 5000, seed)
    finally:
        data_sampling.USE_NATIVE = True
    assert isinstance(pts, torch.Tensor) and pts.dtype == torch.float64 and pts.device == v.device
    np_pts, np_nrm = data.sample_surface(verts, faces, 5000, seed)
    np.testing.assert_allclose(pts.numpy(), np_pts, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nrm.numpy(), np_nrm, rtol=1e-12, atol=1e-12)
    np_sp, np_sn = data.sample_sharp_edges(verts, faces, 5000, seed)
    np.testing.assert_allclose(sp.numpy(), np_sp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sn.numpy(), np_sn, rtol=1e-12, atol=1e-12)
    assert np.abs(ref.mesh_distance(np_pts[:200], verts, faces)).max() < 1e-12
    with pytest.raises(ValueError, match="faces"):
        data.sample_surface(v, f + len(v), 10, seed)
