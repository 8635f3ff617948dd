"""Training-data preparation for Hunyuan3D-style shape VAEs: watertight remeshing, surface / sharp-edge samples
and labelled volume samples, on the native narrow-band distance core and the flowkernels marching cubes.

See flowkernels/data.md for the method, its agreement with Hunyuan3D-2.1's `watertight_and_sample.py` and the
measured speed. Arrays are numpy (float64 meshes, as libigl returns them); randomness comes from a
`numpy.random.Generator` so a seed reproduces a run.
"""
from __future__ import annotations

import math
import os
import time
from typing import NamedTuple

import numpy as np
import torch

from . import _native
from .data_sampling import (SHARP_COS, face_normals, sample_sharp_edges, sample_surface,  # noqa: F401
                            sharp_edges, vertex_normals)

# Counts of Hunyuan3D-2.1's SampleMesh: 499712 // 4 surface and sharp-edge samples.
SAMPLES = 499712 // 4


class Shell(NamedTuple):
    """A watertight mesh and the distance grid it was extracted from (kept for labelling points). From a CUDA
    pipeline, verts / faces / grid are tensors on the device (origin and step stay numpy)."""
    verts: np.ndarray      # [V, 3] float64
    faces: np.ndarray      # [F, 3] int64
    grid: torch.Tensor     # [R, R, R] float32: distance to the input mesh in the band, `band` outside (0: filled)
    origin: np.ndarray     # [3] float64, grid point (0, 0, 0)
    step: np.ndarray       # [3] float64 spacing per axis
    eps: float
    source_verts: torch.Tensor | None = None  # [V, 3] float32: the input mesh (far-field labels), if kept
    source_faces: torch.Tensor | None = None  # [F, 3] int64


def _threads(num_threads):
    threads = int(num_threads or os.environ.get("FLOWKERNELS_NUM_THREADS", 0) or 0)
    if threads < 0:
        raise ValueError(f"num_threads={num_threads} must be >= 0")
    return threads


def _mesh_arrays(verts, faces, name="verts"):
    """float32 [V, 3] and int64 [F, 3] contiguous CPU tensors, checked (indices in range, finite vertices)."""
    v = np.asarray(verts.detach().cpu() if isinstance(verts, torch.Tensor) else verts)
    f = np.asarray(faces.detach().cpu() if isinstance(faces, torch.Tensor) else faces)
    if v.ndim != 2 or v.shape[1] != 3 or not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"{name} must be a numeric [V, 3] array, got shape {v.shape} dtype {v.dtype}")
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer [F, 3] array, got shape {f.shape} dtype {f.dtype}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} holds NaN or inf")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices outside [0, {len(v)})")
    return (torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(f, dtype=np.int64)))


def normalize_to_unit_box(verts):
    """Hunyuan3D-2.1's normalisation: shift the box corner to 0, scale by 1.01 x the longest side."""
    v = np.asarray(verts, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0 or not np.isfinite(v).all():
        raise ValueError(f"verts must be a finite, non-empty [V, 3] array, got shape {v.shape}")
    lo = v.min(axis=0)
    extent = (v.max(axis=0) - lo).max()
    if not extent > 0:
        raise ValueError("verts: all vertices coincide (zero extent), nothing to normalise")
    return (v - lo) / (extent * 1.01)


def grid_frame(verts, resolution):
    """Grid origin and per-axis spacing of the original: the mesh box padded by 5% per axis, `resolution` points
    per axis from corner to corner (anisotropic for non-cubic shapes, exactly as np.linspace)."""
    v = np.asarray(verts, dtype=np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    return lo, (hi - lo) / (resolution - 1)


def udf_grid(verts, faces, origin, step, shape, band, *, num_threads=None):
    """Unsigned distance from every grid point to the mesh where it is < band, else band: fp32 [X, Y, Z].

    CUDA tensors (verts and faces on one device) give the grid on that device, computed there (one block per
    tile of a triangle's columns, atomicMin on the float bits) on the current stream; it equals the CPU grid bit
    for bit."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape={shape} must be three positive sizes")
    if not (band > 0 and math.isfinite(band)):
        raise ValueError(f"band={band} must be positive and finite")
    frame = dict(origin=[float(x) for x in origin], step=[float(x) for x in step], shape=shape, band=float(band))
    if isinstance(verts, torch.Tensor) and verts.device.type == "cuda":
        return _udf_grid_cuda(verts, faces, frame)
    v, f = _mesh_arrays(verts, faces)
    out = torch.empty(shape, dtype=torch.float32)
    _native.load().udf_band_grid(verts=v.data_ptr(), num_verts=len(v), faces=f.data_ptr(), num_faces=len(f),
                                 out=out.data_ptr(), num_threads=_threads(num_threads), **frame)
    return out


def _udf_grid_cuda(verts, faces, frame):
    from .data_device import check_mesh

    v, f = check_mesh(verts, faces)  # bad input must be an error, not an out-of-bounds read on the device
    return _udf_grid_launch(v, f, frame["origin"], frame["step"], frame["shape"], frame["band"], 0)


def _udf_grid_launch(v, f, origin, step, shape, band, num_threads):
    """udf_grid of a checked mesh (float32 / int64 contiguous tensors, data_device.check_mesh) on its device; on
    CUDA queued on the current stream, nothing read back."""
    frame = dict(origin=[float(x) for x in origin], step=[float(x) for x in step],
                 shape=tuple(int(n) for n in shape), band=float(band))
    ext = _native.load()
    if v.device.type == "cpu":
        out = torch.empty(frame["shape"], dtype=torch.float32)
        ext.udf_band_grid(verts=v.data_ptr(), num_verts=len(v), faces=f.data_ptr(), num_faces=len(f),
                          out=out.data_ptr(), num_threads=_threads(num_threads), **frame)
        return out
    _native.require_cuda_build()
    with torch.cuda.device(v.device):
        out = torch.empty(frame["shape"], dtype=torch.float32, device=v.device)
        nbytes = ext.udf_band_grid_scratch_bytes_cuda(num_faces=len(f)) if len(f) else 0
        scratch = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=v.device)
        ext.udf_band_grid_cuda(verts=v.data_ptr(), num_verts=len(v), faces=f.data_ptr(), num_faces=len(f),
                               out=out.data_ptr(), scratch=scratch.data_ptr(), scratch_bytes=nbytes,
                               stream=torch.cuda.current_stream(v.device).cuda_stream, **frame)
    return out


def _udf_grid_tiles(verts, faces, origin, step, shape, band):
    """The CUDA driver's per-tile decomposition run on the CPU (tests: it must give the CPU grid bit for bit)."""
    v, f = _mesh_arrays(verts, faces)
    out = torch.empty(tuple(int(n) for n in shape), dtype=torch.float32)
    _native.load().udf_band_grid_tiles(verts=v.data_ptr(), num_verts=len(v), faces=f.data_ptr(), num_faces=len(f),
                                       origin=[float(x) for x in origin], step=[float(x) for x in step],
                                       shape=out.shape, band=float(band), out=out.data_ptr())
    return out


def point_distance(points, verts, faces, *, num_threads=None):
    """Exact distance (fp32) from each point [P, 3] to the nearest triangle of the mesh (a BVH on the CPU)."""
    v, f = _mesh_arrays(verts, faces)
    p, _ = _mesh_arrays(points, np.zeros((0, 3), np.int64), name="points")
    out = torch.empty(len(p), dtype=torch.float32)
    if len(p):
        _native.load().udf_points(verts=v.data_ptr(), num_verts=len(v), faces=f.data_ptr(), num_faces=len(f),
                                     points=p.data_ptr(), num_points=len(p), out=out.data_ptr(),
                                     num_threads=_threads(num_threads))
    return out.numpy()


def _fill_interior(grid: torch.Tensor, eps: float):
    """Outer shell only: grid points with d > eps that no 6-connected path of such points joins to the grid's
    boundary (the object's interior and closed cavities) are set to 0, i.e. made part of the solid."""
    from scipy import ndimage

    free = grid.numpy() > eps
    labels, count = ndimage.label(free)
    if count == 0:
        return
    border = np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()])
    outside = np.zeros(count + 1, dtype=bool)
    outside[np.unique(border)] = True
    outside[0] = True  # label 0: band points
    grid.numpy()[~outside[labels]] = 0.0


def check_grid_args(resolution, eps):
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution={resolution!r} must be an integer >= 2")
    if not (isinstance(eps, (int, float, np.floating)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps={eps!r} must be a positive number")


def _check_shell(n_faces: int, eps: float, step) -> None:
    """An empty shell from a mesh with faces: no grid point lies within eps of the surface (eps well below the grid
    step, e.g. the default eps = 2/256 at a low resolution). A named error instead of an empty 'watertight' mesh."""
    if n_faces == 0:
        step = float(np.max(np.asarray(step)))
        raise ValueError(f"the eps={eps:g} offset surface crosses no grid cell: the grid step is {step:.4g}; use "
                         f"eps >= {step:.3g} or a resolution at which the step is below eps")


def watertight(verts, faces, resolution: int = 256, eps: float = 2.0 / 256, outer_only: bool = False, *,
               return_shell: bool = False, num_threads=None):
    """Hunyuan3D-2.1's `Watertight`: the eps-offset surface of the mesh from a `resolution`^3 grid over its box
    padded by 5%, as a closed, welded, outward-wound mesh (float64 verts, int64 faces).

    The double shell (outer and inner surface of the 2 eps band) as the original; outer_only=True keeps only the
    outer surface (flood fill of {d > eps} from the grid boundary). Distances are exact within
    eps + one cell diagonal of the mesh and clamped beyond, which leaves every cut edge as it is.
    return_shell=True returns a `Shell` (with the grid, for `sdf_samples`) instead of (verts, faces).
    CUDA tensors run the whole pipeline on their device (data_device: CUDA grid, CUDA marching cubes, flood fill
    by torch sweeps) and give tensors there."""
    from .marching_cubes import marching_cubes

    check_grid_args(resolution, eps)
    if isinstance(verts, torch.Tensor) and verts.device.type == "cuda":
        from . import data_device

        shell = data_device.watertight(verts, faces, int(resolution), float(eps), outer_only,
                                       num_threads=_threads(num_threads))
        _check_shell(shell.faces.shape[0], eps, shell.step)
        return shell if return_shell else (shell.verts, shell.faces)
    v, f = _mesh_arrays(verts, faces)
    if len(f) == 0:
        raise ValueError("faces is empty: nothing to make watertight")
    extent = (v.max(dim=0).values - v.min(dim=0).values).tolist()
    if not min(extent) > 0:  # the grid over the mesh's box would have a zero step (flat or point-like meshes)
        raise ValueError(f"verts span no extent along axis {'xyz'[extent.index(min(extent))]} (box size "
                         f"{[round(e, 6) for e in extent]}): the grid spans the mesh's box, so a flat mesh has none; "
                         "place it in a box first (e.g. add the box's corner points as unused vertices)")
    origin, step = grid_frame(v.numpy(), resolution)
    band = eps + float(np.sqrt((step ** 2).sum()))  # every cell with a corner below eps holds exact values
    grid = udf_grid(v, f, origin, step, (resolution,) * 3, band, num_threads=num_threads)
    if outer_only:
        _fill_interior(grid, eps)
    bounds = np.stack([origin, origin + step * (resolution - 1)], axis=1)
    mesh = marching_cubes(grid, eps, bounds=bounds, gradient_direction="descent", num_threads=num_threads,
                          ambiguity="signs")
    _check_shell(mesh.faces.shape[0], eps, step)
    mverts = mesh.verts.numpy().astype(np.float64)
    mfaces = mesh.faces.numpy()
    if return_shell:
        return Shell(mverts, mfaces, grid, origin, step, float(eps), v, f)
    return mverts, mfaces


def write_obj(path, verts, faces, *, num_threads=None):
    """A plain OBJ file (v lines with %.9g coordinates, then 1-based f lines), as igl.write_obj writes it;
    formatted natively in parallel (a 256^3 shell has ~1M faces)."""
    v = np.ascontiguousarray(verts, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"verts must be [V, 3], got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got shape {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices outside [0, {len(v)})")
    _native.load().mesh_write_obj(path=os.fspath(path), verts=v.ctypes.data, num_verts=len(v), faces=f.ctypes.data,
                                  num_faces=len(f), num_threads=_threads(num_threads))


# --- sampling -------------------------------------------------------------------------------------------------------

def _rng(seed):
    from .data_sampling import check_seed
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed(seed))


def _query_points(points, dtype=np.float64) -> np.ndarray:
    """Query points as a finite [P, 3] array: a NaN point was labelled (inside_shell) and a [P, 2] array failed
    with numpy's broadcasting message."""
    pts = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points, dtype=dtype)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be a [P, 3] array, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points holds NaN or inf")
    return pts


def _truncated_normal(rng, scale, bound, size):
    """N(0, scale) restricted to [-bound, bound] by rejection (scipy's truncnorm draws the same law)."""
    out = rng.normal(scale=scale, size=size)
    bad = np.abs(out) > bound
    while bad.any():
        out[bad] = rng.normal(scale=scale, size=int(bad.sum()))
        bad = np.abs(out) > bound
    return out


def _grid_value(shell: Shell, points):
    """Trilinear interpolation of the shell's distance grid at points [P, 3] and whether each is on the grid."""
    p = (np.asarray(points, dtype=np.float64) - shell.origin) / shell.step
    n = np.array(shell.grid.shape)
    on_grid = np.all((p >= 0) & (p <= n - 1), axis=1)
    i0 = np.clip(np.floor(p).astype(np.int64), 0, n - 2)
    t = np.clip(p - i0, 0.0, 1.0)
    g = shell.grid.numpy().reshape(-1)
    base = (i0[:, 0] * n[1] + i0[:, 1]) * n[2] + i0[:, 2]
    value = np.zeros(len(p))
    for corner in range(8):
        ox, oy, oz = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
        w = (t[:, 0] if ox else 1.0 - t[:, 0]) * (t[:, 1] if oy else 1.0 - t[:, 1]) * (t[:, 2] if oz else 1.0 - t[:, 2])
        value += w * g[base + (ox * n[1] + oy) * n[2] + oz]
    return value, on_grid


def inside_shell(shell: Shell, points):
    """True where a point is inside the watertight shell: the trilinear interpolation of the distance grid is
    below eps (the field the shell was extracted from). Points off the grid are outside."""
    value, on_grid = _grid_value(shell, _query_points(points))
    return on_grid & (value < shell.eps)


# Points farther than this many voxels (largest spacing) from the ideal offset surface take their distance from the
# input mesh (d - eps, below); nearer ones are measured exactly against the shell's triangles.
FAR_VOXELS = 4.0


def _offset_fits_grid(shell: Shell):
    """True when no point on the grid's faces is within eps of the mesh: the offset surface is closed inside the
    grid (otherwise the grid's faces cut it open, and d - eps would measure to surface that was cut away)."""
    g = shell.grid
    faces = (g[0], g[-1], g[:, 0], g[:, -1], g[:, :, 0], g[:, :, -1])
    return all(bool((face > shell.eps).all()) for face in faces)


def shell_labels(shell: Shell, points, *, num_threads=None):
    """Hunyuan3D's label -sdf of points against the watertight shell: +distance inside, -distance outside.

    The sign comes from `inside_shell` (no winding number). The magnitude is the exact distance to the shell's
    triangles within FAR_VOXELS of the shell. Farther out it is d - eps, d the exact distance to the input mesh:
    the shell is the eps-level set of d, and from a point with d > eps the nearest point of that level set lies
    on the segment to the nearest point of the mesh, at distance d - eps (in both shells, and in the outer one
    alone with outer_only: the segment stays in the region outside). It differs from the distance to the shell's
    triangles only by the marching-cubes error of the shell (measured in flowkernels/data.md), and costs a query
    on the input mesh instead of the ~50-100x larger shell. Points in the band of the grid, in the filled
    interior (outer_only), or when the offset surface does not fit the grid are measured exactly."""
    if isinstance(shell.grid, torch.Tensor) and shell.grid.device.type != "cpu":
        from . import data_device

        return data_device.shell_labels(shell, torch.as_tensor(points, device=shell.grid.device),
                                        num_threads=_threads(num_threads))
    pts = _query_points(points, np.float32)
    value, on_grid = _grid_value(shell, pts)
    inside = on_grid & (value < shell.eps)
    dist = np.empty(len(pts), dtype=np.float64)
    exact = np.ones(len(pts), dtype=bool)
    if shell.source_verts is not None and len(pts) and _offset_fits_grid(shell):
        band = float(shell.grid.max())
        # in the band (exact grid corners) or in the filled interior: near the shell by construction
        maybe_far = ~(on_grid & (value < band))
        idx = np.flatnonzero(maybe_far)
        if len(idx):
            d_src = point_distance(pts[idx], shell.source_verts, shell.source_faces,
                                   num_threads=num_threads).astype(np.float64)
            far = d_src - shell.eps > FAR_VOXELS * float(shell.step.max())
            dist[idx[far]] = d_src[far] - shell.eps
            exact[idx[far]] = False
    idx = np.flatnonzero(exact)
    if len(idx):
        dist[idx] = point_distance(pts[idx], shell.verts, shell.faces, num_threads=num_threads)
    return np.where(inside, dist, -dist)


def sdf_samples(shell: Shell, surface, sharp, seed=None, *, num_threads=None):
    """The original's `sample_sdf`: 2 x len(sharp) volume points in [-1.05, 1.05]^3, surface points offset by
    N(0, 0.005) and N(0, 0.05) (truncated to +-0.25), sharp points offset at six scales; labels -sdf. fp16 arrays
    under the original's keys."""
    if isinstance(shell.grid, torch.Tensor) and shell.grid.device.type != "cpu":
        from . import data_device

        return data_device.sdf_samples(shell, surface, sharp, seed, num_threads=_threads(num_threads))
    rng = _rng(seed)
    surface = np.asarray(surface, dtype=np.float64)
    sharp = np.asarray(sharp, dtype=np.float64)
    vol = (rng.random((2 * len(sharp), 3)) - 0.5) * 2 * 1.05
    near = np.concatenate([surface + _truncated_normal(rng, 0.005, 0.25, surface.shape),
                           surface + _truncated_normal(rng, 0.05, 0.25, surface.shape)])
    unit = len(sharp) // 6
    scales = (0.001, 0.003, 0.06, 0.01, 0.02, 0.04)
    bounds = [unit * i for i in range(6)] + [len(sharp)]
    sharp_near = np.concatenate([sharp[bounds[i]:bounds[i + 1]]
                                 + rng.normal(scale=s, size=(bounds[i + 1] - bounds[i], 3))
                                 for i, s in enumerate(scales)])
    rng.shuffle(near)
    rng.shuffle(sharp_near)
    # one distance query for all three sets (the original's float32 positions)
    allp = np.concatenate([vol, near, sharp_near]).astype(np.float32)
    label = shell_labels(shell, allp, num_threads=num_threads)
    n1, n2 = len(vol), len(vol) + len(near)
    return {
        "vol_points": vol.astype(np.float16), "vol_label": label[:n1].astype(np.float16),
        "random_near_points": near.astype(np.float16), "random_near_label": label[n1:n2].astype(np.float16),
        "sharp_near_points": sharp_near.astype(np.float16), "sharp_near_label": label[n2:].astype(np.float16),
    }


def sample_mesh(shell: Shell, count: int = SAMPLES, seed=None, *, num_threads=None, timings=None):
    """The original's `SampleMesh` on a shell: (surface dict, sdf dict) with its keys, shapes and fp16 dtypes.
    A shell without sharp edges takes its sharp samples from the surface (so every file has the same shapes).
    `timings`: a dict that receives the seconds of each stage (surface, sharp, labels). A shell of tensors (the
    CUDA pipeline's) is sampled and labelled on its device (fp16 tensors there)."""
    from .data_sampling import check_count
    check_count(count)
    if isinstance(shell.verts, torch.Tensor):
        from . import data_device

        return data_device.sample_mesh(shell, count, seed, num_threads=_threads(num_threads), timings=timings)
    rng = _rng(seed)
    timings = {} if timings is None else timings
    t = time.perf_counter()
    surf, surf_n = sample_surface(shell.verts, shell.faces, count, rng)
    timings["surface"] = time.perf_counter() - t
    t = time.perf_counter()
    sharp, sharp_n = sample_sharp_edges(shell.verts, shell.faces, count, rng)
    if len(sharp) == 0:
        sharp, sharp_n = sample_surface(shell.verts, shell.faces, count, rng)
    timings["sharp"] = time.perf_counter() - t
    surface_data = {"random_surface": np.concatenate([surf, surf_n], axis=1).astype(np.float16),
                    "sharp_surface": np.concatenate([sharp, sharp_n], axis=1).astype(np.float16)}
    t = time.perf_counter()
    sdf_data = sdf_samples(shell, surf, sharp, rng, num_threads=num_threads)
    timings["labels"] = time.perf_counter() - t
    return surface_data, sdf_data
