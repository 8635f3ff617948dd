"""The `flowkernels` command: `flowkernels mesh ...`, `flowkernels eval ...`, `flowkernels demo ...`."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _load_grid(path: str):
    import torch

    if path.endswith(".npy"):
        return np.load(path)
    if path.endswith(".npz"):
        data = np.load(path)
        key = "grid" if "grid" in data else data.files[0]
        return data[key]
    if path.endswith(".pt"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = obj.get("grid", next(iter(obj.values())))
        return obj
    raise ValueError(f"GRID={path!r}: expected a .npy, .npz or .pt file")


def cmd_mesh(args) -> int:
    import torch

    from .marching_cubes import marching_cubes
    from .mesh import export

    grid = _load_grid(args.grid)
    grid = torch.as_tensor(grid)
    if args.device:
        grid = grid.to(args.device)
    bounds = None
    if args.bounds is not None:
        bounds = args.bounds[0] if len(args.bounds) == 1 else args.bounds
    start = time.perf_counter()
    mesh = marching_cubes(grid, args.level, bounds=bounds)
    if grid.is_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    export(mesh, args.output)
    print(f"{args.grid}: grid {tuple(grid.shape)} {str(grid.dtype).replace('torch.', '')} on {grid.device}, "
          f"level {args.level}: {len(mesh.verts)} vertices, {len(mesh.faces)} faces in {elapsed * 1e3:.1f} ms "
          f"-> {args.output}")
    return 0

def _load_shape(path: str):
    """A mesh (.ply .obj .off .stl .glb with faces) or a point cloud (.npy .npz .pt [N, 3] or [N, 6] with normals,
    or a mesh file without faces)."""
    import os

    if not os.path.isfile(path):
        raise ValueError(f"{path!r}: no such file")
    if path.endswith((".npy", ".npz", ".pt")):
        arr = np.asarray(_load_grid(path), dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] not in (3, 6):
            raise ValueError(f"{path!r}: a point cloud must be an [N, 3] (or [N, 6] with normals) array, "
                             f"got shape {arr.shape}")
        return arr if arr.shape[1] == 3 else (arr[:, :3], arr[:, 3:])
    try:
        import trimesh
    except ImportError:
        raise ValueError("reading meshes needs trimesh: pip install 'flowkernels[mesh]'") from None
    try:
        shape = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types for unreadable files
        raise ValueError(f"{path!r}: cannot read it as a mesh or point cloud ({type(exc).__name__}: {exc})") from None
    if isinstance(shape, trimesh.Scene):
        shape = shape.to_geometry() if hasattr(shape, "to_geometry") else shape.dump(concatenate=True)
    faces = getattr(shape, "faces", None)
    if faces is not None and len(faces):
        return shape
    verts = np.asarray(getattr(shape, "vertices", np.empty((0, 3))), dtype=np.float64)
    if len(verts) == 0:
        raise ValueError(f"{path!r}: holds no vertices")
    return verts


def cmd_eval(args) -> int:
    import json

    from . import metrics

    pred, gt = _load_shape(args.pred), _load_shape(args.gt)
    thresholds = tuple(args.thresholds) if args.thresholds else metrics.DEFAULT_THRESHOLDS
    start = time.perf_counter()
    result = metrics.evaluate(pred, gt, n_points=args.points, convention=args.convention, thresholds=thresholds,
                              seed=args.seed, iou_points=args.iou_points, device=args.device)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps(dict(result, pred=args.pred, gt=args.gt, seconds=round(elapsed, 3))))
        return 0
    print(f"{args.pred} vs {args.gt} ({result['convention']} convention, {result['n_pred_points']} / "
          f"{result['n_gt_points']} points, {elapsed:.2f} s)")
    for key, value in result.items():
        if key not in ("convention", "n_pred_points", "n_gt_points"):
            print(f"  {key:<20} {'n/a (not defined here)' if value is None else f'{value:.6g}'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="flowkernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    mesh = sub.add_parser("mesh", help="extract a mesh from a dense grid file")
    mesh.add_argument("grid", help="GRID.npy / .npz / .pt holding an [X, Y, Z] array")
    mesh.add_argument("-o", "--output", required=True, help="OUT.glb / .ply / .obj / .stl")
    mesh.add_argument("--level", type=float, default=0.0)
    mesh.add_argument("--bounds", type=float, nargs="+", help="s | lo hi | xmin ymin zmin xmax ymax zmax")
    mesh.add_argument("--device", default=None, help="cpu or cuda (default: where the file's tensor is)")
    mesh.set_defaults(fn=cmd_mesh)
    ev = sub.add_parser("eval", help="reconstruction metrics of PRED against GT (meshes or point clouds)")
    ev.add_argument("pred", help="PRED mesh (.ply .obj .off .stl .glb) or point cloud (.npy .npz .pt, [N, 3])")
    ev.add_argument("gt", help="GT mesh or point cloud")
    ev.add_argument("--convention", default="occnet", choices=("occnet", "pytorch3d", "kaolin", "open3d"))
    ev.add_argument("--points", type=int, default=100_000, help="surface samples per mesh (default 100000)")
    ev.add_argument("--iou-points", type=int, default=100_000, help="query points of the volume IoU")
    ev.add_argument("--thresholds", type=float, nargs="+", help="F-score distances (default 0.01 0.015 0.02)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(fn=cmd_eval)
    from .bench import add_parser as add_bench
    from .compile_check import add_parser as add_compile_check
    from .demo import add_parser as add_demo

    add_demo(sub)
    add_bench(sub)
    add_compile_check(sub)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, TypeError, RuntimeError) as exc:
        parser.exit(2, f"flowkernels {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
