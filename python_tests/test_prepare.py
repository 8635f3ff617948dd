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


def test_prepare_shared_options_fail_once_up_front(mesh_folder, tmp_path, capsys):
    """--resolution 1, --eps nan, --count 0 or a file as -o were reported per mesh ('failed', logged, exit 1)
    after reading every mesh: now one line and exit code 2 before any mesh is read."""
    (tmp_path / "file").write_text("x")
    for extra, match in [(["--resolution", "1"], "resolution=1"), (["--eps", "nan"], "eps=nan"),
                         (["--count", "0"], "--count 0")]:
        with pytest.raises(SystemExit) as exc:
            cli.main(["prepare", str(mesh_folder), "-o", str(tmp_path / "out"), "--no-progress", *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
        assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["prepare", str(mesh_folder), "-o", str(tmp_path / "file"), "--no-progress"])
    assert exc.value.code == 2 and "is a file" in capsys.readouterr().err


def test_ray_data_recipe_matches_one_local_run(tmp_path):
    """prepare.ray_prepare (ray.data over the file list) on a local ray.init(num_cpus=2): the same files, byte for
    byte, as the plain run; a failing mesh is a row with its error; a second run skips what is done;
    device="cuda" on a cluster without GPUs is a named error before any task runs."""
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
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(os.path.dirname(prepare.__file__))}})
    try:
        rows = {r["name"]: r for r in prepare.ray_prepare([str(root)], str(tmp_path / "ray"), device="cpu", **opts)}
        again = prepare.ray_prepare([str(root)], str(tmp_path / "ray"), **opts)
        with pytest.raises(ValueError, match="device='cuda': the Ray cluster has no GPU"):
            prepare.ray_prepare([str(root)], str(tmp_path / "gpu"), device="cuda", **opts)
    finally:
        ray.shutdown()
    assert not (tmp_path / "gpu").exists()
    assert sorted(rows) == ["ball", "box", "broken"]
    assert rows["box"]["error"] == rows["ball"]["error"] == "" and "extent" in rows["broken"]["error"]
    made = sorted(f for f in _files(tmp_path / "ray"))
    assert made == sorted(f for f in _files(plain) if f != prepare.FAILED_LOG)
    for f in made:
        assert (tmp_path / "ray" / f).read_bytes() == (plain / f).read_bytes(), f
    assert {r["name"]: r["seconds"] for r in again if not r["error"]} == {"ball": 0.0, "box": 0.0}


def test_ray_recipe_device_options_and_errors(tmp_path, monkeypatch):
    """ray_prepare's device: cpu (one CPU per task) or cuda (num_gpus of a GPU per task, the task on the GPU Ray
    gives it); bad values are errors naming the argument, raised before Ray is touched or a file is written."""
    import torch

    assert prepare.ray_resources() == prepare.ray_resources(None) == (None, {"num_cpus": 1})
    assert prepare.ray_resources(torch.device("cpu")) == (None, {"num_cpus": 1})
    assert prepare.ray_resources("cuda") == ("cuda", {"num_cpus": 1, "num_gpus": 1.0})
    assert prepare.ray_resources("cuda", 0.25) == ("cuda", {"num_cpus": 1, "num_gpus": 0.25})
    for kwargs, match in [(dict(device="tpu"), "device 'tpu'"), (dict(device="cuda:1"), "device='cuda:1': Ray gives"),
                          (dict(device=0), "device=0 must be"), (dict(device="meta"), "device 'meta'"),
                          (dict(device="cuda", num_gpus=0), "num_gpus=0 must be"),
                          (dict(device="cuda", num_gpus=1.5), "num_gpus=1.5 must be"),
                          (dict(device="cuda", num_gpus=True), "num_gpus=True must be"),
                          (dict(device="cuda", num_gpus="1"), "num_gpus='1' must be"),
                          (dict(device="cpu", num_gpus=1), "num_gpus=1 is for device='cuda'")]:
        with pytest.raises(ValueError, match=match):
            prepare.ray_prepare([str(tmp_path)], str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()
    seen = []
    monkeypatch.setattr(prepare, "prepare_one", lambda *a: seen.append(a) or (a[1], a[0], 0.5, None))
    row = prepare._ray_row({"path": "m.obj", "name": "m"}, str(tmp_path), 24, 0.05, 7, False, 600, device="cuda")
    assert row == {"name": "m", "path": "m.obj", "seconds": 0.5, "error": ""} and seen[0][8:] == (1, "cuda")
