"""`flowkernels prepare IN... -o DIR`: Hunyuan3D-style training data for many meshes.

Each mesh file (anything trimesh reads; folders are searched recursively) becomes DIR/<name>_surface.npz,
DIR/<name>_sdf.npz and DIR/<name>_watertight.obj, as Hunyuan3D-2.1's watertight_and_sample.py writes them
(flowkernels.compat.hunyuan3d_data). Files whose three outputs exist are skipped, so an interrupted run resumes;
a mesh that fails is logged to DIR/prepare_failed.tsv and skipped; a summary ends the run. --rank/--world-size
take every world-size-th file of the sorted list (job arrays); the per-file seed depends only on --seed and the
file's name, so sharding does not change any output.

--device cuda (or cuda:N) runs each mesh's pipeline on the GPU (flowkernels.data_device) and writes the same files.
With --workers N on CUDA, the worker processes share the GPUs out: with plain `cuda`, worker i runs on GPU
i mod (visible GPUs), so --workers 8 on 8 GPUs is one process per GPU; with `cuda:K`, all N run on GPU K (more
than one process per GPU overlaps one mesh's loading and file writing, which are on the CPU, with another's GPU
work). --workers may not exceed 4 per GPU (each process holds its own CUDA context and a 256^3 grid).

Beyond one machine: flowkernels.prepare.ray_prepare maps the file list through Ray Data, on the CPU or with
device="cuda" on the GPU Ray gives each task (see flowkernels/data.md).
"""
from __future__ import annotations

import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed

MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
FAILED_LOG = "prepare_failed.tsv"


def find_meshes(inputs):
    """[(path, name)] for the files and (recursively) the mesh files in the folders, sorted by name; `name` is
    the path under its folder without the extension (a file given directly: its stem)."""
    found = {}
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in os.walk(item):
                for f in files:
                    if f.lower().endswith(MESH_EXTENSIONS):
                        path = os.path.join(root, f)
                        found[os.path.splitext(os.path.relpath(path, item))[0]] = path
        elif os.path.isfile(item):
            found[os.path.splitext(os.path.basename(item))[0]] = item
        else:
            raise ValueError(f"IN={item!r} is neither a file nor a folder")
    return [(found[name], name) for name in sorted(found)]


def shard(items, rank: int, world_size: int):
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"--rank {rank} / --world-size {world_size}: need 0 <= rank < world-size")
    return items[rank::world_size]


def outputs(out_dir, name):
    from .compat.hunyuan3d_data import OUTPUT_SUFFIXES
    prefix = os.path.join(out_dir, name)
    return prefix, [prefix + s for s in OUTPUT_SUFFIXES]


def file_seed(seed, name):
    return None if seed is None else (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63


# Most worker processes one GPU takes (each holds its own CUDA context and a 256^3 grid and shell).
MAX_WORKERS_PER_GPU = 4

# The device of this worker process (set by _init_worker), used where prepare_one is given device="worker".
_WORKER_DEVICE = None


def worker_device(device, index, gpu_count):
    """The device worker `index` runs on: plain "cuda" spreads the workers over the GPUs round-robin; "cpu",
    "cuda:K" (and None) are taken as given."""
    if device == "cuda":
        return f"cuda:{index % max(gpu_count, 1)}"
    return device


def check_workers(device, workers, gpu_count):
    """--workers against --device: at most MAX_WORKERS_PER_GPU processes on any one GPU."""
    if workers < 1:
        raise ValueError(f"--workers {workers} must be >= 1")
    if device is None or not str(device).startswith("cuda"):
        return
    gpus = max(gpu_count, 1) if device == "cuda" else 1
    if -(-workers // gpus) > MAX_WORKERS_PER_GPU:
        raise ValueError(f"--workers {workers} with --device {device}: {-(-workers // gpus)} processes on one GPU "
                         f"(at most {MAX_WORKERS_PER_GPU}, each holds a CUDA context and a grid); use "
                         f"--workers <= {MAX_WORKERS_PER_GPU * gpus}, or --rank/--world-size across jobs")


def _init_worker(counter, device, gpu_count):
    global _WORKER_DEVICE
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _WORKER_DEVICE = worker_device(device, index, gpu_count)


def prepare_one(path, name, out_dir, resolution, eps, seed, outer_only, count, num_threads, device=None,
                device_path=False):
    """Run one mesh; returns (name, path, seconds, error or None). Never raises (a worker must not die).
    device="worker": this worker process's device (_init_worker). device_path: the device pipeline's code on CPU
    tensors (tests)."""
    from .compat.hunyuan3d_data import watertight_and_sample
    start = time.perf_counter()
    try:
        prefix, _ = outputs(out_dir, name)
        if device == "worker":
            device = _WORKER_DEVICE
        watertight_and_sample(path, prefix, resolution=resolution, eps=eps, seed=file_seed(seed, name),
                              outer_only=outer_only, count=count, num_threads=num_threads, device=device,
                              _device_path=device_path)
        return name, path, time.perf_counter() - start, None
    except Exception as exc:  # noqa: BLE001 - a broken mesh is logged and skipped, never stops the run
        return name, path, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"


def check_options(out_dir, resolution, eps, count):
    """The options every mesh shares, checked once before any mesh is read: a bad one would otherwise fail each
    mesh in turn (logged per mesh, exit code 1) instead of one named error up front."""
    from .data import check_grid_args

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):  # (missing folders are made, parents included)
        raise ValueError(f"-o/--output {out_dir!r} is a file, not a folder")
    check_grid_args(resolution, eps)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 6):
        raise ValueError(f"--count {count!r} must be an integer >= 6")


def run(inputs, out_dir, *, resolution=256, eps=2.0 / 256, seed=None, outer_only=False, count=None, workers=1,
        rank=0, world_size=1, progress=True, log=print, device=None, _device_path=False):
    """Prepare every mesh of `inputs` (this rank's share); returns the summary dict. device: None / "cpu" (the
    CPU pipeline), "cuda" (workers spread over the GPUs) or "cuda:N" (all on GPU N)."""
    from ._cli_checks import device as check_device

    dev = check_device("--device", device)
    check_options(out_dir, resolution, eps, count)
    device = None if dev is None or dev.type == "cpu" else ("cuda" if dev.index is None else str(dev))
    gpu_count = 0
    if device is not None:
        import torch
        gpu_count = torch.cuda.device_count()
    check_workers(device, workers, gpu_count)
    items = shard(find_meshes(inputs), rank, world_size)
    os.makedirs(out_dir, exist_ok=True)
    todo = [(p, n) for p, n in items if not all(os.path.exists(f) for f in outputs(out_dir, n)[1])]
    summary = {"meshes": len(items), "skipped_done": len(items) - len(todo), "done": 0, "failed": 0, "seconds": 0.0}
    threads = max(1, (os.cpu_count() or 1) // workers)
    from .data import SAMPLES
    count = SAMPLES if count is None else count
    per_mesh = "worker" if workers > 1 else worker_device(device, 0, gpu_count)
    args = [(p, n, out_dir, resolution, eps, seed, outer_only, count, threads, per_mesh, _device_path)
            for p, n in todo]
    start = time.perf_counter()
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="prepare", unit="mesh", disable=not progress)
    except ImportError:
        bar = None
    failed_log = os.path.join(out_dir, FAILED_LOG)

    def record(result):
        name, path, seconds, error = result
        if error is None:
            summary["done"] += 1
        else:
            summary["failed"] += 1
            with open(failed_log, "a") as f:
                f.write(f"{path}\t{error}\n")
            log(f"prepare: {path}: failed ({error}); logged to {failed_log}")
        if bar is not None:
            bar.update(1)

    if workers == 1:
        for a in args:
            record(prepare_one(*a))
    else:
        import multiprocessing
        # spawn: a forked child would inherit the parent's thread pools (OpenMP, torch) in an undefined state
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(ctx.Value("i", 0), device, gpu_count)) as pool:
            for fut in as_completed([pool.submit(prepare_one, *a) for a in args]):
                record(fut.result())
    if bar is not None:
        bar.close()
    summary["seconds"] = time.perf_counter() - start
    log(f"prepare: {summary['done']} prepared, {summary['skipped_done']} already done, {summary['failed']} failed "
        f"of {summary['meshes']} meshes (rank {rank}/{world_size}) in {summary['seconds']:.1f} s -> {out_dir}")
    return summary


def _ray_row(row, out_dir, resolution, eps, seed, outer_only, count, device=None):
    """One Ray Data row {path, name} -> {name, path, seconds, error} (error "" when done or already done)."""
    if all(os.path.exists(f) for f in outputs(out_dir, row["name"])[1]):
        return {"name": row["name"], "path": row["path"], "seconds": 0.0, "error": ""}
    name, path, seconds, error = prepare_one(row["path"], row["name"], out_dir, resolution, eps, seed, outer_only,
                                             count, 1, device)
    return {"name": name, "path": path, "seconds": seconds, "error": error or ""}


def ray_resources(device="cpu", num_gpus=None):
    """(device passed to each task, Ray resources per task) for ray_prepare's device and num_gpus, checked.
    "cuda" asks Ray for `num_gpus` of a GPU per task (default 1; 0.25 puts four tasks on a GPU, which overlaps
    one mesh's loading and writing with another's GPU work); Ray gives each task its GPU (CUDA_VISIBLE_DEVICES),
    so the task runs on "cuda" and a GPU index ("cuda:N") is refused."""
    import torch

    from ._validation import check_device

    if isinstance(device, torch.device):
        device = str(device)
    if device is not None and not isinstance(device, str):
        raise ValueError(f"device={device!r} must be 'cpu' or 'cuda'")
    dev = check_device("device", "cpu" if device is None else device, here=False)  # tasks run on other machines
    if dev.type == "cpu":
        if num_gpus is not None:
            raise ValueError(f"num_gpus={num_gpus!r} is for device='cuda' (device={device!r})")
        return None, {"num_cpus": 1}
    if dev.index is not None:
        raise ValueError(f"device={device!r}: Ray gives each task its own GPU (it sets CUDA_VISIBLE_DEVICES), so "
                         "a GPU index means nothing in a task; use device='cuda' (num_gpus: the share of a GPU "
                         "per task)")
    num_gpus = 1 if num_gpus is None else num_gpus
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or not 0 < num_gpus <= 1:
        raise ValueError(f"num_gpus={num_gpus!r} must be a number in (0, 1]: the share of one GPU per task (a "
                         "mesh's pipeline runs on one GPU)")
    return "cuda", {"num_cpus": 1, "num_gpus": float(num_gpus)}


def ray_prepare(inputs, out_dir, *, resolution=256, eps=2.0 / 256, seed=None, outer_only=False, count=None,
                device="cpu", num_gpus=None):
    """The same job on a Ray cluster (sets beyond one machine): one Ray Data task per mesh, one CPU each.
    Call ray.init(...) first (e.g. ray.init(num_cpus=2) locally, or address="auto" on a cluster); `out_dir`
    must be storage every node can write. Returns the per-mesh rows (failures carry their error).
    device: "cpu" (default) or "cuda": each task runs its mesh's pipeline on the GPU Ray gives it, holding
    `num_gpus` of it (default 1; see ray_resources); the cluster must have GPUs."""
    import functools

    task_device, resources = ray_resources(device, num_gpus)
    check_options(out_dir, resolution, eps, count)
    import ray

    from .data import SAMPLES
    if task_device is not None:
        if not ray.is_initialized():
            ray.init()  # what ray.data would do on first use; the GPUs are checked below
        if ray.cluster_resources().get("GPU", 0) <= 0:
            raise ValueError(f"device={device!r}: the Ray cluster has no GPU (ray.cluster_resources() lists none); "
                             "use device='cpu', or start Ray on nodes with GPUs")
    os.makedirs(out_dir, exist_ok=True)
    rows = [{"path": os.path.abspath(p), "name": n} for p, n in find_meshes(inputs)]
    fn = functools.partial(_ray_row, out_dir=os.path.abspath(out_dir), resolution=resolution, eps=eps, seed=seed,
                           outer_only=outer_only, count=SAMPLES if count is None else count, device=task_device)
    return ray.data.from_items(rows).map(fn, **resources).take_all()


def cmd_prepare(args) -> int:
    summary = run(args.inputs, args.output, resolution=args.resolution, eps=args.eps, seed=args.seed,
                  outer_only=args.outer_only, count=args.count, workers=args.workers, rank=args.rank,
                  world_size=args.world_size, progress=not args.no_progress, device=args.device)
    return 1 if summary["failed"] and not summary["done"] and not summary["skipped_done"] else 0


def add_parser(sub):
    p = sub.add_parser("prepare", help="Hunyuan3D-style training data (watertight mesh, surface and SDF samples)",
                       description=__doc__)
    p.add_argument("inputs", nargs="+", metavar="IN", help="mesh files or folders of mesh files")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="where the three files per mesh go")
    p.add_argument("--resolution", type=int, default=256, help="grid points per axis (default 256)")
    p.add_argument("--eps", type=float, default=2.0 / 256, help="offset distance of the shell (default 2/256)")
    p.add_argument("--seed", type=int, default=None, help="base seed (per-file seeds derive from it and the name)")
    p.add_argument("--outer-only", action="store_true", help="keep only the outer shell")
    p.add_argument("--count", type=int, default=None, help="surface samples per mesh (default 124928, as the original)")
    p.add_argument("--workers", type=int, default=1,
                   help="meshes in parallel; native threads are shared out; with --device cuda the processes are "
                   f"spread over the GPUs, at most {MAX_WORKERS_PER_GPU} per GPU (default 1)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda (every visible GPU) or cuda:N: where each mesh's pipeline runs")
    p.add_argument("--rank", type=int, default=int(os.environ.get("SLURM_ARRAY_TASK_ID", 0) or 0),
                   help="this job's shard (default: $SLURM_ARRAY_TASK_ID or 0)")
    p.add_argument("--world-size", type=int, default=1, help="number of shards (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_prepare)
    return p


if __name__ == "__main__":  # pragma: no cover
    from .cli import main
    sys.exit(main(["prepare", *sys.argv[1:]]))
