"""skimage / Hunyuan3D drop-ins, mesh export, the `flowkernels mesh` CLI and the demo."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import flowkernels as fk
from flowkernels.compat import hunyuan3d, skimage as fk_skimage
from flowkernels.mesh import export

skimage = pytest.importorskip("skimage.measure")


def blob(n=33):
    x = np.linspace(-1.01, 1.01, n)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return (0.55 - np.sqrt(X**2 + 1.3 * Y**2 + Z**2)).astype(np.float32)  # positive inside, as Hunyuan's logits


def test_skimage_dropin_matches_scikit_image():
    vol = -blob() + np.random.default_rng(0).normal(0, 1e-4, (33, 33, 33)).astype(np.float32)
    for spacing in [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0)]:
        v, f, n, vals = fk_skimage.marching_cubes(vol, 0.0, spacing=spacing)
        sv, sf, sn, svals = skimage.marching_cubes(vol, 0.0, spacing=spacing)
        assert v.dtype == np.float32 and f.shape[1] == 3 and len(v) == len(sv)
        order, sorder = np.lexsort(v.T), np.lexsort(sv.T)
        np.testing.assert_allclose(v[order], sv[sorder], atol=1e-4)
        dots = np.einsum("ij,ij->i", n[order], sn[sorder])  # same sign convention; gradient estimators differ
        assert dots.min() > 0.5 and dots.mean() > 0.85
        assert np.all(np.abs(vals[order] - svals[sorder]) < 0.2)
    v, f, _, _ = fk_skimage.marching_cubes(vol)  # level None -> middle of the range
    assert len(f) and np.isfinite(v).all()


def _area(v, f):
    a, b, c = (v[f[:, i]].astype(np.float64) for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float16, np.float32, np.float64])
def test_skimage_dropin_puts_values_equal_to_the_level_below_it(dtype):
    """scikit-image's inside is v > level. The drop-in used the core's v >= level: a 0/1 mask at level=0 gave an
    empty mesh (scikit-image: the mask's outer surface), and an integer field's plateau at the level put the
    surface on the plateau's other side (area 166 instead of 214 on a 14^3 sphere)."""
    rng = np.random.default_rng(torch.initial_seed())  # conftest's per-test seed (printed on failure)
    mask = np.zeros((9, 10, 11), dtype)
    lo, hi = rng.integers(1, 4, 3), rng.integers(6, 9, 3)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    x = np.linspace(-1, 1, 14)
    field = np.round(10 * (np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2) - 0.6))
    for vol, level in ((mask, 0), (field.astype(dtype) if dtype != np.uint8 else (field + 5).astype(dtype), 0)):
        v, f, _, _ = fk_skimage.marching_cubes(vol, level)
        sv, sf, _, _ = skimage.marching_cubes(vol, level)
        assert len(f) > 0
        assert abs(_area(v, f) - _area(sv, sf)) <= 1e-4 * _area(sv, sf)
        assert np.abs(v.min(0) - sv.min(0)).max() < 1e-3 and np.abs(v.max(0) - sv.max(0)).max() < 1e-3
    # a level at the maximum: nothing is above it (scikit-image raises "No surface found"; the drop-in is empty)
    v, f, _, _ = fk_skimage.marching_cubes(mask, 1)
    assert len(f) == 0


def test_skimage_dropin_value_range_leaves_nan_out_on_every_layout():
    """The level check and the default level use the NaN-free range, as scikit-image's: the fast pass (contiguous,
    writable float32 / float64) and numpy's (NaN inside, read-only, strided, float16) agree."""
    seed = torch.initial_seed()
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(9, 8, 7))
    holes = base.copy()
    holes[2:4, 3:5, 1:3] = np.nan
    readonly = base.astype(np.float32)
    readonly.flags.writeable = False
    for vol in (base, base.astype(np.float32), holes, readonly, base[:, ::-1], base.astype(np.float16)):
        finite = vol[np.isfinite(vol)].astype(np.float64)
        assert fk_skimage._value_range(vol) == (float(finite.min()), float(finite.max())), seed
        verts, *_ = fk_skimage.marching_cubes(vol)  # level None: the middle of the range
        assert len(verts) > 0, seed
        with pytest.raises(ValueError, match="within volume data range"):
            fk_skimage.marching_cubes(vol, level=float(finite.max()) + 1.0)


def test_skimage_dropin_rejects_what_it_cannot_honour():
    vol = blob(9)
    for kwargs, match in [({"step_size": 2}, "step_size"), ({"mask": np.ones_like(vol, bool)}, "mask"),
                          ({"method": "dual"}, "method"), ({"level": 99.0}, "level")]:
        with pytest.raises(ValueError, match=match):
            fk_skimage.marching_cubes(vol, **kwargs)


def original_hunyuan_run(grid_logit, mc_level, bounds, octree_resolution):
    """Hunyuan3D-2.1's MCSurfaceExtractor.run, written plainly."""
    vertices, faces, _, _ = skimage.marching_cubes(grid_logit, mc_level, method="lewiner")
    b = [-bounds] * 3 + [bounds] * 3 if isinstance(bounds, float) else bounds
    bbox_min, bbox_size = np.array(b[:3]), np.array(b[3:]) - np.array(b[:3])
    return vertices / (octree_resolution + 1) * bbox_size + bbox_min, faces


def test_hunyuan_extractor_legacy_and_corrected_scaling():
    R = 32
    logits = torch.from_numpy(blob(R + 1))[None].repeat(2, 1, 1, 1)
    kw = dict(mc_level=0.0, bounds=1.01, octree_resolution=R)
    legacy = hunyuan3d.MCSurfaceExtractor(legacy_scaling=True)(logits, **kw)
    want_v, want_f = original_hunyuan_run(logits[0].numpy(), **kw)
    assert len(legacy) == 2 and len(legacy[0].mesh_v) == len(want_v)
    np.testing.assert_allclose(np.unique(legacy[0].mesh_v, axis=0), np.unique(want_v.astype(np.float32), axis=0),
                               atol=1e-4)
    fixed = hunyuan3d.MCSurfaceExtractor()(logits, **kw)[0]
    np.testing.assert_allclose(fixed.mesh_v + 1.01, (legacy[0].mesh_v + 1.01) * (R + 1) / R, atol=1e-5)
    # same winding as the original (inward for positive-inside logits): the pipeline's export flip still applies
    v, f = fixed.mesh_v.astype(np.float64), fixed.mesh_f
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum()
    sv, sf = want_v, want_f
    assert np.sign(vol) == np.sign(np.einsum("ij,ij->i", sv[sf[:, 0]], np.cross(sv[sf[:, 1]], sv[sf[:, 2]])).sum())


def test_hunyuan_extractor_handles_nan_filled_grids():
    logits = torch.from_numpy(blob(33))
    logits[:, :, :10] = float("nan")
    out = hunyuan3d.MCSurfaceExtractor()(logits[None], mc_level=0.0, bounds=[-1.01] * 3 + [1.01] * 3,
                                         octree_resolution=32)[0]
    assert np.isfinite(out.mesh_v).all() and out.mesh_f.max() < len(out.mesh_v) and len(out.mesh_f)


@pytest.mark.parametrize("ext", [".ply", ".obj", ".glb", ".stl"])
def test_export_round_trip(tmp_path, ext):
    trimesh = pytest.importorskip("trimesh")
    mesh = fk.marching_cubes(-blob(25), bounds=1.0)
    path = export(mesh, str(tmp_path / f"m{ext}"))
    loaded = trimesh.load(path, force="mesh")
    assert loaded.is_watertight and abs(loaded.area - fk.mesh.to_trimesh(mesh).area) < 1e-3 * loaded.area


def test_export_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="path"):
        export(fk.marching_cubes(-blob(9)), str(tmp_path / "m.fbx"))


@pytest.mark.parametrize("shift", [1000, -1000], ids=["past-the-vertices", "negative"])
def test_export_refuses_faces_outside_the_vertices(tmp_path, shift):
    """trimesh writes faces as given: .ply / .obj / .glb files with indices past the vertices were written
    without a word (.stl raised an IndexError)."""
    pytest.importorskip("trimesh")
    mesh = fk.marching_cubes(-blob(9))
    for ext in (".ply", ".obj", ".glb", ".stl"):
        with pytest.raises(ValueError, match="faces index vertices outside"):
            export(fk.Mesh(mesh.verts, mesh.faces + shift), str(tmp_path / f"m{ext}"))
        assert not (tmp_path / f"m{ext}").exists()
    # (verts, faces) works as a Mesh does (it raised AttributeError: 'tuple' object has no attribute 'verts')
    assert os.path.getsize(export((mesh.verts, mesh.faces), str(tmp_path / "t.ply"))) > 0


def test_mesh_cli(tmp_path):
    pytest.importorskip("trimesh")
    grid = tmp_path / "g.npy"
    np.save(grid, -blob(21))
    out = tmp_path / "m.ply"
    res = subprocess.run([sys.executable, "-m", "flowkernels.cli", "mesh", str(grid), "-o", str(out), "--bounds",
                          "1.0"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "vertices" in res.stdout and " ms " in res.stdout and out.exists()
    bad = subprocess.run([sys.executable, "-m", "flowkernels.cli", "mesh", str(grid), "-o", str(tmp_path / "m.xyz")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "extension" in bad.stderr


def test_demo_end_to_end_tiny(tmp_path, capsys):
    from flowkernels import demo
    meshes = demo.run(steps=3, batch=4, res=8, per_class=2, sample_steps=2, out_dir=str(tmp_path), repeats=1)
    assert len(meshes) == 6 and (tmp_path / "preview.png").exists()
    printed = capsys.readouterr().out
    for line in ("loss step", "guided sampling", "marching cubes", "guided Euler steps", "median of 1 runs",
                 "right genus", "sphere", "torus", "done in"):
        assert line in printed, line
    written = {p.name for p in tmp_path.iterdir()}
    for i, mesh in enumerate(meshes):  # files named by class and index, for every non-empty sample
        name = f"{demo.KINDS[i // 2]}_{i % 2}.glb"
        assert (name in written) == (len(mesh.faces) > 0), name
    shapes = demo.random_shapes(3, 12)
    assert shapes.shape == (3, 12, 12, 12) and (shapes < 0).any() and (shapes > 0).any()
