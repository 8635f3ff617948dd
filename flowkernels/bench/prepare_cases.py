"""`prepare` benchmarks: Hunyuan3D-2.1's watertight_and_sample.py (on libigl, `original`) against the
flowkernels drop-in, whole pipeline per mesh file, one call each (the original takes minutes at 256^3), with the
seconds of each stage (load, watertight, surface, sharp, labels, write) recorded per implementation.

On CUDA (`--device cuda --ops prepare --sizes 256`): the pipeline on the GPU from the loaded, normalised mesh to
the fp16 samples and labels on the device (upload, watertight, surface, sharp, labels), timed as a whole over
repeated calls, with one synchronised pass per stage recorded in info.stages_s (and the download + file writing,
which is not part of the timed call), and one warm run of the drop-in with device="cuda" from the mesh file to the
three files written, per stage (info.stages_s.dropin_file_to_file).
"""
from __future__ import annotations

import os
import tempfile

from .registry import Built, Case, register

PREPARE_MESHES = ("bunny", "torus12k")


def _mesh_file(name: str, folder: str) -> str:
    import trimesh

    if name == "bunny":
        import pymeshfix
        return os.path.join(os.path.dirname(pymeshfix.__file__), "examples", "StanfordBunny.ply")
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.35, major_sections=100, minor_sections=60)
    path = os.path.join(folder, "torus12k.obj")  # 12,000 faces
    torus.export(path)
    return path


def _prepare_case(name: str, resolution: int):
    def build(device):
        from ..compat.hunyuan3d_data import watertight_and_sample
        from ..reference import hunyuan3d_original as original

        folder = tempfile.mkdtemp(prefix="flowkernels-bench-prepare-")
        path = _mesh_file(name, folder)
        stages = {}
        info = {"mesh": name, "resolution": resolution, "stages_s": stages, "folder": folder}

        def ours():
            _, times = watertight_and_sample(path, os.path.join(folder, "ours"), resolution=resolution, seed=0,
                                             return_timings=True)
            stages["flowkernels"] = {k: round(v, 4) for k, v in times.items()}

        impls, skipped = {"flowkernels": ours}, {}
        try:
            import igl  # noqa: F401
            import scipy.stats  # noqa: F401

            def theirs():
                times = original.watertight_and_sample(path, os.path.join(folder, "original"), resolution)
                stages["original"] = {k: round(v, 4) for k, v in times.items()}
            impls = {"original": theirs, **impls}
        except ImportError as exc:
            skipped["original"] = f"needs libigl and scipy ({exc})"
        return Built(impls, skipped=skipped, info=info, single_call=True)
    return build


def _prepare_cuda_case(name: str, resolution: int):
    def build(device):
        import time

        import numpy as np
        import torch

        from .. import data, data_device
        from ..compat.hunyuan3d_data import load_mesh, write_obj

        folder = tempfile.mkdtemp(prefix="flowkernels-bench-prepare-")
        V, F = load_mesh(_mesh_file(name, folder))
        V = data.normalize_to_unit_box(V)
        dev = torch.device(device)

        def run(timings=None):
            t = time.perf_counter()

            def mark(stage):
                nonlocal t
                if timings is not None:
                    torch.cuda.synchronize(dev)
                    timings[stage] = time.perf_counter() - t
                    t = time.perf_counter()

            mesh = data_device.upload_mesh(V, F, dev)  # checked and boxed on the host, as the drop-in does
            mark("upload")
            shell = data_device.watertight(mesh.verts, mesh.faces, resolution, 2.0 / 256, False, box=mesh.box)
            mark("watertight")
            stage = {}
            out = data.sample_mesh(shell, data.SAMPLES, 0, timings=stage if timings is not None else None)
            if timings is not None:
                timings.update(stage)
            return shell, out

        run()  # warm-up: kernels loaded, the caching allocator filled
        passes = []
        for _ in range(3):
            stage = {}
            t0 = time.perf_counter()
            shell, (surface, sdf) = run(stage)
            stage["whole"] = time.perf_counter() - t0
            passes.append(stage)
        stages = {k: round(float(np.median([p[k] for p in passes])), 5) for k in passes[0]}
        t = time.perf_counter()
        np.savez(os.path.join(folder, "ours_surface.npz"), **{k: x.cpu().numpy() for k, x in surface.items()})
        np.savez(os.path.join(folder, "ours_sdf.npz"), **{k: x.cpu().numpy() for k, x in sdf.items()})
        write_obj(os.path.join(folder, "ours_watertight.obj"), shell.verts.cpu().numpy(), shell.faces.cpu().numpy())
        stages["download+write"] = round(time.perf_counter() - t, 5)
        # the drop-in file to file (load and normalise on the host, upload, pipeline, download, write), warm
        from ..compat.hunyuan3d_data import watertight_and_sample
        _, dropin = watertight_and_sample(_mesh_file(name, folder), os.path.join(folder, "dropin"),
                                          resolution=resolution, seed=0, device=dev, return_timings=True)
        info = {"mesh": name, "resolution": resolution, "folder": folder, "shell_faces": int(len(shell.faces)),
                "stages_s": {"flowkernels": stages,
                             "dropin_file_to_file": {k: round(v, 5) for k, v in dropin.items()}}}
        return Built({"flowkernels": lambda: run()}, info=info,
                     skipped={"original": "CPU only (minutes per mesh): see the CPU prepare cases"})
    return build


for _name in PREPARE_MESHES:
    register(Case("prepare", f"{_name}-64", _prepare_case(_name, 64), baseline="original", devices=("cpu",),
                  implementations=("original", "flowkernels")))
    # minutes for the original: run with --sizes 256
    register(Case("prepare", f"{_name}-256", _prepare_case(_name, 256), baseline="original", devices=("cpu",),
                  implementations=("original", "flowkernels"), on_request=True))
# the GPU pipeline (target: the bunny at 256^3 in <= 100 ms on an H100 / H200)
register(Case("prepare", "bunny-256", _prepare_cuda_case("bunny", 256), baseline="original", devices=("cuda",),
              implementations=("original", "flowkernels"), on_request=True))
