"""`prepare` benchmarks: Hunyuan3D-2.1's watertight_and_sample.py (on libigl, `original`) against the
flowkernels drop-in, whole pipeline per mesh file, one call each (the original takes minutes at 256^3), with the
seconds of each stage (load, watertight, surface, sharp, labels, write) recorded per implementation.
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


for _name in PREPARE_MESHES:
    register(Case("prepare", f"{_name}-64", _prepare_case(_name, 64), baseline="original", devices=("cpu",),
                  implementations=("original", "flowkernels")))
    # minutes for the original: run with --sizes 256
    register(Case("prepare", f"{_name}-256", _prepare_case(_name, 256), baseline="original", devices=("cpu",),
                  implementations=("original", "flowkernels"), on_request=True))
