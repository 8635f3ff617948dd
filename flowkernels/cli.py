"""The `flowkernels` command: `flowkernels mesh ...`, `flowkernels demo ...`."""
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
    from .bench import add_parser as add_bench
    from .demo import add_parser as add_demo

    add_demo(sub)
    add_bench(sub)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as exc:
        parser.exit(2, f"flowkernels {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
