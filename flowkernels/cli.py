"""The `flowkernels` command line: mesh, eval, demo, bench, info (`flowkernels COMMAND --help` for each)."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ._cli_checks import Parser, device, input_file, one_line, output_file, run


def _load_grid(path: str, option: str = "GRID"):
    """The array held by a .npy / .npz / .pt file (an .npz's "grid" entry or its first; a .pt tensor or a dict's
    "grid" entry or its first value); one-line errors for missing, unreadable and empty files."""
    import torch

    input_file(option, path, (".npy", ".npz", ".pt"))
    try:
        if path.lower().endswith(".npy"):
            return np.load(path, allow_pickle=False)
        if path.lower().endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                if not data.files:
                    raise ValueError(f"{option} {path!r}: the .npz file holds no arrays")
                return data["grid" if "grid" in data.files else data.files[0]]
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except ValueError as exc:
        if str(exc).startswith(option):
            raise
        raise ValueError(f"{option} {path!r}: cannot read it ({one_line(exc)})") from None
    except Exception as exc:  # zip, pickle and EOF errors of damaged files
        raise ValueError(f"{option} {path!r}: cannot read it ({type(exc).__name__}: {one_line(exc)})") from None
    if isinstance(obj, dict):
        if not obj:
            raise ValueError(f"{option} {path!r}: the .pt file holds an empty dict")
        obj = obj.get("grid", next(iter(obj.values())))
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{option} {path!r}: expected a tensor (or a dict of tensors), found {type(obj).__name__}")
    return obj


def _numbered(path: str, index: int) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}_{index}{ext}"


def cmd_mesh(args) -> int:
    import torch

    from .marching_cubes import marching_cubes
    from .mesh import FORMATS, export

    output_file("-o/--output", args.output, FORMATS)
    dev = device("--device", args.device)
    grid = torch.as_tensor(_load_grid(args.grid))
    if grid.dim() not in (3, 4):
        raise ValueError(f"GRID {args.grid!r} holds an array of shape {tuple(grid.shape)}; expected [X, Y, Z] or "
                         "[B, X, Y, Z]")
    if grid.numel() == 0:
        raise ValueError(f"GRID {args.grid!r} holds an empty array of shape {tuple(grid.shape)}")
    if not (grid.is_floating_point()):
        grid = grid.to(torch.float32)
    if dev is not None:
        grid = grid.to(dev)
    bounds = None
    if args.bounds is not None:
        if len(args.bounds) not in (1, 2, 6):
            raise ValueError(f"--bounds takes 1 (s), 2 (lo hi) or 6 (xmin ymin zmin xmax ymax zmax) numbers, "
                             f"got {len(args.bounds)}")
        bounds = args.bounds[0] if len(args.bounds) == 1 else args.bounds
    start = time.perf_counter()
    meshes = marching_cubes(grid, args.level, bounds=bounds)
    if grid.is_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    batched = grid.dim() == 4
    meshes = meshes if batched else [meshes]
    print(f"{args.grid}: grid {tuple(grid.shape)} {str(grid.dtype).replace('torch.', '')} on {grid.device}, "
          f"level {args.level}, {'world' if bounds is not None else 'voxel-index'} coordinates, "
          f"meshed in {elapsed * 1e3:.1f} ms :")
    for i, mesh in enumerate(meshes):
        out = _numbered(args.output, i) if batched else args.output
        name = f"grid {i}" if batched else "the grid"
        if len(mesh.faces) == 0:
            values = grid[i] if batched else grid
            finite = values[torch.isfinite(values)]
            span = (f"values span [{float(finite.min()):.4g}, {float(finite.max()):.4g}]" if finite.numel()
                    else "no finite values")
            print(f"warning: level {args.level} crosses no cell of {name} ({span}): no surface, "
                  f"{out} not written", file=sys.stderr)
            continue
        export(mesh, out)
        print(f"  {len(mesh.verts)} vertices, {len(mesh.faces)} faces -> {out}")
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    from . import __version__, _native

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        ext = _native.load()
        native = f"built ({ext.__file__})"
        cuda_built = "yes" if ext.cuda_built() else "no (CPU-only build; FLOWKERNELS_CUDA=ON to require it)"
    except RuntimeError as exc:
        native, cuda_built = f"not available: {one_line(exc)}", "unknown"
    print(f"flowkernels {__version__}")
    print(f"python      {platform.python_version()} ({sys.executable})")
    print(f"torch       {torch.__version__} (CUDA {torch.version.cuda or 'none: CPU build'})")
    print(f"triton      {triton_version}")
    print(f"numpy       {np.__version__}")
    print(f"extension   {native}")
    print(f"CUDA driver of the extension: {cuda_built}")
    print(f"devices     cpu ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads)")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"            cuda:{i} {p.name} ({p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor})")
    else:
        print("            no CUDA device visible")
    return 0


def _load_shape(path: str, option: str):
    """A mesh (.ply .obj .off .stl .glb with faces) or a point cloud (.npy .npz .pt [N, 3] or [N, 6] with normals,
    or a mesh file without faces)."""
    import os

    if not os.path.isfile(path):
        raise ValueError(f"{path!r}: no such file")
    if path.endswith((".npy", ".npz", ".pt")):
        arr = np.asarray(_load_grid(path, option), dtype=np.float64)
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

    for option, value in (("--points", args.points), ("--iou-points", args.iou_points)):
        if value < 1:
            raise ValueError(f"{option} {value}: must be at least 1")
    device("--device", args.device)  # a named error before the files are read (torch's assertion otherwise)
    pred, gt = _load_shape(args.pred, "PRED"), _load_shape(args.gt, "GT")
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


def build_parser() -> Parser:
    """The `flowkernels` parser with every sub-command."""
    from . import __version__

    parser = Parser(prog="flowkernels", description="Fused kernels for flow-matching 3D generative models: "
                    "marching cubes, mesh metrics, a demo and benchmarks from the command line.")
    parser.add_argument("--version", action="version", version=f"flowkernels {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    mesh = sub.add_parser("mesh", help="extract a mesh from a dense grid file",
                          description="Extract the LEVEL isosurface of a dense grid file as a mesh file.")
    mesh.add_argument("grid", metavar="GRID", help="GRID.npy / .npz / .pt holding an [X, Y, Z] array, or a batch "
                      "[B, X, Y, Z] (written as OUT_0.glb, OUT_1.glb, ...)")
    mesh.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.glb / .ply / .obj / .stl")
    mesh.add_argument("--level", type=float, default=0.0, help="isovalue of the surface")
    mesh.add_argument("--bounds", type=float, nargs="+", metavar="B",
                      help="world box: s (the cube [-s, s]^3) | lo hi | xmin ymin zmin xmax ymax zmax; without it "
                      "vertices are in voxel-index coordinates")
    mesh.add_argument("--device", default=None, help="cpu or cuda (default: where the file's tensor is)")
    mesh.set_defaults(fn=cmd_mesh)
    ev = sub.add_parser("eval", help="reconstruction metrics of PRED against GT (meshes or point clouds)")
    ev.add_argument("pred", help="PRED mesh (.ply .obj .off .stl .glb) or point cloud (.npy .npz .pt, [N, 3])")
    ev.add_argument("gt", help="GT mesh or point cloud")
    ev.add_argument("--convention", default="occnet", choices=("occnet", "pytorch3d", "kaolin", "open3d"),
                    help="whose definitions of the metrics to use")
    ev.add_argument("--points", type=int, default=100_000, help="surface samples per mesh")
    ev.add_argument("--iou-points", type=int, default=100_000, help="query points of the volume IoU")
    ev.add_argument("--thresholds", type=float, nargs="+", help="F-score distances (default 0.01 0.015 0.02)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the surface sampling")
    ev.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(fn=cmd_eval)
    from .bench import add_parser as add_bench
    from .compile_check import add_parser as add_compile_check
    from .demo import add_parser as add_demo
    from .prepare import add_parser as add_prepare

    add_demo(sub)
    add_bench(sub)
    add_compile_check(sub)
    add_prepare(sub)
    info = sub.add_parser("info", help="versions, the native extension and the devices flowkernels sees")
    info.set_defaults(fn=cmd_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.fn, args, f"flowkernels {args.command}")


if __name__ == "__main__":
    sys.exit(main())
