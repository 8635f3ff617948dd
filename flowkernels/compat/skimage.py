"""Drop-in for `skimage.measure.marching_cubes` on flowkernels' core (numpy in, numpy out).

Differences from scikit-image, by design: the mesh is topologically consistent (watertight on closed
surfaces) for both method names, and cells with a non-finite corner emit nothing instead of NaN vertices. Grid
values equal to the level count as below it, as in scikit-image (flowkernels.marching_cubes counts them as above).
"""
from __future__ import annotations

import numpy as np
import torch

from .._validation import check_choice
from ..marching_cubes import marching_cubes as _marching_cubes

_METHODS = {"lewiner": "lewiner", "lorensen": "lorensen"}


def _strict_level(volume: np.ndarray, level: float) -> float:
    """The level for flowkernels' core that reproduces scikit-image's side of a tie. scikit-image counts a grid
    value equal to the level as below it (inside is v > level); the core counts it as above (v >= level). On a
    plateau at the level (integer grids, masks: level=0 of a 0/1 mask) the two surfaces differ, or one is empty.
    Where some value equals the level, the core gets the next value above the level in the grid's dtype, where
    v >= that value is v > level; elsewhere the level is passed unchanged (the same mesh bit for bit)."""
    if not np.any(volume == level):
        return level
    kind = volume.dtype.type
    above = kind(level)
    if float(above) <= level:
        above = np.nextafter(above, kind(np.inf))
    return float(above)


def _value_range(volume: np.ndarray) -> tuple[float, float]:
    """(min, max) of the values, NaN left out, as np.nanmin / np.nanmax give them: one multithreaded pass of
    torch.aminmax over a writable contiguous float32 / float64 volume (half the time of numpy's two passes on a
    256^3 grid), numpy's when the volume holds a NaN or is any other array."""
    if volume.dtype in (np.float32, np.float64) and volume.flags.c_contiguous and volume.flags.writeable \
            and volume.size:
        lo, hi = (float(v) for v in torch.aminmax(torch.from_numpy(volume)))
        if lo == lo and hi == hi:
            return lo, hi
    return float(np.nanmin(volume)), float(np.nanmax(volume))


def marching_cubes(volume, level=None, *, spacing=(1.0, 1.0, 1.0), gradient_direction="descent", step_size=1,
                   allow_degenerate=True, method="lewiner", mask=None):
    """Returns (verts [V, 3] float32, faces [F, 3] int64, normals [V, 3] float32, values [V] float32)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be a 3D array, got shape {volume.shape}")
    if volume.dtype.kind not in "fiu":
        raise ValueError(f"volume has dtype {volume.dtype}; expected a numeric array")
    check_choice("method", method, _METHODS)
    if step_size != 1:
        raise ValueError(f"step_size={step_size} is not supported (only 1); subsample the volume instead")
    if mask is not None:
        raise ValueError("mask is not supported; set the values to exclude to NaN (those cells emit nothing)")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing={spacing} must be three positive numbers")
    if volume.dtype not in (np.float16, np.float32, np.float64):
        volume = volume.astype(np.float64)
    vmin, vmax = _value_range(volume)
    if level is None:
        level = 0.5 * (vmin + vmax)
    elif not vmin <= level <= vmax:
        raise ValueError("Surface level must be within volume data range.")
    bounds = [(0.0, s * (n - 1)) if n > 1 else (0.0, 1.0) for s, n in zip(spacing, volume.shape)]
    mesh = _marching_cubes(volume, _strict_level(volume, float(level)), bounds=bounds,
                           gradient_direction=gradient_direction, return_normals=True)
    verts, faces = mesh.verts, mesh.faces
    normals = -mesh.normals  # scikit-image's normals point down the gradient, against its own winding
    if not allow_degenerate and len(faces):
        a, b, c = (verts[faces[:, n]] for n in range(3))
        keep = np.linalg.norm(np.cross(b - a, c - a), axis=1) > 0
        faces = faces[keep]
    # the larger of the two grid values at the ends of the edge each vertex lies on
    idx = verts / np.asarray(spacing, dtype=np.float32)
    lo = np.clip(np.floor(idx).astype(np.int64), 0, np.asarray(volume.shape) - 1)
    hi = np.clip(np.ceil(idx).astype(np.int64), 0, np.asarray(volume.shape) - 1)
    values = np.maximum(volume[tuple(lo.T)], volume[tuple(hi.T)]).astype(np.float32)
    return verts, faces, normals, values
