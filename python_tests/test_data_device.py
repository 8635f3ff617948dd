"""The device pipeline (flowkernels.data_device): the linear-BVH point queries against float64 brute force, the
flood-fill sweeps against scipy's labelling, and the whole pipeline on CPU tensors (the code path CUDA tensors
take, with the CPU drivers of the same cores) against the numpy pipeline; on a CUDA device, CUDA against CPU."""
import numpy as np
import pytest
import torch

from flowkernels import data, data_device
from flowkernels.reference import distance as ref

trimesh = pytest.importorskip("trimesh")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (the CPU tests run the same cores)")


def _seed():
    return int(torch.randint(0, 2**31, ()).item())  # follows the per-test seed printed by conftest


def _soup(rng, n_verts, n_faces):
    """Random triangles with the hard cases: repeated corners, a zero-area needle, exact duplicates."""
    v = rng.random((n_verts, 3)).astype(np.float32)
    f = rng.integers(0, n_verts, (n_faces, 3))
    if n_faces >= 3 and n_verts >= 3:
        f[0] = [0, 0, 1]
        v[2] = v[1] + 0.5 * (v[0] - v[1])  # collinear corners
        f[1] = [0, 1, 2]
        f = np.concatenate([f, f[: n_faces // 3]])  # duplicated triangles: ties
    return v, f


def _nearest_ref(points, verts, faces):
    """float64 brute force: distance and each point's per-triangle distances."""
    tris = np.asarray(verts, np.float64)[faces]
    per = np.stack([ref.point_triangle_distance(points, tris[i:i + 1]) for i in range(len(tris))], 1)
    return per.min(1), per


@pytest.mark.parametrize("n_faces", [1, 2, 3, 37, 401])
def test_lbvh_queries_match_float64_brute_force(n_faces):
    seed = _seed()
    rng = np.random.default_rng(seed)
    v, f = _soup(rng, max(3, n_faces // 2 + 3), n_faces)
    p = np.concatenate([rng.random((211, 3)) * 1.8 - 0.4,                     # near and far, odd count
                        v[f[rng.integers(0, len(f), 40), 0]]]).astype(np.float32)  # on vertices: distance 0
    d, t = data_device.closest_triangle(torch.from_numpy(p), torch.from_numpy(v), torch.from_numpy(f))
    want, per = _nearest_ref(p, v, f)
    scale = np.maximum(want, 1e-3)
    assert np.abs(d.numpy() - want).max() <= 4e-7 * scale.max() + 1e-7, f"seed {seed}"
    # the triangle returned is a nearest one (its own float64 distance is the minimum up to float rounding)
    own = per[np.arange(len(p)), t.numpy()]
    assert np.abs(own - want).max() <= 4e-7 + 1e-7, f"seed {seed}"
    # the same answer as the CPU BVH of the labels (different trees, same distances up to float rounding)
    assert (np.abs(d.numpy() - data.point_distance(p, v, f)) <= 3e-7 * np.maximum(want, 1.0)).all(), f"seed {seed}"


def test_lbvh_ties_go_to_the_smallest_triangle_index():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    f = np.array([[0, 1, 2]] * 5 + [[0, 1, 3]] * 3 + [[0, 1, 2]])  # copies: 0..4, 5..7, 8
    p = np.array([[0.2, 0.2, 0.5], [0.2, 0.5, 0.2], [0.3, -0.5, 0.0], [0.1, 0.1, -2.0]], np.float32)
    d, t = data_device.closest_triangle(torch.from_numpy(p), torch.from_numpy(v), torch.from_numpy(f))
    # the third point is equally near both planes' shared edge: every copy of both triangles ties
    assert t.tolist() == [5, 0, 0, 0]
    np.testing.assert_allclose(d.numpy(), _nearest_ref(p, v, f)[0], atol=1e-7)


def test_lbvh_mask_empty_and_bad_inputs():
    v = torch.rand(5, 3)
    f = torch.tensor([[0, 1, 2], [2, 3, 4]])
    p = torch.rand(7, 3)
    mask = torch.tensor([True, False, True, False, False, True, True])
    d, t = data_device.closest_triangle(p, v, f, mask)
    assert torch.isnan(d[~mask]).all() and (t[~mask] == -1).all()
    full, tfull = data_device.closest_triangle(p, v, f)
    assert torch.equal(d[mask], full[mask]) and torch.equal(t[mask], tfull[mask])
    d0, t0 = data_device.closest_triangle(torch.zeros(0, 3), v, f)
    assert d0.shape == (0,) and t0.shape == (0,)
    de, te = data_device.closest_triangle(p, v, torch.zeros(0, 3, dtype=torch.int64))
    assert torch.isinf(de).all() and (te == -1).all()
    for args, match in [((p[:, :2], v, f), "points"), ((p, v[:, :2], f), "verts"), ((p, v, f.float()), "faces"),
                        ((p, v, f + 3), "faces"), ((p, v.double().fill_(float("nan")), f), "verts"),
                        ((p.int(), v, f), "points"), ((p, v, f, mask[:3]), "mask"),
                        ((torch.full((2, 3), float("inf")), v, f), "points"), ((p.numpy(), v, f), "points")]:
        with pytest.raises(ValueError, match=match):
            data_device.closest_triangle(*args)


def _blobs(rng, shape):
    """A random field with closed cavities, tunnels to the boundary and single-voxel walls."""
    g = rng.random(shape) < 0.55
    if min(shape) > 4:
        g[2:-2, 2:-2, 2:-2] &= rng.random((shape[0] - 4, shape[1] - 4, shape[2] - 4)) < 0.8
    return torch.from_numpy(np.where(g, 1.0, 0.0).astype(np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (9, 7, 13), (24, 17, 31)])
def test_flood_fill_sweeps_match_scipy_labelling(shape):
    seed = _seed()
    rng = np.random.default_rng(seed)
    for _ in range(3):
        grid = _blobs(rng, shape)
        want, got = grid.clone(), grid.clone()
        data._fill_interior(want, 0.5)
        data_device.fill_interior(got, 0.5)
        assert torch.equal(want, got), f"seed {seed}"
    spiral = torch.ones(15, 15, 15)  # a walled box with a winding corridor: many sweep rounds
    spiral[1:-1, 1:-1, 1:-1] = 0.0
    for k, z in enumerate(range(2, 13, 2)):
        spiral[2:-2, 2:-2, z] = 1.0
        spiral[2 if k % 2 else -3, 2:-2, z - 1:z + 2] = 1.0
    spiral[0, 7, 7] = 1.0
    want, got = spiral.clone(), spiral.clone()
    data._fill_interior(want, 0.5)
    data_device.fill_interior(got, 0.5)
    assert torch.equal(want, got)


def _torus():
    m = trimesh.creation.torus(0.3, 0.1, major_sections=48, minor_sections=24)
    return data.normalize_to_unit_box(m.vertices), np.asarray(m.faces)


def _device_shell(verts, faces, res, eps, outer, device):
    return data_device.watertight(torch.tensor(verts, device=device), torch.tensor(faces, device=device), res,
                                  eps, outer)


@pytest.mark.parametrize("outer_only", [False, True])
def test_device_pipeline_on_cpu_tensors_matches_the_numpy_pipeline(outer_only):
    seed = _seed()
    rng = np.random.default_rng(seed)
    verts, faces = _torus()
    res, eps = 41, 2.0 / 41
    cpu = data.watertight(verts, faces, res, eps, outer_only, return_shell=True)
    dev = _device_shell(verts, faces, res, eps, outer_only, "cpu")
    assert torch.equal(cpu.grid, dev.grid)  # the same distance grid and fill
    # the same mesh (the bricks method of the device path and the CPU default emit it in their own order)
    key = lambda v: np.unique(np.asarray(v, np.float64), axis=0)  # noqa: E731
    np.testing.assert_array_equal(key(cpu.verts), key(dev.verts.numpy()))
    assert len(cpu.faces) == len(dev.faces)
    pts = np.concatenate([rng.random((1500, 3)) * 2.1 - 1.05,
                          cpu.verts[rng.integers(0, len(cpu.verts), 1500)] + rng.normal(0, 0.03, (1500, 3))])
    pts = pts.astype(np.float32)
    want = data.shell_labels(cpu, pts)
    got = data_device.shell_labels(dev, torch.from_numpy(pts)).numpy()
    assert (np.sign(want) == np.sign(got)).all(), f"seed {seed}"
    assert np.abs(want - got).max() <= 2.4e-7, f"seed {seed}"


def test_device_sampling_laws_and_seeding_on_cpu_tensors():
    seed = _seed()
    verts, faces = _torus()
    shell = _device_shell(verts, faces, 33, 2.0 / 33, False, "cpu")
    surf, sdf = data.sample_mesh(shell, 6000, seed)
    surf2, sdf2 = data.sample_mesh(shell, 6000, seed)
    assert all(torch.equal(sdf[k], sdf2[k]) for k in sdf) and all(torch.equal(surf[k], surf2[k]) for k in surf)
    assert {k: (tuple(x.shape), x.dtype) for k, x in sdf.items()} == {
        "vol_points": ((12000, 3), torch.float16), "vol_label": ((12000,), torch.float16),
        "random_near_points": ((12000, 3), torch.float16), "random_near_label": ((12000,), torch.float16),
        "sharp_near_points": ((6000, 3), torch.float16), "sharp_near_label": ((6000,), torch.float16)}
    # truncated normals: within +-0.25 of the surface, with the law's standard deviations
    s = surf["random_surface"][:, :3].double()
    gen = np.random.default_rng(seed)
    fine = data_device._truncated_normal(torch.Generator().manual_seed(int(gen.integers(1 << 30))), 0.05, 0.25,
                                         (200000,), torch.device("cpu"))
    assert fine.abs().max() <= 0.25 and abs(fine.std().item() - 0.05) < 0.002 and s.shape == (6000, 3)
    # labels: the same as the numpy labelling of the same points
    cpu_shell = data.watertight(verts, faces, 33, 2.0 / 33, False, return_shell=True)
    pts = sdf["vol_points"].float().numpy()
    np.testing.assert_allclose(sdf["vol_label"].float().numpy(),
                               data.shell_labels(cpu_shell, pts).astype(np.float16).astype(np.float32),
                               atol=4e-3)  # fp16 points (<= 8.5e-4 moved) and labels (<= 9.8e-4 below 2)


@needs_cuda
def test_cuda_lbvh_equals_the_cpu_driver_bit_for_bit():
    rng = np.random.default_rng(_seed())
    v, f = _soup(rng, 300, 2000)
    p = (rng.random((5001, 3)) * 1.6 - 0.3).astype(np.float32)
    args = [torch.from_numpy(x) for x in (p, v, f)]
    d_cpu, t_cpu = data_device.closest_triangle(*args)
    d_gpu, t_gpu = data_device.closest_triangle(*[x.cuda() for x in args])
    assert torch.equal(d_cpu, d_gpu.cpu()) and torch.equal(t_cpu, t_gpu.cpu())
    bvh_cpu = data_device.build_lbvh(*data_device.check_mesh(args[1], args[2]))
    bvh_gpu = data_device.build_lbvh(*data_device.check_mesh(args[1].cuda(), args[2].cuda()))
    assert torch.equal(bvh_cpu.nodes, bvh_gpu.nodes.cpu())  # the same tree, node for node


@needs_cuda
@pytest.mark.parametrize("outer_only", [False, True])
def test_cuda_pipeline_matches_the_cpu_pipeline(outer_only):
    seed = _seed()
    rng = np.random.default_rng(seed)
    verts, faces = _torus()
    res, eps = 64, 2.0 / 64
    cpu = _device_shell(verts, faces, res, eps, outer_only, "cpu")
    gpu = data.watertight(torch.tensor(verts, device="cuda"), torch.tensor(faces, device="cuda"), res, eps,
                          outer_only, return_shell=True)
    assert torch.equal(cpu.grid, gpu.grid.cpu())
    assert torch.equal(cpu.verts, gpu.verts.cpu()) and torch.equal(cpu.faces, gpu.faces.cpu())  # bricks both
    pts = torch.from_numpy((rng.random((20000, 3)) * 2.1 - 1.05).astype(np.float32))
    assert torch.equal(data_device.shell_labels(cpu, pts), data_device.shell_labels(gpu, pts.cuda()).cpu())
    surf, sdf = data.sample_mesh(gpu, 20000, seed)
    assert all(x.device.type == "cuda" for x in list(surf.values()) + list(sdf.values()))
    want = data_device.shell_labels(cpu, sdf["vol_points"].float().cpu()).numpy().astype(np.float16)
    np.testing.assert_allclose(sdf["vol_label"].float().cpu().numpy(), want,
                               atol=4e-3)  # fp16 points (<= 8.5e-4 moved) and labels (<= 9.8e-4 below 2)
