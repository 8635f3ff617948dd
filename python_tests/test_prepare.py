"""`flowkernels prepare`: folders, skip-done, failures logged and skipped, sharding, workers, CLI errors."""
import os

import numpy as np
import pytest

from flowkernels import cli, prepare

trimesh = pytest.importorskip("trimesh")

ARGS = ["--resolution", "24", "--eps", "0.05", "--count", "600", "--seed", "7", "--no-progress"]


@pytest.fixture
def mesh_folder(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    trimesh.creation.box(extents=(1.0, 0.8, 0.6)).export(root / "box.obj")
    trimesh.creation.icosphere(2).export(root / "sub" / "ball.ply")
    trimesh.creation.cylinder(0.3, 1.0, sections=12).export(root / "sub" / "can.stl")
    (root / "sub" / "broken.obj").write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")  # zero extent
    (root / "notes.txt").write_text("not a mesh")
    return root


def _files(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


def test_prepare_folder_skip_done_and_failures(mesh_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["prepare", str(mesh_folder), "-o", str(out), *ARGS]) == 0
    text = capsys.readouterr().out
    assert "3 prepared, 0 already done, 1 failed of 4 meshes" in text
    names = ("box", "sub/ball", "sub/can")
    assert _files(out) == sorted([f"{n}{s}" for n in names for s in ("_surface.npz", "_sdf.npz", "_watertight.obj")]
                                 + [prepare.FAILED_LOG])
    failed = (out / prepare.FAILED_LOG).read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith(str(mesh_folder / "sub" / "broken.obj")) and "extent" in failed[0]
    surf = np.load(out / "sub" / "ball_surface.npz")
    assert surf["random_surface"].shape == (600, 6) and surf["random_surface"].dtype == np.float16
    # a second run skips what is done and retries only the failure
    before = {f: os.path.getmtime(out / f) for f in _files(out) if f.endswith(".npz")}
    assert cli.main(["prepare", str(mesh_folder), "-o", str(out), *ARGS]) == 0
    assert "0 prepared, 3 already done, 1 failed of 4 meshes" in capsys.readouterr().out
    assert before == {f: os.path.getmtime(out / f) for f in before}


def test_prepare_shards_cover_the_set_and_match_one_run(mesh_folder, tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    (mesh_folder / "sub" / "broken.obj").unlink()
    assert cli.main(["prepare", str(mesh_folder), "-o", str(whole), *ARGS]) == 0
    for rank in (0, 1):
        assert cli.main(["prepare", str(mesh_folder), "-o", str(parts), "--rank", str(rank), "--world-size", "2",
                         "--workers", "2" if rank else "1", *ARGS]) == 0
    assert _files(whole) == _files(parts)
    for f in _files(whole):  # per-file seeds come from the name: sharding and workers change no byte
        assert (whole / f).read_bytes() == (parts / f).read_bytes(), f


def test_prepare_cli_errors(tmp_path, capsys):
    for argv, match in [(["prepare", str(tmp_path / "nope"), "-o", str(tmp_path)], "IN="),
                        (["prepare", str(tmp_path), "-o", str(tmp_path), "--rank", "2", "--world-size", "2"], "rank"),
                        (["prepare", str(tmp_path), "-o", str(tmp_path), "--workers", "0"], "workers")]:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0]


def test_ray_data_recipe_matches_one_local_run(tmp_path):
    """prepare.ray_prepare (ray.data over the file list) on a local ray.init(num_cpus=2): the same files, byte for
    byte, as the plain run; a failing mesh is a row with its error; a second run skips what is done."""
    ray = pytest.importorskip("ray")
    root = tmp_path / "in"
    root.mkdir()
    trimesh.creation.box(extents=(1.0, 0.8, 0.6)).export(root / "box.obj")
    trimesh.creation.icosphere(2).export(root / "ball.ply")
    (root / "broken.obj").write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")
    opts = dict(resolution=24, eps=0.05, seed=7, count=600)
    plain = tmp_path / "plain"
    prepare.run([str(root)], str(plain), progress=False, **opts)
    # the workers import the flowkernels this test runs (a source checkout need not be installed)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(os.path.dirname(prepare.__file__))}})
    try:
        rows = {r["name"]: r for r in prepare.ray_prepare([str(root)], str(tmp_path / "ray"), **opts)}
        again = prepare.ray_prepare([str(root)], str(tmp_path / "ray"), **opts)
    finally:
        ray.shutdown()
    assert sorted(rows) == ["ball", "box", "broken"]
    assert rows["box"]["error"] == rows["ball"]["error"] == "" and "extent" in rows["broken"]["error"]
    made = sorted(f for f in _files(tmp_path / "ray"))
    assert made == sorted(f for f in _files(plain) if f != prepare.FAILED_LOG)
    for f in made:
        assert (tmp_path / "ray" / f).read_bytes() == (plain / f).read_bytes(), f
    assert {r["name"]: r["seconds"] for r in again if not r["error"]} == {"ball": 0.0, "box": 0.0}
