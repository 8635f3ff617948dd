"""The data-preparation pipeline on the mesh's device (CUDA): distance grid -> marching cubes -> outer-shell fill ->
samples -> labels, with the distance structures of the native core and torch ops between them.

Point queries go through a linear BVH (csrc/distance/lbvh_core.h): Morton keys and the tree are built by
kernels, the sort is torch's; the traversal is stackless. The same core runs on CPU tensors (the tests hold the
CUDA pipeline to it). Host reads inside the pipeline: output sizes only (the marching cubes' and the sharp-edge
rule's vertex merge and sums), plus one flag per sweep round of the outer-shell fill. A mesh uploaded by
`upload_mesh` was checked and boxed on the host; tensors given directly bring their checks and box back in one
read. See flowkernels/data.md (host reads).
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import numpy as np
import torch

from . import _native


def _stream(device):
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def _cuda_ok(device):
    if device.type == "cuda":
        _native.require_cuda_build()
    elif device.type != "cpu":
        raise ValueError(f"verts: unsupported device {device} (CPU or CUDA)")
    return device.type == "cuda"


def _mesh_tensors(verts, faces, name="verts"):
    """float32 [V, 3] and int64 [F, 3] contiguous tensors on verts' device: shapes and types checked, no values."""
    if not isinstance(verts, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(verts).__name__}")
    if not isinstance(faces, torch.Tensor) or faces.device != verts.device:
        raise ValueError(f"faces must be a tensor on {verts.device} like {name}")
    if verts.ndim != 2 or verts.shape[1] != 3 or not verts.is_floating_point():
        raise ValueError(f"{name} must be a float [V, 3] tensor, got {tuple(verts.shape)} {verts.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"faces must be an integer [F, 3] tensor, got {tuple(faces.shape)} {faces.dtype}")
    return verts.detach().to(torch.float32).contiguous(), faces.detach().to(torch.int64).contiguous()


def _bad_mesh(v, f):
    """Device flags [2] (float32): a vertex is NaN or inf; a face indexes a vertex that does not exist."""
    bad_v = ~torch.isfinite(v).all()
    bad_f = (f.min() < 0) | (f.max() >= len(v)) if f.numel() else torch.zeros((), dtype=torch.bool, device=v.device)
    return torch.stack([bad_v, bad_f]).to(torch.float32)


def _raise_bad(flags, v, name):
    if flags[0]:
        raise ValueError(f"{name} holds NaN or inf")
    if flags[1]:
        raise ValueError(f"faces index vertices outside [0, {len(v)})")


def check_mesh(verts, faces, name="verts"):
    """float32 [V, 3] and int64 [F, 3] contiguous tensors on verts' device, checked (two flags read back)."""
    v, f = _mesh_tensors(verts, faces, name)
    _raise_bad(_bad_mesh(v, f).tolist(), v, name)  # one read-back for both
    return v, f


class DeviceMesh(NamedTuple):
    verts: torch.Tensor   # float32 [V, 3] on the device
    faces: torch.Tensor   # int64 [F, 3] on the device
    box: np.ndarray       # float64 [2, 3]: the least and greatest of verts per axis


def upload_mesh(verts, faces, device) -> DeviceMesh:
    """A mesh from the host (numpy arrays), checked there (finite vertices, indices in range) and uploaded as
    float32 / int64 tensors with its box taken on the host: `watertight(..., box=mesh.box)` then reads nothing
    back before the marching cubes."""
    from .data import _mesh_arrays

    v, f = _mesh_arrays(verts, faces)
    box = np.stack([v.numpy().min(0), v.numpy().max(0)]).astype(np.float64) if len(v) else None
    dev = torch.device(device)
    return DeviceMesh(v.to(dev), f.to(dev), box)


class Lbvh(NamedTuple):
    verts: torch.Tensor   # float32 [V, 3]
    faces: torch.Tensor   # int64 [F, 3]
    nodes: torch.Tensor   # uint8 [(2F - 1) * node bytes]


def build_lbvh(verts, faces, *, num_threads=0) -> Lbvh:
    """The linear BVH of a checked mesh (see check_mesh) on its device; nothing is read back."""
    ext = _native.load()
    cuda = _cuda_ok(verts.device)
    n = len(faces)
    dev = verts.device
    nodes = torch.empty(max(2 * n - 1, 0) * ext.lbvh_node_bytes(), dtype=torch.uint8, device=dev)
    if n == 0:
        return Lbvh(verts, faces, nodes)
    with torch.cuda.device(dev) if cuda else contextlib.nullcontext():
        cen = (verts[faces[:, 0]] + verts[faces[:, 1]] + verts[faces[:, 2]]) * (1.0 / 3.0)
        scene = torch.cat([cen.amin(0), cen.amax(0)]).contiguous()
        keys = torch.empty(n, dtype=torch.int64, device=dev)
        ext.lbvh_keys(cuda=cuda, verts=verts.data_ptr(), faces=faces.data_ptr(), num_faces=n,
                      scene=scene.data_ptr(), keys=keys.data_ptr(), stream=_stream(dev), num_threads=num_threads)
        keys = torch.sort(keys).values.contiguous()  # keys are distinct: the order does not depend on the sort
        scratch = torch.empty(max(ext.lbvh_build_scratch_bytes(n), 1), dtype=torch.uint8, device=dev)
        ext.lbvh_build(cuda=cuda, verts=verts.data_ptr(), faces=faces.data_ptr(), num_faces=n,
                       sorted_keys=keys.data_ptr(), nodes=nodes.data_ptr(), scratch=scratch.data_ptr(),
                       stream=_stream(dev), num_threads=num_threads)
    return Lbvh(verts, faces, nodes)


def _spread10(x):
    x = x & 0x3FF
    x = (x | (x << 16)) & 0x030000FF
    x = (x | (x << 8)) & 0x0300F00F
    x = (x | (x << 4)) & 0x030C30C3
    return (x | (x << 2)) & 0x09249249


def morton_order(points):
    """Indices that sort points [P, 3] along a Morton curve over their box (neighbours in the order are neighbours
    in space: a GPU warp's queries then walk the same nodes)."""
    lo, hi = points.amin(0), points.amax(0)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    cell = ((points - lo) / span * 1024).clamp(0, 1023).to(torch.int64)
    code = (_spread10(cell[:, 0]) << 2) | (_spread10(cell[:, 1]) << 1) | _spread10(cell[:, 2])
    return torch.argsort(code)


def query_lbvh(bvh: Lbvh, points, mask=None, *, num_threads=0):
    """(distance float32 [P], nearest triangle int64 [P]) from every point (float32 [P, 3] on the BVH's device) to
    the mesh; where `mask` (bool [P]) is False the outputs are NaN and -1. Exact: the minimum over the triangles
    of the core's point-triangle distance, the smallest triangle index among equal distances."""
    ext = _native.load()
    dev = bvh.verts.device
    cuda = dev.type == "cuda"
    p = points.to(torch.float32).contiguous()
    dist = torch.full((len(p),), math.nan, dtype=torch.float32, device=dev)
    tri = torch.full((len(p),), -1, dtype=torch.int64, device=dev)
    if len(p) == 0:
        return dist, tri
    m = mask.to(torch.uint8).contiguous() if mask is not None else None
    order = morton_order(p) if cuda else None  # the CPU driver's threads take contiguous chunks as they come
    with torch.cuda.device(dev) if cuda else contextlib.nullcontext():
        ext.lbvh_query(cuda=cuda, nodes=bvh.nodes.data_ptr(), verts=bvh.verts.data_ptr(),
                       faces=bvh.faces.data_ptr(), num_faces=len(bvh.faces), points=p.data_ptr(), num_points=len(p),
                       order=order.data_ptr() if order is not None else 0, mask=m.data_ptr() if m is not None else 0,
                       out_dist=dist.data_ptr(), out_tri=tri.data_ptr(), stream=_stream(dev),
                       num_threads=num_threads)
    return dist, tri


def closest_triangle(points, verts, faces, mask=None, *, num_threads=None):
    """Unsigned distance (float32) from each point [P, 3] to a triangle mesh and the index of the nearest
    triangle (int64; -1 for an empty mesh, where the distance is inf), on the points' device (CPU or CUDA) through
    the linear BVH. `mask` (bool [P]): query only these points (the others get NaN / -1)."""
    from .data import _threads

    v, f = check_mesh(verts, faces)
    if not isinstance(points, torch.Tensor) or points.device != v.device:
        raise ValueError(f"points must be a tensor on {v.device} like verts")
    if points.ndim != 2 or points.shape[1] != 3 or not points.is_floating_point():
        raise ValueError(f"points must be a float [P, 3] tensor, got {tuple(points.shape)} {points.dtype}")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != (len(points),)
                             or mask.dtype != torch.bool or mask.device != v.device):
        raise ValueError(f"mask must be a bool [{len(points)}] tensor on {v.device}")
    if len(points) and not bool(torch.isfinite(points).all()):
        raise ValueError("points holds NaN or inf")
    threads = _threads(num_threads)
    return query_lbvh(build_lbvh(v, f, num_threads=threads), points, mask, num_threads=threads)


# --- outer shell: flood fill by sweeps ----------------------------------------------------------------------------

def _spread_runs(free, out, axis):
    """Along `axis`, every maximal run of free points that holds an outside point becomes outside."""
    f = free.movedim(axis, -1)
    o = out.movedim(axis, -1)
    shape = f.shape
    f, o = f.reshape(-1, shape[-1]), o.reshape(-1, shape[-1])
    start = torch.zeros_like(f)
    start[:, 0] = True
    seg = torch.cumsum((~f | start).reshape(-1), 0)  # a run's id; every blocked point gets its own
    hit = torch.zeros(len(seg) + 1, dtype=torch.int32, device=f.device)
    hit.scatter_reduce_(0, seg, o.reshape(-1).to(torch.int32), reduce="amax")
    new = (hit[seg].bool() & f.reshape(-1)).reshape(shape)
    return new.movedim(-1, axis)


def outside_region(free):
    """The points of `free` (bool [X, Y, Z]) that a 6-connected path of free points joins to the grid's boundary:
    runs along x, y and z are spread in turn until a round adds nothing. One flag is read back per round from
    the second on (the first round alone cannot be seen to be the last): a 6-connected path turns a finite
    number of times, so rounds are few on real shapes, and a shape whose outside one round reaches costs one."""
    out = torch.zeros_like(free)
    for ax in range(3):
        idx = [slice(None)] * 3
        for end in (0, -1):
            idx[ax] = end
            out[tuple(idx)] = free[tuple(idx)]
    rounds = 0
    while True:
        before = out
        for ax in range(3):
            out = _spread_runs(free, out, ax)
        rounds += 1
        if rounds > 1 and torch.equal(out, before):
            return out


def fill_interior(grid, eps):
    """Outer shell only, in place on the grid's device: points with d > eps not joined to the boundary -> 0
    (masked_fill: assigning through a boolean index would read its count back)."""
    free = grid > eps
    grid.masked_fill_(free & ~outside_region(free), 0.0)


# --- labels ---------------------------------------------------------------------------------------------------------

def grid_value(grid, origin, step, points):
    """Trilinear interpolation of the grid at points (float64 [P, 3]) and whether each is on the grid: the numpy
    form of data._grid_value, op for op in float64."""
    dev = grid.device
    o = torch.as_tensor(np.asarray(origin, dtype=np.float64), device=dev)
    s = torch.as_tensor(np.asarray(step, dtype=np.float64), device=dev)
    p = (points.to(torch.float64) - o) / s
    n = torch.tensor(grid.shape, device=dev)
    on_grid = ((p >= 0) & (p <= (n - 1).to(torch.float64))).all(1)
    i0 = torch.minimum(torch.maximum(torch.floor(p).to(torch.int64), torch.zeros_like(n)), n - 2)
    t = (p - i0).clamp(0.0, 1.0)
    g = grid.reshape(-1)
    base = (i0[:, 0] * n[1] + i0[:, 1]) * n[2] + i0[:, 2]
    value = torch.zeros(len(p), dtype=torch.float64, device=dev)
    for corner in range(8):
        ox, oy, oz = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
        w = (t[:, 0] if ox else 1.0 - t[:, 0]) * (t[:, 1] if oy else 1.0 - t[:, 1])
        w = w * (t[:, 2] if oz else 1.0 - t[:, 2])
        value = value + w * g[base + (ox * n[1] + oy) * n[2] + oz].to(torch.float64)
    return value, on_grid


def _all_faces_above(grid, eps):
    """Device bool: no point on the grid's faces is within eps (data._offset_fits_grid, without a read-back)."""
    faces = (grid[0], grid[-1], grid[:, 0], grid[:, -1], grid[:, :, 0], grid[:, :, -1])
    return torch.stack([(face > eps).all() for face in faces]).all()


def shell_labels(shell, points, *, num_threads=0):
    """data.shell_labels on the shell's device: the same sign and the same distances (float64 [P]), with the
    point queries on linear BVHs and the far / exact split kept as masks instead of index lists."""
    from .data import FAR_VOXELS

    pts = points.to(torch.float32)
    value, on_grid = grid_value(shell.grid, shell.origin, shell.step, pts)
    inside = on_grid & (value < shell.eps)
    far = torch.zeros(len(pts), dtype=torch.bool, device=pts.device)
    d_src = torch.zeros(len(pts), dtype=torch.float64, device=pts.device)
    if shell.source_verts is not None and len(pts):
        band = shell.grid.max()
        maybe_far = ~(on_grid & (value < band)) & _all_faces_above(shell.grid, shell.eps)
        src = build_lbvh(shell.source_verts, shell.source_faces, num_threads=num_threads)
        d_src = query_lbvh(src, pts, maybe_far, num_threads=num_threads)[0].to(torch.float64)
        far = maybe_far & (d_src - shell.eps > FAR_VOXELS * float(np.max(shell.step)))
    sv = shell.verts.to(torch.float32).contiguous()
    d_shell = query_lbvh(build_lbvh(sv, shell.faces.contiguous(), num_threads=num_threads), pts, ~far,
                         num_threads=num_threads)[0].to(torch.float64)
    dist = torch.where(far, d_src - shell.eps, d_shell)
    return torch.where(inside, dist, -dist)


def _checked_frame(verts, faces, box):
    """(v, f, box) for watertight: the checks and the box in one read-back, or none with a host box."""
    if box is None:
        v, f = _mesh_tensors(verts, faces)
        if len(v) == 0:  # no box to take; any face is out of range
            _raise_bad([0.0, float(len(f) > 0)], v, "verts")
            return v, f, None
        # the box and the two input flags in one read: the grid frame needs the box on the host
        read = torch.cat([v.amin(0), v.amax(0), _bad_mesh(v, f)]).to(torch.float64).cpu().numpy()
        _raise_bad(read[6:], v, "verts")
        return v, f, read[:6].reshape(2, 3)
    if not (isinstance(verts, torch.Tensor) and verts.dtype == torch.float32 and verts.is_contiguous()
            and isinstance(faces, torch.Tensor) and faces.dtype == torch.int64 and faces.is_contiguous()
            and faces.device == verts.device):
        raise ValueError("box is given: verts and faces must come from upload_mesh (float32 and int64 contiguous "
                         "tensors on one device, checked on the host)")
    v, f = _mesh_tensors(verts, faces)
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (2, 3) or not np.isfinite(box).all():
        raise ValueError(f"box must be a finite [2, 3] array (upload_mesh's), got shape {box.shape}")
    return v, f, box


def watertight(verts, faces, resolution, eps, outer_only, *, num_threads=0, box=None):
    """data.watertight's pipeline on the tensors' device; returns a data.Shell of tensors (float64 verts).
    box: the mesh's box from `upload_mesh` (checked on the host): nothing is read back before the marching
    cubes. Without it the input checks and the box come back in one read (the grid frame is host arithmetic)."""
    from .data import Shell, _udf_grid_launch, grid_frame
    from .marching_cubes import marching_cubes

    v, f, box = _checked_frame(verts, faces, box)
    if len(f) == 0:
        raise ValueError("faces is empty: nothing to make watertight")
    origin, step = grid_frame(box, resolution)
    band = eps + float(np.sqrt((step ** 2).sum()))
    grid = _udf_grid_launch(v, f, origin, step, (resolution,) * 3, band, num_threads)
    if outer_only:
        fill_interior(grid, eps)
    bounds = np.stack([origin, origin + step * (resolution - 1)], axis=1)
    mesh = marching_cubes(grid, eps, bounds=bounds, gradient_direction="descent", num_threads=num_threads or None,
                          cpu_method="bricks", ambiguity="signs")
    return Shell(mesh.verts.to(torch.float64), mesh.faces, grid, origin, step, float(eps), v, f)


def _truncated_normal(g, scale, bound, shape, device):
    """N(0, scale) restricted to [-bound, bound] by the inverse CDF (the law of scipy's truncnorm and of the CPU
    path's rejection sampling; no data-dependent loop)."""
    lo = 0.5 * math.erfc(bound / scale / math.sqrt(2.0))  # Phi(-bound / scale)
    u = torch.rand(shape, generator=g, dtype=torch.float64, device=device)
    return (scale * torch.special.ndtri(lo + u * (1.0 - 2.0 * lo))).clamp(-bound, bound)


def sdf_samples(shell, surface, sharp, seed=None, *, num_threads=0):
    """data.sdf_samples on the device: the same sets and laws, drawn with a torch generator on the device (seeded
    from `seed`), labels by `shell_labels`; fp16 tensors under the original's keys."""
    from .data_sampling import _generator

    dev = shell.grid.device
    surface = surface.to(device=dev, dtype=torch.float64)
    sharp = sharp.to(device=dev, dtype=torch.float64)
    g = _generator(seed, dev)
    vol = (torch.rand((2 * len(sharp), 3), generator=g, dtype=torch.float64, device=dev) - 0.5) * 2 * 1.05
    near = torch.cat([surface + _truncated_normal(g, 0.005, 0.25, surface.shape, dev),
                      surface + _truncated_normal(g, 0.05, 0.25, surface.shape, dev)])
    unit = len(sharp) // 6
    counts = [unit] * 5 + [len(sharp) - 5 * unit]
    scale = torch.from_numpy(np.repeat(np.array((0.001, 0.003, 0.06, 0.01, 0.02, 0.04)), counts)).to(dev)
    sharp_near = sharp + torch.randn(sharp.shape, generator=g, dtype=torch.float64, device=dev) * scale[:, None]
    near = near[torch.randperm(len(near), generator=g, device=dev)]
    sharp_near = sharp_near[torch.randperm(len(sharp_near), generator=g, device=dev)]
    allp = torch.cat([vol, near, sharp_near]).to(torch.float32)
    label = shell_labels(shell, allp, num_threads=num_threads)
    n1, n2 = len(vol), len(vol) + len(near)
    h = torch.float16
    return {"vol_points": vol.to(h), "vol_label": label[:n1].to(h),
            "random_near_points": near.to(h), "random_near_label": label[n1:n2].to(h),
            "sharp_near_points": sharp_near.to(h), "sharp_near_label": label[n2:].to(h)}


def sample_mesh(shell, count, seed=None, *, num_threads=0, timings=None):
    """data.sample_mesh on the shell's device: (surface dict, sdf dict) of fp16 tensors. With `timings`, the
    device is synchronised after each stage so that its seconds are the stage's own.

    Nothing is read back here but the sharp-edge rule's output sizes (its vertex merge and sums). The sharp
    samples are drawn from the edges and from the surface, and one is kept by a device flag (is any edge
    sharp?); a shell without area (every triangle degenerate, which the marching cubes does not make) gives
    NaN surface samples instead of the CPU path's error, which would need a read: the drop-in checks them when
    it downloads them."""
    import time

    from .data_sampling import (SHARP_COS, _face_normals, _generator, _sharp_weights, draw_edges,
                                draw_surface)

    dev = shell.grid.device

    def mark(name, t0):
        if timings is not None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            timings[name] = time.perf_counter() - t0
        return time.perf_counter()

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    v, f = shell.verts.to(torch.float64), shell.faces.to(torch.int64)
    if len(f) == 0:  # an output size of the marching cubes, known here
        raise ValueError("the mesh has no area to sample")
    t = time.perf_counter()
    fn, area2 = _face_normals(v, f)
    has_area = area2.sum() > 0
    surf, surf_n = draw_surface(v, f, fn, area2, count, _generator(rng, dev))
    surf, surf_n = (torch.where(has_area, x, math.nan) for x in (surf, surf_n))
    t = mark("surface", t)
    a, b, length, _, vn = _sharp_weights(v, f, SHARP_COS)
    g = _generator(rng, dev)
    g_flat = torch.Generator(device=dev)
    g_flat.set_state(g.get_state())  # a generator's state is host-side (seed and offset), also on CUDA
    sharp, sharp_n = draw_edges(v, a, b, length, vn, count, g)
    # no sharp edge: the samples come from the surface (the original raised IndexError), drawn from the state
    # the edge draw started from
    flat, flat_n = draw_surface(v, f, fn, area2, count, g_flat)
    has_sharp = length.sum() > 0
    sharp, sharp_n = (torch.where(has_area, torch.where(has_sharp, x, y), math.nan)
                      for x, y in ((sharp, flat), (sharp_n, flat_n)))
    t = mark("sharp", t)
    surface_data = {"random_surface": torch.cat([surf, surf_n], 1).to(torch.float16),
                    "sharp_surface": torch.cat([sharp, sharp_n], 1).to(torch.float16)}
    sdf_data = sdf_samples(shell, surf, sharp, rng, num_threads=num_threads)
    mark("labels", t)
    return surface_data, sdf_data
