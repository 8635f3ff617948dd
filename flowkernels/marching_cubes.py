"""Marching cubes on dense grids: one C++ core with a multithreaded CPU driver and a CUDA driver.

See flowkernels/marching_cubes.md for the design (welding, ordering, NaN handling, memory).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from typing import NamedTuple

import numpy as np
import torch

from . import _native
from ._validation import check_choice

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_DIRECTIONS = {"descent": False, "ascent": True}
# How ambiguous faces are resolved: name -> decide from values (marching_cubes docstring)
_AMBIGUITY = {"values": True, "signs": False}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# CPU algorithms, name -> the native driver's method code (csrc/mc_api.h). All give the same mesh; tests pass
# `cpu_method=` to check that they do. "bitplanes" (classify once into bit planes) is the fast default; "rowwalk"
# walks one row per thread (the first CUDA driver's design, an independent check); "bricks" runs the CUDA
# driver's algorithm (csrc/marching_cubes/brick.h) with warps emulated lane by lane. A new method adds one entry
# here and one code in mc_api.h.
CPU_METHODS = {"bitplanes": 0, "rowwalk": 1, "bricks": 2}
DEFAULT_CPU_METHOD = "bitplanes"


# CPU working memory (per-row counts, spans and offsets, and the bit planes) is rewritten by every call before it
# is read, so each thread keeps its buffer for the next call instead of having the kernel zero fresh pages each
# time (what that costs: marching_cubes.md). Buffers above
# _KEEP_BYTES (grids past ~700^3) are not kept, so an occasional huge grid does not pin its memory.
_KEEP_BYTES = 64 << 20
_cpu_work = threading.local()


def _cpu_work_buffer(words: int) -> torch.Tensor:
    buf = getattr(_cpu_work, "buf", None)
    if buf is not None and buf.numel() >= words:
        return buf[:words]
    buf = torch.empty(words, dtype=torch.int64)
    if 8 * words <= _KEEP_BYTES:
        _cpu_work.buf = buf
    return buf


class Mesh(NamedTuple):
    verts: torch.Tensor | np.ndarray    # [V, 3] float32, (i, j, k) axis order
    faces: torch.Tensor | np.ndarray    # [F, 3] int64
    normals: torch.Tensor | np.ndarray | None = None  # [V, 3] float32, unit, outward (toward values >= level)


class _Grid(NamedTuple):
    """One [X, Y, Z] grid as the driver reads it: address of element (0, 0, 0), strides in elements (any sign)."""
    data: int
    shape: tuple
    strides: tuple
    dtype: int
    device: torch.device
    owner: object  # the array or tensor that holds the memory, kept alive for the call


_NUMPY_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}


def _numpy_grid(array: np.ndarray) -> _Grid:
    # The CPU driver walks any strides, negative ones (g[::-1], np.flip(g)) included, so a view is passed as it is;
    # only byte-swapped data or strides that are not whole elements are copied, once.
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if any(s % array.itemsize for s in array.strides):
        array = array.copy()
    return _Grid(array.__array_interface__["data"][0], array.shape, tuple(s // array.itemsize for s in array.strides),
                 _NUMPY_CODES[array.dtype], torch.device("cpu"), array)


def _tensor_grid(tensor: torch.Tensor) -> _Grid:
    return _Grid(tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), _DTYPE_CODES[tensor.dtype],
                 tensor.device, tensor)


def _as_grids(grid):
    """(list of [X, Y, Z] grids, batched, numpy in) after checking type, dtype, device and rank."""
    if isinstance(grid, np.ndarray):
        if grid.dtype.newbyteorder("=") not in _NUMPY_CODES:
            raise ValueError(f"grid has dtype {grid.dtype}; expected float16, float32 or float64")
        shape, from_numpy = grid.shape, True
    elif isinstance(grid, torch.Tensor):
        if grid.dtype not in _DTYPE_CODES:
            raise ValueError(f"grid has dtype {grid.dtype}; expected float16, bfloat16, float32 or float64")
        if grid.device.type not in ("cpu", "cuda"):
            raise ValueError(f"grid is on {grid.device}; marching cubes runs on CPU or CUDA tensors")
        shape, from_numpy, grid = grid.shape, False, grid.detach()
    else:
        raise ValueError(f"grid must be a torch.Tensor or numpy.ndarray, got {type(grid).__name__}")
    if len(shape) not in (3, 4):
        raise ValueError(f"grid must be [X, Y, Z] or [B, X, Y, Z], got shape {tuple(shape)}")
    views = list(grid) if len(shape) == 4 else [grid]
    return [_numpy_grid(g) if from_numpy else _tensor_grid(g) for g in views], len(shape) == 4, from_numpy


_MAX_THREADS = 4096


def _resolve_threads(num_threads) -> int:
    """num_threads, else FLOWKERNELS_NUM_THREADS, else 0 (one per core)."""
    name, value = "num_threads", num_threads
    if not num_threads:
        name, value = "FLOWKERNELS_NUM_THREADS", os.environ.get("FLOWKERNELS_NUM_THREADS", "").strip() or 0
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"FLOWKERNELS_NUM_THREADS={value!r} is not an integer") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"num_threads must be an integer, got {type(value).__name__}")
    if not 0 <= value <= _MAX_THREADS:
        raise ValueError(f"{name}={value} must be between 0 (one per core) and {_MAX_THREADS}")
    return int(value)


def resolve_bounds(bounds, shape):
    """(origin, scale) per axis so that world = origin + index * scale, step (hi - lo) / (n - 1).

    bounds: None (index space); a scalar s (the cube [-s, s]^3); (lo, hi); ((lo, hi),) * 3 per axis;
    or Hunyuan3D's [xmin, ymin, zmin, xmax, ymax, zmax]."""
    if bounds is None:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    try:
        arr = np.asarray(bounds.detach().cpu() if isinstance(bounds, torch.Tensor) else bounds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bounds={bounds!r} is not a number or a sequence of numbers") from exc
    if arr.ndim == 0:
        lo, hi = np.full(3, -abs(arr)), np.full(3, abs(arr))
        if arr == 0:
            raise ValueError("bounds=0 gives an empty box")
    elif arr.shape == (2,):
        lo, hi = np.full(3, arr[0]), np.full(3, arr[1])
    elif arr.shape == (3, 2):
        lo, hi = arr[:, 0], arr[:, 1]
    elif arr.shape == (6,):
        lo, hi = arr[:3], arr[3:]
    else:
        raise ValueError(f"bounds has shape {arr.shape}; expected a scalar, (lo, hi), ((lo, hi),) * 3 or "
                         "[xmin, ymin, zmin, xmax, ymax, zmax]")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError(f"bounds={bounds!r} must be finite")
    if not (hi > lo).all():
        raise ValueError(f"bounds={bounds!r} is inverted or empty: need hi > lo on every axis")
    # Vertices are float32: a box whose corners or width float32 cannot hold would give inf vertices.
    with np.errstate(over="ignore"):
        width = hi - lo
    if not (np.isfinite(width).all() and max(np.abs(lo).max(), np.abs(hi).max(), width.max()) <= _FLOAT32_MAX):
        raise ValueError(f"bounds={bounds!r} overflows: the box's corners and width must fit in float32 "
                         f"(|value| <= {_FLOAT32_MAX:.3g}), the vertices' type")
    scale = tuple(float((h - l) / (n - 1)) if n > 1 else 0.0 for l, h, n in zip(lo, hi, shape))
    return tuple(float(v) for v in lo), scale


def _extract_one(grid: _Grid, level: float, origin, scale, flip: bool, return_normals: bool, threads: int,
                 method: int, decide: bool = True):
    ext = _native.load()
    device = grid.device
    nx, ny, nz = grid.shape
    rows = nx * ny
    def empty():
        return Mesh(torch.empty((0, 3), dtype=torch.float32, device=device),
                    torch.empty((0, 3), dtype=torch.int64, device=device),
                    torch.empty((0, 3), dtype=torch.float32, device=device) if return_normals else None)

    if rows * nz == 0:
        return empty()
    if device.type == "cuda" or method == CPU_METHODS["bricks"]:
        return _extract_bricks(grid, level, origin, scale, flip, return_normals, threads, decide) or empty()
    common = dict(dtype=grid.dtype, data=grid.data, shape=(nx, ny, nz), strides=grid.strides, level=level,
                  method=method, num_threads=threads, decide=decide)
    # CPU bit planes (1 bit per grid point, plus finite bits for rows with a NaN/inf): written by the count pass,
    # read by the emit pass.
    scratch_words = ext.mc_scratch_words(shape=(nx, ny, nz), method=method)
    # per row: counts (edge vertices, triangles, centre vertices), span (kmin, kmax), offsets (as counts)
    work = _cpu_work_buffer(8 * rows + scratch_words)
    counts, spans, offsets = work[:3 * rows], work[3 * rows:5 * rows], work[5 * rows:8 * rows]
    common["scratch"] = work[8 * rows:].data_ptr()
    ext.mc_count(counts=counts.data_ptr(), spans=spans.data_ptr(), **common)
    # a plain loop in the extension: torch's CPU ops would wake its thread pool for 65k rows
    n_edge, n_faces, n_centres = ext.mc_offsets_cpu(counts=counts.data_ptr(), offsets=offsets.data_ptr(), rows=rows)
    if n_faces == 0:
        return empty()
    n_verts = n_edge + n_centres  # centre vertices follow the edge vertices
    verts = torch.empty((n_verts, 3), dtype=torch.float32)
    faces = torch.empty((n_faces, 3), dtype=torch.int64)
    normals = torch.empty((n_verts, 3), dtype=torch.float32) if return_normals else None
    ext.mc_emit(offsets=offsets.data_ptr(), spans=spans.data_ptr(), verts=verts.data_ptr(), faces=faces.data_ptr(),
                normals=normals.data_ptr() if normals is not None else 0, origin=origin, scale=scale,
                flip=flip, centre_first=n_edge, **common)
    return Mesh(verts, faces, normals)


def _extract_bricks(grid: _Grid, level: float, origin, scale, flip: bool, return_normals: bool, threads: int,
                    decide: bool = True):
    """The brick algorithm (csrc/marching_cubes/brick.h): the CUDA driver, or the CPU method "bricks".
    Scratch (~0.64 byte per grid point) and the 4 totals live on the grid's device; reading the totals back is the
    one sync. Returns None for an empty mesh."""
    ext = _native.load()
    device = grid.device
    cuda = device.type == "cuda"
    if cuda:
        _native.require_cuda_build()
    common = dict(cuda=cuda, dtype=grid.dtype, data=grid.data, shape=tuple(grid.shape), strides=grid.strides,
                  level=level, num_threads=threads, decide=decide)
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        common["stream"] = torch.cuda.current_stream(device).cuda_stream if cuda else 0
        scratch = torch.empty(ext.mc_brick_scratch_bytes(cuda=cuda, shape=tuple(grid.shape)), dtype=torch.uint8,
                              device=device)
        common["scratch"] = scratch.data_ptr()
        totals = torch.empty(4, dtype=torch.int64, device=device)
        ext.mc_brick_count(totals=totals.data_ptr(), **common)
        n_edge, n_faces, n_active, n_centres = totals.tolist()  # the one read-back: output sizes
        if n_faces == 0:
            return None
        n_verts = n_edge + n_centres
        verts = torch.empty((n_verts, 3), dtype=torch.float32, device=device)
        faces = torch.empty((n_faces, 3), dtype=torch.int64, device=device)
        normals = torch.empty((n_verts, 3), dtype=torch.float32, device=device) if return_normals else None
        ext.mc_brick_emit(n_active=n_active, verts=verts.data_ptr(), faces=faces.data_ptr(),
                          normals=normals.data_ptr() if normals is not None else 0, origin=origin, scale=scale,
                          flip=flip, centre_first=n_edge, **common)
    return Mesh(verts, faces, normals)


def marching_cubes(grid, level: float = 0.0, *, bounds=None, gradient_direction: str = "descent",
                   return_normals: bool = False, num_threads: int | None = None, cpu_method: str = DEFAULT_CPU_METHOD,
                   ambiguity: str = "values"):
    """Extract the `level` isosurface of a dense grid as a welded triangle mesh.

    grid: torch tensor (CPU or CUDA) or numpy array, float16/bfloat16/float32/float64, [X, Y, Z] or [B, X, Y, Z].
    Returns a `Mesh(verts [V, 3] float32, faces [F, 3] int64, normals or None)` on the grid's device (numpy in,
    numpy out); a batch gives a list of meshes. Vertices follow the array axes (i, j, k), in index space or in
    world space given `bounds` (see `resolve_bounds`): one per crossed grid edge, then a few cell-centre vertices
    (cells whose faces, decided from values as scikit-image's Lewiner method decides them, join into loops of 8 or
    more vertices). gradient_direction="descent" (scikit-image's default)
    winds faces counter-clockwise seen from the side where values >= level: outward for an SDF that is
    negative inside. Cells with a non-finite corner emit nothing. Outputs carry no autograd history.
    cpu_method: the CPU algorithm, one of CPU_METHODS (all give the same mesh; ignored for CUDA grids).
    ambiguity: "values" decides ambiguous faces and case 4's interior from the values (scikit-image's topology);
    "signs" leaves them all unjoined (the classic tables' topology, which libigl's marching cubes and the meshes of
    pipelines built on it have; no centre vertices). Both are watertight.
    """
    grids, batched, from_numpy = _as_grids(grid)
    # a one-value tensor or array (e.g. level=grid.mean()) is its number (one read for a CUDA tensor)
    if isinstance(level, torch.Tensor) and level.numel() == 1 and level.dtype != torch.bool:
        level = level.item()
    elif isinstance(level, np.ndarray) and level.size == 1 and level.dtype.kind in "fiu":
        level = level.item()
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating, np.integer)):
        raise ValueError(f"level must be a number, got {type(level).__name__}")
    level = float(level)
    if not math.isfinite(level):
        raise ValueError(f"level={level} must be finite")
    flip = check_choice("gradient_direction", gradient_direction, _DIRECTIONS)
    method = check_choice("cpu_method", cpu_method, CPU_METHODS)
    decide = check_choice("ambiguity", ambiguity, _AMBIGUITY)
    threads = _resolve_threads(num_threads)
    origin, scale = resolve_bounds(bounds, grids[0].shape if grids else tuple(grid.shape[-3:]))
    meshes = [_extract_one(g, level, origin, scale, flip, return_normals, threads, method, decide) for g in grids]
    if from_numpy:
        meshes = [Mesh(*(m.numpy() if m is not None else None for m in mesh)) for mesh in meshes]
    return meshes if batched else meshes[0]
