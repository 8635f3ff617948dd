"""The drop-in watertight_and_sample and `flowkernels prepare` with device=: the device pipeline's code (run on CPU
tensors through the CPU drivers of the same cores, as CUDA tensors take it) writes the CPU pipeline's files, keys,
shapes and dtypes, with the CPU pipeline's shell and labels; --device errors; GPU sharing of --workers; on a CUDA
device, the CUDA run against the CPU one."""
import itertools
import os

import numpy as np
import pytest
import torch

from flowkernels import cli, data, prepare
from flowkernels.compat import hunyuan3d_data

trimesh = pytest.importorskip("trimesh")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (the CPU tests run the device path's code)")

SUFFIXES = hunyuan3d_data.OUTPUT_SUFFIXES
FP16_LABEL_ATOL = 4e-3  # fp16 points (<= 8.5e-4 moved) and labels (<= 9.8e-4 below 2), as test_data_device


def _seed():
    return int(torch.randint(0, 2**31, ()).item())  # follows the per-test seed printed by conftest


@pytest.fixture
def torus_file(tmp_path):
    path = tmp_path / "torus.obj"
    trimesh.creation.torus(0.3, 0.1, major_sections=40, minor_sections=20).export(path)
    return str(path)


def _cpu_shell(path, res, eps, outer_only):
    v, f = hunyuan3d_data.load_mesh(path)
    return data.watertight(data.normalize_to_unit_box(v), f, res, eps, outer_only, return_shell=True)


def _obj(path):
    m = trimesh.load(path, process=False)
    return np.asarray(m.vertices), np.asarray(m.faces)


def check_files_against_cpu(paths, cpu_paths, shell, seed):
    """The device run's files against the CPU run's: same keys / shapes / dtypes, the same shell, samples on it,
    labels = the CPU labels of the same (fp16) points."""
    for got, want in zip(paths[:2], cpu_paths[:2]):
        a, b = np.load(got), np.load(want)
        assert {k: (a[k].shape, a[k].dtype) for k in a.files} == {k: (b[k].shape, b[k].dtype) for k in b.files}
    (gv, gf), (wv, wf) = _obj(paths[2]), _obj(cpu_paths[2])
    # the same mesh; the bricks marching cubes of the device path emits it in its own order
    assert len(gf) == len(wf)
    np.testing.assert_array_equal(np.unique(gv, axis=0), np.unique(wv, axis=0))
    surface, sdf, cpu_sdf = np.load(paths[0]), np.load(paths[1]), np.load(cpu_paths[1])
    for key in ("random_surface", "sharp_surface"):
        s = surface[key].astype(np.float64)
        # on the shell up to the fp16 rounding of each coordinate (half its fp16 spacing)
        rounding = np.linalg.norm(np.spacing(np.abs(surface[key][:, :3])).astype(np.float64) / 2, axis=1)
        on = data.point_distance(s[:, :3], shell.verts, shell.faces)
        assert (on <= rounding + 1e-6).all(), f"{key}: {(on - rounding).max():.2e} off the shell (seed {seed})"
        norm = np.linalg.norm(s[:, 3:], axis=1)
        # face normals on the surface; on sharp edges the original's blend of the two vertex normals (not unit)
        low = 1 - 2e-3 if key == "random_surface" else 0.5
        assert ((norm >= low) & (norm <= 1 + 2e-3)).all(), f"{key} normals (seed {seed})"
    for name in ("vol", "random_near", "sharp_near"):
        pts = sdf[f"{name}_points"].astype(np.float32)
        want = data.shell_labels(shell, pts).astype(np.float16).astype(np.float32)
        got = sdf[f"{name}_label"].astype(np.float32)
        np.testing.assert_allclose(np.abs(got), np.abs(want), atol=FP16_LABEL_ATOL,
                                   err_msg=f"{name} labels (seed {seed})")
        # the sign may differ only where the fp16 rounding of the point moves it across the sign change: the labels
        # were taken at the unrounded point, somewhere in the box of half an fp16 ulp around the stored one. The
        # box reaches the sign change where its corners' signs differ (an outer-only grid's filled interior makes
        # the grid value jump there, so no slope bound serves), or where the stored point's label, the exact
        # distance to the shell near it, is within the box's half diagonal: the shell can cut an edge of the box
        # with all eight corners on one side (seen: a label of 7e-6 in a box of half diagonal 2e-4)
        flip = np.flatnonzero((got > 0) != (want > 0))
        if len(flip):
            stored = sdf[f"{name}_points"][flip]
            half = np.spacing(np.abs(stored)).astype(np.float32) / 2
            corners = np.stack([stored.astype(np.float32) + half * np.array(s, dtype=np.float32)
                                for s in itertools.product((-1, 1), repeat=3)], 1)
            signs = data.shell_labels(shell, corners.reshape(-1, 3)).reshape(len(flip), 8) > 0
            reaches = np.abs(data.shell_labels(shell, stored.astype(np.float32))) <= np.linalg.norm(half, axis=1)
            assert ((signs.any(1) & ~signs.all(1)) | reaches).all(), \
                f"{name} sign flips away from the shell (seed {seed})"
        # the same laws as the CPU run's draws: the share of inside points agrees (binomial sd <= 0.5 / sqrt(n))
        n = len(pts)
        inside, cpu_inside = (sdf[f"{name}_label"] > 0).mean(), (cpu_sdf[f"{name}_label"] > 0).mean()
        assert abs(inside - cpu_inside) <= 6 * 0.5 / np.sqrt(n), f"{name}: {inside} vs {cpu_inside} (seed {seed})"


@pytest.mark.parametrize("outer_only", [False, True])
def test_dropin_device_path_writes_the_cpu_pipeline_files(torus_file, tmp_path, outer_only):
    seed = _seed()
    opts = dict(resolution=33, eps=2.0 / 33, count=3001, seed=seed, outer_only=outer_only)  # odd count
    cpu = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "cpu" / "t"), **opts)
    paths, times = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "dev" / "t"), _device_path=True,
                                                        return_timings=True, **opts)
    assert paths == tuple(str(tmp_path / "dev" / "t") + s for s in SUFFIXES)
    assert {"load", "watertight", "surface", "sharp", "labels", "write"} <= set(times)
    check_files_against_cpu(paths, cpu, _cpu_shell(torus_file, 33, 2.0 / 33, outer_only), seed)
    # seeded: the device path reproduces its own bytes
    again = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "again" / "t"), _device_path=True,
                                                 **opts)
    for a, b in zip(paths, again):
        assert open(a, "rb").read() == open(b, "rb").read(), f"{a} (seed {seed})"


def test_dropin_device_option_errors(torus_file, tmp_path, capsys):
    bad = ["tpu", "cuda:99", "nonsense:x"] + ([] if CUDA else ["cuda"])
    for name in bad:
        with pytest.raises(ValueError, match="device"):
            hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "x"), resolution=16, count=60,
                                                 device=name)
        with pytest.raises(SystemExit) as exc:
            hunyuan3d_data.main(["--input_obj", torus_file, "--output_prefix", str(tmp_path / "x"),
                                 "--device", name])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--device" in err[0] and name in err[0], err
    assert not any(os.path.exists(str(tmp_path / "x") + s) for s in SUFFIXES)
    # "cpu" and a torch.device are accepted: the CPU pipeline
    paths = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "c"), resolution=16, count=60, seed=1,
                                                 device=torch.device("cpu"))
    assert all(os.path.exists(p) for p in paths)


def test_prepare_device_errors_are_one_line(torus_file, tmp_path, capsys):
    bad = [["--device", "tpu"], ["--device", "cuda:99"]] + ([] if CUDA else [["--device", "cuda"]])
    for extra in bad:
        with pytest.raises(SystemExit) as exc:
            cli.main(["prepare", torus_file, "-o", str(tmp_path / "out"), "--no-progress", *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("flowkernels prepare: error: --device"), err
    assert not (tmp_path / "out").exists()  # checked before anything is made
    with pytest.raises(SystemExit) as exc:
        cli.main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0 and "--device DEVICE" in text and "cuda:N" in text and "per GPU" in text


def test_prepare_workers_share_the_gpus():
    assert [prepare.worker_device("cuda", i, 3) for i in range(7)] == [f"cuda:{i % 3}" for i in range(7)]
    assert [prepare.worker_device("cuda:2", i, 3) for i in range(3)] == ["cuda:2"] * 3
    assert prepare.worker_device(None, 5, 0) is None
    cap = prepare.MAX_WORKERS_PER_GPU
    prepare.check_workers("cuda", 8 * cap, 8)      # cap per GPU over 8 GPUs
    prepare.check_workers("cuda:1", cap, 8)
    prepare.check_workers(None, 64, 0)             # the CPU pipeline: any number
    for device, workers, gpus in [("cuda", 8 * cap + 1, 8), ("cuda:0", cap + 1, 8), ("cuda", cap + 1, 1)]:
        with pytest.raises(ValueError, match=f"--workers {workers} with --device {device}"):
            prepare.check_workers(device, workers, gpus)
    with pytest.raises(ValueError, match="--workers 0"):
        prepare.check_workers("cuda", 0, 2)


def test_prepare_device_path_with_workers_matches_one_process(torus_file, tmp_path):
    """The device pipeline's code through prepare's worker pool (the initializer that gives each process its
    device): the same bytes as one process, and the CPU pipeline's shell."""
    root = tmp_path / "in"
    root.mkdir()
    os.replace(torus_file, root / "torus.obj")
    trimesh.creation.box(extents=(1.0, 0.8, 0.6)).export(root / "box.obj")
    opts = dict(resolution=24, eps=0.05, seed=_seed(), count=600, progress=False, _device_path=True)
    one = prepare.run([str(root)], str(tmp_path / "one"), **opts)
    two = prepare.run([str(root)], str(tmp_path / "two"), workers=2, **opts)
    assert one["done"] == two["done"] == 2 and one["failed"] == two["failed"] == 0
    for name in ("torus", "box"):
        for s in SUFFIXES:
            a, b = tmp_path / "one" / (name + s), tmp_path / "two" / (name + s)
            assert a.read_bytes() == b.read_bytes(), f"{name}{s} (seed {opts['seed']})"


@needs_cuda
@pytest.mark.parametrize("outer_only", [False, True])
def test_cuda_dropin_matches_the_cpu_run(torus_file, tmp_path, outer_only):
    seed = _seed()
    opts = dict(resolution=48, eps=2.0 / 48, count=5000, seed=seed, outer_only=outer_only)
    cpu = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "cpu" / "t"), **opts)
    dev_cpu = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "dcpu" / "t"), _device_path=True,
                                                   **opts)
    gpu = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "gpu" / "t"), device="cuda", **opts)
    check_files_against_cpu(gpu, cpu, _cpu_shell(torus_file, 48, 2.0 / 48, outer_only), seed)
    # the CUDA shell is the device path's on CPU tensors vertex for vertex and face for face (bricks both)
    assert open(gpu[2], "rb").read() == open(dev_cpu[2], "rb").read()
    again = hunyuan3d_data.watertight_and_sample(torus_file, str(tmp_path / "again" / "t"), device="cuda:0", **opts)
    for a, b in zip(gpu, again):
        assert open(a, "rb").read() == open(b, "rb").read(), f"{a} (seed {seed})"


@needs_cuda
def test_cuda_prepare_workers_match_one_process(torus_file, tmp_path, capsys):
    box = tmp_path / "box.obj"
    trimesh.creation.box(extents=(1.0, 0.8, 0.6)).export(box)
    opts = ["--resolution", "32", "--eps", "0.05", "--count", "2000", "--seed", str(_seed()), "--no-progress"]
    files = [torus_file, str(box)]
    assert cli.main(["prepare", *files, "-o", str(tmp_path / "one"), "--device", "cuda", *opts]) == 0
    assert cli.main(["prepare", *files, "-o", str(tmp_path / "two"), "--device", "cuda", "--workers", "2",
                     *opts]) == 0
    assert "2 prepared" in capsys.readouterr().out
    for name in ("torus", "box"):
        for s in SUFFIXES:
            assert (tmp_path / "one" / (name + s)).read_bytes() == (tmp_path / "two" / (name + s)).read_bytes()
