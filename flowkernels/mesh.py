"""Mesh export: flowkernels meshes to trimesh and to .glb / .obj / .ply / .stl files."""
from __future__ import annotations

import os

import numpy as np

FORMATS = (".glb", ".obj", ".ply", ".stl")


def _numpy(x):
    if x is None:
        return None
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def to_trimesh(mesh_or_verts, faces=None, normals=None):
    """A trimesh.Trimesh from a `Mesh` or (verts, faces[, normals]); no processing, so indices are kept."""
    try:
        import trimesh
    except ImportError as exc:
        raise RuntimeError("mesh export needs trimesh: pip install 'flowkernels[mesh]'") from exc
    if faces is None:
        verts, faces, normals = mesh_or_verts.verts, mesh_or_verts.faces, mesh_or_verts.normals
    else:
        verts = mesh_or_verts
    kw = {"vertex_normals": _numpy(normals)} if normals is not None else {}
    return trimesh.Trimesh(vertices=_numpy(verts), faces=_numpy(faces), process=False, **kw)


def export(mesh, path: str):
    """Write a `Mesh` to `path`; the format comes from the extension (.glb, .obj, .ply, .stl)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"path={path!r}: the extension must be one of {FORMATS}")
    to_trimesh(mesh).export(path)
    return path
