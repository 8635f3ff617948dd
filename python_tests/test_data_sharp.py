"""The sharp-edge rule against the original's own code (trimesh's normals, numpy's repeated-index min): the same
edges, bit for bit, on the bunny's watertight shells and on made meshes, in the native CPU path and the torch
path (the one CUDA meshes take); and the bound on the device, where the arccos is not numpy's."""
import math
import os

import numpy as np
import pytest
import torch

from flowkernels import data, data_sampling
from flowkernels.reference import hunyuan3d_original

trimesh = pytest.importorskip("trimesh")


def _seed():
    return int(torch.randint(0, 2**31, ()).item())  # follows the per-test seed printed by conftest


def original_edges(V, F):
    """The original's sharp_sample_pointcloud up to its edge selection: endpoint positions [E, 2, 3] and VN."""
    mesh = trimesh.Trimesh(vertices=V, faces=F)
    edge_a, edge_b, V, VN = hunyuan3d_original.sharp_edges(mesh)
    V = np.asarray(V)
    return np.stack([V[edge_a], V[edge_b]], 1), np.asarray(VN), mesh


def ours(V, F, native):
    data_sampling.USE_NATIVE = native
    try:
        a, b, vn = data.sharp_edges(V, F)
    finally:
        data_sampling.USE_NATIVE = True
    return np.stack([V[a], V[b]], 1), vn, a


def _meshes(rng):
    sphere = trimesh.creation.icosphere(subdivisions=3)
    noisy = sphere.vertices + rng.normal(0, 0.03, sphere.vertices.shape)
    box = trimesh.creation.box(extents=(1.0, 0.7, 0.5))
    cyl = trimesh.creation.cylinder(0.3, 1.0, sections=int(rng.integers(5, 40)))
    # apex and base centre in more face corners than the sums' one-read histogram holds (RANK_BINS)
    fan = trimesh.creation.cone(0.4, 0.3, sections=int(rng.integers(data_sampling.RANK_BINS + 1, 150)))
    soup_v = rng.random((80, 3))
    soup_f = rng.integers(0, 80, (201, 3))
    soup_f[0] = [3, 3, 4]  # a repeated corner
    # vertices that trimesh merges (equal to 8 decimals), one of them unreferenced
    twin_v = np.concatenate([noisy, noisy[:30] + 2e-10, noisy[:5] + 1e-6])
    twin_f = np.array(sphere.faces)
    twin_f[::7] = np.where(twin_f[::7] < 30, twin_f[::7] + len(noisy), twin_f[::7])
    return {"noisy sphere": (noisy, sphere.faces), "box": (box.vertices, box.faces), "cylinder": (cyl.vertices,
            cyl.faces), "soup": (soup_v, soup_f), "merged twins": (twin_v, twin_f), "wide fan": (fan.vertices, fan.faces)}


@pytest.mark.parametrize("native", [True, False])
def test_sharp_edges_are_the_originals_on_made_meshes(native):
    seed = _seed()
    for name, (V, F) in _meshes(np.random.default_rng(seed)).items():
        V, F = np.asarray(V, np.float64), np.asarray(F, np.int64)
        want, want_vn, mesh = original_edges(V, F)
        got, vn, a = ours(V, F, native)
        assert np.array_equal(got, want), f"{name}, seed {seed}"
        # the normals the samples blend are trimesh's too, bit for bit (per merged vertex)
        merged = data_sampling.merge_like_trimesh(torch.from_numpy(V), torch.from_numpy(F))
        assert np.array_equal(vn[merged[2].numpy()], want_vn), f"{name}, seed {seed}"


def _bunny_shell(resolution):
    pymeshfix = pytest.importorskip("pymeshfix")
    from flowkernels.compat.hunyuan3d_data import load_mesh

    V, F = load_mesh(os.path.join(os.path.dirname(pymeshfix.__file__), "examples", "StanfordBunny.ply"))
    return data.watertight(data.normalize_to_unit_box(V), F, resolution, 2.0 / 256)


@pytest.mark.parametrize("native", [True, False])
def test_sharp_edges_are_the_originals_on_the_bunny_shell(native):
    V, F = _bunny_shell(96)
    want, _, mesh = original_edges(V, F)
    got, _, _ = ours(V, F, native)
    assert len(want) > 1000 and np.array_equal(got, want)


def test_a_different_arccos_moves_no_edge_on_these_meshes(monkeypatch):
    """The device's arccos is not numpy's (numpy's own differs between CPUs: SVML on AVX-512, its portable one
    elsewhere). With glibc's acos or with every angle moved by one ulp, no selected edge changes here: an edge
    can only move where a vertex's sharpness lies within a few ulps of 0.985 or its normal sum is within
    rounding of trimesh's 1e-13 cut (flowkernels/data.md)."""
    seed = _seed()
    rng = np.random.default_rng(seed)
    libm = np.vectorize(math.acos, otypes=[np.float64])

    def nudged(x):
        y = np.arccos(x.numpy())
        return torch.from_numpy(np.where(rng.random(y.shape) < 0.5, np.nextafter(y, 4.0), np.nextafter(y, -1.0)))

    cases = {**_meshes(rng), "bunny": _bunny_shell(64)}
    for arccos in (lambda x: torch.from_numpy(libm(x.numpy())), nudged):
        monkeypatch.setattr(data_sampling, "_arccos", arccos)
        for name, (V, F) in cases.items():
            V, F = np.asarray(V, np.float64), np.asarray(F, np.int64)
            want = original_edges(V, F)[0]
            got = ours(V, F, native=False)[0]
            assert np.array_equal(got, want), f"{name}, seed {seed}"


def test_merge_like_trimesh_matches_trimesh():
    seed = _seed()
    rng = np.random.default_rng(seed)
    V = rng.random((50, 3))
    V = np.concatenate([V, V[:20] + rng.choice([0.0, 3e-9, 2e-8], (20, 1))])
    F = rng.integers(0, 70, (90, 3))
    mesh = trimesh.Trimesh(V, F)
    mv, mf, rep, inv = data_sampling.merge_like_trimesh(torch.from_numpy(V), torch.from_numpy(F))
    assert np.array_equal(mv.numpy(), mesh.vertices) and np.array_equal(mf.numpy(), mesh.faces), f"seed {seed}"
    from flowkernels import _native

    mf2, rep2, inv2 = np.empty_like(F), np.empty(len(V), np.int64), np.empty(len(V), np.int64)
    n = _native.load().mesh_merge_like_trimesh(verts=V.ctypes.data, num_verts=len(V), faces=F.ctypes.data,
                                               num_faces=len(F), merged_faces=mf2.ctypes.data,
                                               rep=rep2.ctypes.data, inv=inv2.ctypes.data)
    assert n == len(rep) and np.array_equal(rep2[:n], rep.numpy()) and np.array_equal(inv2, inv.numpy())
    assert np.array_equal(mf2, mf.numpy())
