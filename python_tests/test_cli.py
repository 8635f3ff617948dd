"""The `flowkernels` command line as a newcomer meets it: one-line errors with exit code 2, batched output, warnings,
--version, info, help for every option."""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowkernels import __version__
from flowkernels.cli import build_parser, main

pytest.importorskip("trimesh")  # in the test extra: mesh files are written with it


def sphere(n=12, radius=0.6):
    ax = np.linspace(-1, 1, n, dtype=np.float32)
    return np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2) - radius


def fails(argv, capsys, match):
    """Runs the command; it must exit with code 2 and print exactly one line that contains `match`."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.npy"
    np.save(path, sphere())
    return path


def test_mesh_input_errors(tmp_path, grid_file, capsys):
    out = str(tmp_path / "out.glb")
    fails(["mesh", str(tmp_path / "missing.npy"), "-o", out], capsys, "no such file")
    fails(["mesh", str(tmp_path), "-o", out], capsys, "is a directory")
    (tmp_path / "grid.txt").write_text("1 2 3")
    fails(["mesh", str(tmp_path / "grid.txt"), "-o", out], capsys, ".npy / .npz / .pt")
    (tmp_path / "broken.npy").write_bytes(b"not a numpy file at all")
    fails(["mesh", str(tmp_path / "broken.npy"), "-o", out], capsys, "cannot read it")
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 truncated zip")
    fails(["mesh", str(tmp_path / "broken.pt"), "-o", out], capsys, "cannot read it")
    np.savez(tmp_path / "empty.npz")
    fails(["mesh", str(tmp_path / "empty.npz"), "-o", out], capsys, "holds no arrays")
    torch.save({}, tmp_path / "empty.pt")
    fails(["mesh", str(tmp_path / "empty.pt"), "-o", out], capsys, "empty dict")
    torch.save(torch.empty(0, 4, 4), tmp_path / "zero.pt")
    fails(["mesh", str(tmp_path / "zero.pt"), "-o", out], capsys, "empty array")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), np.float32))
    fails(["mesh", str(tmp_path / "flat.npy"), "-o", out], capsys, "[X, Y, Z]")


def test_mesh_output_and_option_errors(tmp_path, grid_file, capsys, monkeypatch):
    g = str(grid_file)
    fails(["mesh", g, "-o", str(tmp_path / "no" / "such" / "out.glb")], capsys, "does not exist")
    fails(["mesh", g, "-o", str(grid_file / "out.glb")], capsys, "does not exist")  # a file as the folder
    fails(["mesh", g, "-o", str(tmp_path / "out.xyz")], capsys, "extension")
    fails(["mesh", g, "-o", str(tmp_path)], capsys, "extension")
    fails(["mesh", g, "-o", str(tmp_path / "o.glb"), "--bounds", "1", "2", "3"], capsys, "--bounds")
    fails(["mesh", g, "-o", str(tmp_path / "o.glb"), "--level", "abc"], capsys, "--level")
    fails(["mesh", g], capsys, "required")
    fails(["mesh", g, "-o", str(tmp_path / "o.glb"), "--device", "tpu"], capsys, "not a device")
    if not torch.cuda.is_available():
        fails(["mesh", g, "-o", str(tmp_path / "o.glb"), "--device", "cuda"], capsys, "no CUDA device")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    fails(["mesh", g, "-o", str(tmp_path / "o.glb")], capsys, "not writable")


def test_mesh_writes_one_file_per_grid_of_a_batch_and_warns_on_no_surface(tmp_path, capsys):
    batch = np.stack([sphere(radius=0.5), sphere(radius=0.7), sphere(radius=5.0)])  # the last has no surface
    np.savez(tmp_path / "batch.npz", grid=batch)
    assert main(["mesh", str(tmp_path / "batch.npz"), "-o", str(tmp_path / "out.glb"), "--bounds", "1"]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "out_0.glb").is_file() and (tmp_path / "out_1.glb").is_file()
    assert not (tmp_path / "out_2.glb").exists() and not (tmp_path / "out.glb").exists()
    assert "warning: level 0.0 crosses no cell of grid 2" in captured.err and "not written" in captured.err
    import trimesh
    small, large = (trimesh.load(tmp_path / f"out_{i}.glb", force="mesh") for i in (0, 1))
    assert small.is_watertight and large.is_watertight and small.volume < large.volume


def test_version_info_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"flowkernels {__version__}"
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"flowkernels {__version__}" in out and f"torch       {torch.__version__}" in out
    assert "CUDA driver of the extension:" in out and "devices" in out
    parser = build_parser()
    top_help = parser.format_help()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert name in top_help, f"top-level help misses {name}"
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"flowkernels {name} {action.option_strings or action.dest} has no help"
        for action in sub._actions:  # defaults are shown
            if action.option_strings and action.default not in (None, False) and action.dest != "help":
                assert "default" in sub.format_help(), name


def test_demo_and_bench_argument_errors(tmp_path, capsys):
    fails(["demo", "--res", "15"], capsys, "--res")
    fails(["demo", "--steps", "0"], capsys, "--steps")
    fails(["demo", "--device", "tpu"], capsys, "not a device")
    (tmp_path / "file").write_text("x")
    fails(["demo", "--out", str(tmp_path / "file")], capsys, "is a file")
    fails(["bench", "--ops", "softmax"], capsys, "unknown")
    fails(["bench", "--device", "cpu", "--ops", "loss", "--sizes", "nosuchsize"], capsys, "matches no")
    fails(["bench", "--device", "cpu", "--json", str(tmp_path / "no" / "r.json")], capsys, "does not exist")
    if not torch.cuda.is_available():
        fails(["demo", "--device", "cuda"], capsys, "no CUDA device")
        fails(["bench", "--device", "cuda"], capsys, "no CUDA device")


def test_console_errors_have_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "flowkernels", "mesh", str(tmp_path / "missing.npy"), "-o",
                          str(tmp_path / "o.glb")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr


def test_eval_and_demo_number_and_device_errors(tmp_path, capsys):
    """--device cuda without a GPU printed torch's 'AssertionError: Torch not compiled with CUDA enabled';
    --points 0 / --iou-points -3 were accepted; an unreadable point cloud was called 'GRID'; --seed past int64
    gave 'Overflow when unpacking long long'."""
    cloud = tmp_path / "pc.npy"
    np.save(cloud, np.random.default_rng(0).random((50, 3)))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    if not torch.cuda.is_available():
        fails(["eval", str(cloud), str(cloud), "--device", "cuda"], capsys, "--device cuda: no CUDA device")
    fails(["eval", str(cloud), str(cloud), "--points", "0"], capsys, "--points 0")
    fails(["eval", str(cloud), str(cloud), "--iou-points", "-3"], capsys, "--iou-points -3")
    fails(["eval", str(tmp_path / "bad.npy"), str(cloud)], capsys, "PRED ")
    fails(["eval", str(cloud), str(tmp_path / "bad.npy")], capsys, "GT ")
    fails(["eval", str(cloud), str(cloud), "--seed", str(2**70)], capsys, "seed=")
    fails(["demo", "--seed", str(2**70)], capsys, "--seed")


@pytest.mark.parametrize("arch", ["99", "88", "90,99", "60"])
def test_compile_check_refuses_archs_llvm_cannot_target(arch):
    """--arch 99 passed the 70..130 range check and aborted the process inside LLVM (exit 134, no message)."""
    from flowkernels.compile_check import parse_archs
    with pytest.raises(ValueError, match="--arch="):
        parse_archs(arch)
    assert parse_archs("90,80,120") == (90, 80, 120)
