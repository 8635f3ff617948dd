"""Drop-in for Hunyuan3D-2.1's training-data script hy3dshape/tools/watertight/watertight_and_sample.py.

`watertight_and_sample(input_path, output_prefix)` writes the same three files as the script:
`{prefix}_surface.npz` (random_surface, sharp_surface: [124928, 6] fp16, points then normals),
`{prefix}_sdf.npz` (vol_points / random_near_points / sharp_near_points fp16 [N, 3] with their *_label fp16 [N])
and `{prefix}_watertight.obj`. The command line takes the script's --input_obj / --output_prefix:

    python -m flowkernels.compat.hunyuan3d_data --input_obj bunny.obj --output_prefix out/bunny [--seed 0]
        [--device cuda]

`device="cuda"` (`--device cuda`, `cuda:N`) runs the pipeline on the GPU (flowkernels.data_device): the mesh is
normalised, checked and boxed on the host, uploaded, made watertight, sampled and labelled there (reading back
only output sizes), and only the results come back for writing. The files have the same names, keys, shapes and
dtypes; the shell is the CPU pipeline's (same vertices, emitted in another order), the samples are drawn by a
torch generator on the device (reproducible with `seed`, but not the CPU run's draws), the labels are the CPU
labels of those points.

Differences from the original (see flowkernels/data.md): the watertight grid holds exact distances only in
the band that can move a triangle (the mesh is the same); labels take their sign from the distance grid the
shell came from instead of a fast winding number (same sign away from the shell; exact distances everywhere);
runs are reproducible with `seed`; a shell without sharp edges takes its sharp samples from the surface
instead of raising IndexError; `outer_only=True` keeps only the outer surface of the double shell; meshes load
through trimesh (any format it reads) instead of igl.read_triangle_mesh; it runs on current libigl-free setups.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .. import data

OUTPUT_SUFFIXES = ("_surface.npz", "_sdf.npz", "_watertight.obj")


def load_mesh(path):
    """(verts float64 [V, 3], faces int64 [F, 3]) of any mesh file trimesh reads (scenes are concatenated)."""
    try:
        import trimesh
    except ImportError as exc:
        raise RuntimeError("reading meshes needs trimesh: pip install 'flowkernels[data]'") from exc
    if not os.path.isfile(path):
        raise ValueError(f"input_path={path!r} is not a file")
    mesh = trimesh.load(path, force="mesh", process=False)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise ValueError(f"input_path={path!r} holds no triangles")
    return verts, faces


def normalize_to_unit_box(V):
    return data.normalize_to_unit_box(V)


def Watertight(V, F, epsilon=2.0 / 256, grid_res=256, outer_only=False):  # noqa: N802 - the original's name
    """(mc_verts float64, mc_faces int64): the original's `Watertight`, on the narrow-band core."""
    return data.watertight(V, F, grid_res, epsilon, outer_only)


def write_obj(path, verts, faces):
    """A plain OBJ (v / f lines, 1-based), as igl.write_obj writes it."""
    data.write_obj(path, verts, faces)


def resolve_device(device, option="device"):
    """None / "cpu" -> None (the CPU pipeline); "cuda", "cuda:N" or a torch.device -> that CUDA device, checked
    (a named error when it does not exist here, as the command lines' --device)."""
    if device is None:
        return None
    from .._validation import check_device

    dev = check_device(option, str(device) if not isinstance(device, str) else device)
    return None if dev.type == "cpu" else dev


def _sync(dev, timed):
    """Wait for the device only when the caller asked for per-stage times (the download at the end waits anyway)."""
    if timed and dev is not None and dev.type == "cuda":
        import torch
        torch.cuda.synchronize(dev)


def _check_output_prefix(output_prefix):
    """Before any work: the folder of output_prefix must be one that can exist and be written (a file in its path
    failed with a FileExistsError traceback after the whole pipeline had run)."""
    parent = os.path.dirname(os.path.abspath(output_prefix))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"output_prefix={output_prefix!r}: {existing!r} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"output_prefix={output_prefix!r}: {existing!r} is not writable")


def watertight_and_sample(input_path, output_prefix=None, *, resolution: int = 256, eps: float = 2.0 / 256,
                          seed=None, outer_only: bool = False, count: int = data.SAMPLES, num_threads=None,
                          device=None, return_timings: bool = False, _device_path: bool = False):
    """Run the original script's pipeline on one mesh file; returns the three paths written (and the seconds per
    stage with return_timings=True). output_prefix defaults to the input path without its extension.
    device: None or "cpu" (the CPU pipeline), "cuda" / "cuda:N" (the pipeline on that GPU, same files).
    _device_path (tests): run the device pipeline's code on CPU tensors (its CPU drivers), as CUDA would."""
    if output_prefix is None:
        output_prefix = os.path.splitext(input_path)[0]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 6:
        raise ValueError(f"count={count!r} must be an integer >= 6")
    _check_output_prefix(output_prefix)
    dev = resolve_device(device)
    on_device = dev is not None or _device_path
    times = {}
    t = time.perf_counter()
    V, F = load_mesh(input_path)
    V = data.normalize_to_unit_box(V)
    if on_device:  # checked and boxed on the host, so the device pipeline reads nothing back before its meshing
        from .. import data_device
        mesh = data_device.upload_mesh(V, F, dev if dev is not None else "cpu")
        _sync(dev, return_timings)
    times["load"] = time.perf_counter() - t
    t = time.perf_counter()
    if on_device:
        data.check_grid_args(resolution, eps)
        shell = data_device.watertight(mesh.verts, mesh.faces, int(resolution), float(eps), outer_only,
                                       num_threads=data._threads(num_threads), box=mesh.box)
        _sync(dev, return_timings)
    else:
        shell = data.watertight(V, F, resolution, eps, outer_only, return_shell=True, num_threads=num_threads)
    times["watertight"] = time.perf_counter() - t
    if len(shell.faces) == 0:
        raise ValueError(f"input_path={input_path!r}: the watertight surface is empty")
    t = time.perf_counter()
    surface_data, sdf_data = data.sample_mesh(shell, count, seed, num_threads=num_threads, timings=times)
    times["sample"] = time.perf_counter() - t
    t = time.perf_counter()
    verts, faces = shell.verts, shell.faces
    if on_device:  # the download: the results only
        surface_data = {k: x.cpu().numpy() for k, x in surface_data.items()}
        sdf_data = {k: x.cpu().numpy() for k, x in sdf_data.items()}
        verts, faces = verts.cpu().numpy(), faces.cpu().numpy()
        if np.isnan(surface_data["random_surface"][:1]).any():  # the device path's mark of a shell without area
            raise ValueError(f"input_path={input_path!r}: the watertight surface has no area to sample")
    parent = os.path.dirname(output_prefix)
    if parent:
        os.makedirs(parent, exist_ok=True)
    paths = tuple(f"{output_prefix}{suffix}" for suffix in OUTPUT_SUFFIXES)
    np.savez(paths[0], **surface_data)
    np.savez(paths[1], **sdf_data)
    write_obj(paths[2], verts, faces)
    times["write"] = time.perf_counter() - t
    return (paths, times) if return_timings else paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Process an OBJ file and output surface and SDF data.")
    parser.add_argument("--input_obj", type=str, required=True, help="Path to the input OBJ file")
    parser.add_argument("--output_prefix", type=str, default=None,
                        help="Base name for output files (default: input OBJ filename without extension)")
    parser.add_argument("--resolution", type=int, default=256, help="grid points per axis (default 256)")
    parser.add_argument("--eps", type=float, default=2.0 / 256, help="offset distance (default 2/256)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    parser.add_argument("--outer_only", action="store_true", help="keep only the outer shell")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), or cuda / cuda:N: the whole pipeline on that GPU, the same files")
    args = parser.parse_args(argv)
    try:
        dev = resolve_device(args.device, "--device")
        watertight_and_sample(args.input_obj, args.output_prefix, resolution=args.resolution, eps=args.eps,
                              seed=args.seed, outer_only=args.outer_only, device=dev)
    except (ValueError, RuntimeError, OSError) as exc:
        parser.exit(2, f"watertight_and_sample: error: {' '.join(str(exc).split())}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
