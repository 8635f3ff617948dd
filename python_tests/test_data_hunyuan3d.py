"""flowkernels.data and its drop-in against Hunyuan3D-2.1's watertight_and_sample.py run side by side (libigl).

The original's call sequence on libigl 2.6 is flowkernels.reference.hunyuan3d_original (shared with the bench):
its steps and calls as written in the script, with only libigl 2.6's changed `signed_distance` / `marching_cubes`
signatures shimmed. Grids are small (CI time); the bench compares at 256^3.
"""
import os

import numpy as np
import pytest
import torch

from flowkernels import data
from flowkernels.compat import hunyuan3d
from flowkernels.compat import hunyuan3d_data
from flowkernels.reference import hunyuan3d_original as original

igl = pytest.importorskip("igl")
trimesh = pytest.importorskip("trimesh")


# --- meshes -------------------------------------------------------------------------------------------------------

def bunny():
    pymeshfix = pytest.importorskip("pymeshfix")
    path = os.path.join(os.path.dirname(pymeshfix.__file__), "examples", "StanfordBunny.ply")
    m = trimesh.load(path, process=False)
    return np.asarray(m.vertices), np.asarray(m.faces)


def made_meshes(rng):
    box = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    holed = trimesh.creation.icosphere(subdivisions=2)
    holed = (holed.vertices, holed.faces[rng.permutation(len(holed.faces))[:-25]])  # open: 25 faces removed
    # non-manifold: three fins on one edge, plus a box corner touching them
    fins = (np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0.5], [-0.5, 0.8, 0.5], [-0.5, -0.8, 0.5]]),
            np.array([[0, 1, 2], [0, 1, 3], [1, 0, 4]]))
    a, b = trimesh.creation.icosphere(1), trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    two = (np.concatenate([a.vertices, b.vertices + [2.0, 0.3, 0.1]]),
           np.concatenate([a.faces, b.faces + len(a.vertices)]))
    x, y = np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 9), indexing="ij")
    sheet_v = np.stack([x.ravel(), y.ravel(), 0.6 * np.sin(3 * x.ravel())], 1)  # open, bent, zero thickness
    q = (np.arange(8)[:, None] * 9 + np.arange(8)[None]).ravel()
    sheet_f = np.concatenate([np.stack([q, q + 9, q + 1], 1), np.stack([q + 1, q + 9, q + 10], 1)])
    return {"box12": (box.vertices, box.faces), "holes": holed, "nonmanifold": fins, "components": two,
            "sheet": (sheet_v, sheet_f)}


def components(verts, faces):
    """Connected components through shared vertex positions (counts the shells however edges are used)."""
    _, inverse = np.unique(np.round(verts, 9), axis=0, return_inverse=True)
    f = inverse.reshape(-1)[faces]
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    return len(trimesh.graph.connected_components(edges, nodes=np.unique(f)))


def hausdorff(va, fa, vb, fb):
    da = igl.point_mesh_squared_distance(np.asarray(va, np.float64), np.asarray(vb, np.float64), fb)[0]
    db = igl.point_mesh_squared_distance(np.asarray(vb, np.float64), np.asarray(va, np.float64), fa)[0]
    return float(np.sqrt(max(da.max(), db.max())))


def check_against_original(name, V, F, resolution, eps, rng, n_samples):
    V = data.normalize_to_unit_box(V)
    ov, of = original.watertight(V, F, eps, resolution)
    shell = data.watertight(V, F, resolution, eps, return_shell=True)
    voxel = shell.step.max()
    assert len(shell.faces) and len(of), name
    h = hausdorff(shell.verts, shell.faces, ov, of)
    assert h <= 0.5 * voxel, f"{name}: Hausdorff {h / voxel:.3f} voxel"
    assert components(shell.verts, shell.faces) == components(ov, of), name
    # samples on the shell (before fp16 storage)
    surf, _ = data.sample_surface(shell.verts, shell.faces, n_samples, rng)
    sharp, _ = data.sample_sharp_edges(shell.verts, shell.faces, n_samples, rng)
    if len(sharp) == 0:
        sharp, _ = data.sample_surface(shell.verts, shell.faces, n_samples, rng)
    on = data.point_distance(np.concatenate([surf, sharp]), shell.verts, shell.faces)
    assert on.max() <= 1e-5, f"{name}: samples {on.max():.2e} off the shell"
    # labels of the same sign as the original's (fast winding number on its own shell) away from the shell
    out = data.sdf_samples(shell, surf, sharp, rng)
    original_mesh = trimesh.Trimesh(ov, of)  # as the original's SampleMesh builds it
    for key in ("vol", "random_near", "sharp_near"):
        pts = out[f"{key}_points"].astype(np.float64)
        ours = data.shell_labels(shell, pts)  # at the stored fp16 points: the same points for both
        theirs = original.labels(pts, original_mesh)
        clear = np.sqrt(igl.point_mesh_squared_distance(pts, ov, of)[0]) > voxel
        agree = np.mean(np.sign(ours[clear]) == np.sign(theirs[clear]))
        assert agree >= 0.995, f"{name} {key}: {agree:.4f} of labels agree in sign"
        # fp16 storage of the points and labels, and a point on either side of the far threshold (d - eps from
        # the input mesh vs the exact shell distance: the shell's marching-cubes error, a fraction of a voxel)
        np.testing.assert_allclose(out[f"{key}_label"].astype(np.float64)[clear], ours[clear],
                                   atol=1e-3 + 0.25 * voxel, rtol=2e-3)


def test_bunny_against_original():
    seed = int(torch.randint(0, 2**31, ()).item())  # follows the per-test seed printed by conftest
    rng = np.random.default_rng(seed)
    V, F = bunny()
    check_against_original(f"bunny (seed {seed})", V, F, 48, 2 / 48, rng, 1500)


@pytest.mark.parametrize("name", ["box12", "holes", "nonmanifold", "components", "sheet"])
def test_made_meshes_against_original(name):
    seed = int(torch.randint(0, 2**31, ()).item())
    rng = np.random.default_rng(seed)
    V, F = made_meshes(np.random.default_rng(seed))[name]
    # eps below 5% of the thinnest extent, so that the shell fits the original's padded grid (else both are cut
    # open by the grid's faces and inside / outside is not defined)
    eps = 0.02 if name in ("box12", "sheet") else 2 / 40
    check_against_original(f"{name} (seed {seed})", V, F, 40, eps, rng, 1000)


def test_dropin_writes_the_original_files(tmp_path):
    box = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    src = tmp_path / "box.obj"
    box.export(src)
    prefix = str(tmp_path / "out" / "box")
    paths = hunyuan3d.watertight_and_sample(str(src), prefix, resolution=24, seed=3)
    assert paths == tuple(prefix + s for s in ("_surface.npz", "_sdf.npz", "_watertight.obj"))
    surface, sdf = np.load(paths[0]), np.load(paths[1])
    n = 499712 // 4
    assert {k: (surface[k].shape, surface[k].dtype) for k in surface.files} == {
        "random_surface": ((n, 6), np.float16), "sharp_surface": ((n, 6), np.float16)}
    assert {k: (sdf[k].shape, sdf[k].dtype) for k in sdf.files} == {
        "vol_points": ((2 * n, 3), np.float16), "vol_label": ((2 * n,), np.float16),
        "random_near_points": ((2 * n, 3), np.float16), "random_near_label": ((2 * n,), np.float16),
        "sharp_near_points": ((n, 3), np.float16), "sharp_near_label": ((n,), np.float16)}
    mesh = trimesh.load(paths[2], process=False)
    ov, of = original.watertight(data.normalize_to_unit_box(box.vertices), box.faces, 2 / 256, 24)
    assert hausdorff(mesh.vertices, mesh.faces, ov, of) <= 0.5 * 1.1 / 23
    # seeded: the same bytes again; the command line takes the original's arguments
    again = hunyuan3d_data.main(["--input_obj", str(src), "--output_prefix", prefix + "2", "--resolution", "24",
                                 "--seed", "3"])
    assert again == 0
    for a, b in zip(paths, (prefix + "2" + s for s in ("_surface.npz", "_sdf.npz", "_watertight.obj"))):
        assert open(a, "rb").read() == open(b, "rb").read()


def test_dropin_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        hunyuan3d_data.main(["--input_obj", str(tmp_path / "missing.obj")])
    assert exc.value.code == 2
    assert "input_path" in capsys.readouterr().err


def test_dropin_checks_the_output_folder_before_any_work(tmp_path, capsys):
    """An output_prefix under a file ran the whole pipeline, then died in os.makedirs with a FileExistsError
    traceback: now one line and exit code 2 before the mesh is read."""
    box = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    src = tmp_path / "box.obj"
    box.export(src)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exc:
        hunyuan3d_data.main(["--input_obj", str(src), "--output_prefix", str(tmp_path / "file" / "out" / "box")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0] and "output_prefix" in err[0]
    with pytest.raises(ValueError, match="output_prefix"):
        hunyuan3d_data.watertight_and_sample(str(src), str(tmp_path / "file" / "box"), resolution=16, eps=0.1)
