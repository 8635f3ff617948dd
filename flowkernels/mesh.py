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
        if isinstance(mesh_or_verts, (tuple, list)) and len(mesh_or_verts) in (2, 3):  # (verts, faces[, normals])
            verts, faces, normals = (tuple(mesh_or_verts) + (None,))[:3]
        else:
            verts, faces = getattr(mesh_or_verts, "verts", None), getattr(mesh_or_verts, "faces", None)
            normals = getattr(mesh_or_verts, "normals", None)
            if verts is None or faces is None:
                raise ValueError(f"mesh must be a flowkernels Mesh or (verts, faces), got "
                                 f"{type(mesh_or_verts).__name__}")
    else:
        verts = mesh_or_verts
    verts, faces, normals = _numpy(verts), _numpy(faces), _numpy(normals)
    _check_arrays(verts, faces, normals)
    kw = {"vertex_normals": normals} if normals is not None else {}
    return trimesh.Trimesh(vertices=verts, faces=faces, process=False, **kw)


def _check_arrays(verts, faces, normals):
    """trimesh keeps faces as given: an index past the vertices (or negative) was written into .ply / .obj / .glb
    files that no reader can load, without a word."""
    if verts.ndim != 2 or verts.shape[1] != 3 or not np.issubdtype(verts.dtype, np.floating):
        raise ValueError(f"verts must be a float [V, 3] array, got {verts.dtype} of shape {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be an integer [F, 3] array, got {faces.dtype} of shape {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"faces index vertices outside [0, {len(verts)}): {faces.min()} to {faces.max()}")
    if normals is not None and normals.shape != verts.shape:
        raise ValueError(f"normals have shape {normals.shape} but verts {verts.shape}")


def export(mesh, path: str):
    """Write a `Mesh` (or (verts, faces)) to `path`; the format comes from the extension (.glb, .obj, .ply, .stl)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"path={path!r}: the extension must be one of {FORMATS}")
    to_trimesh(mesh).export(path)
    return path
