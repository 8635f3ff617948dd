"""Surface and sharp-edge samples of a triangle mesh as torch ops on the mesh's device (CPU or CUDA, one code path):
no host round trip beyond the one scalar that says whether there is anything to sample.

The per-face passes over the whole mesh (face normals and areas; vertex normals and sharp-edge weights) run in
the native core for CPU tensors (one threaded pass instead of a dozen full-size temporaries: the marching-cubes
shells have ~1M faces) and as torch ops elsewhere; the tests hold the two to each other on the CPU. Drawing the
samples from those weights is the same torch code on every device.

numpy inputs give numpy outputs (float64) on the CPU; torch inputs give float64 tensors on their device.
Randomness: an int seed, a numpy Generator (a torch seed is drawn from it, so one numpy Generator drives a whole
pipeline reproducibly) or a torch.Generator on the mesh's device.
"""
from __future__ import annotations

import numpy as np
import torch

SHARP_COS = 0.985  # a vertex is sharp when some face normal leans > ~10 degrees from its vertex normal


def _as_tensors(verts, faces):
    """(float64 verts, int64 faces, device, whether the caller gave numpy)."""
    if isinstance(verts, torch.Tensor):
        v = verts.detach().to(torch.float64)
        f = torch.as_tensor(faces, device=v.device).to(torch.int64)
        numpy_in = False
    else:
        v = torch.from_numpy(np.ascontiguousarray(verts, dtype=np.float64))
        f = torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64))
        numpy_in = True
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"verts must be [V, 3], got shape {tuple(v.shape)}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got shape {tuple(f.shape)}")
    if f.numel() and bool((f.min() < 0) | (f.max() >= len(v))):
        raise ValueError(f"faces index vertices outside [0, {len(v)})")
    return v, f, numpy_in


def _generator(seed, device):
    if isinstance(seed, torch.Generator):
        if seed.device.type != torch.device(device).type:
            raise ValueError(f"seed: a torch.Generator on {seed.device} for a mesh on {device}")
        return seed
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return torch.Generator(device=device).manual_seed(int(rng.integers(0, 2**62)))


# Tests set this to False to run the torch form of the per-face passes on CPU tensors.
USE_NATIVE = True


def _native_ok(v):
    return USE_NATIVE and v.device.type == "cpu"


def _threads():
    from .data import _threads as threads
    return threads(None)


def _out(numpy_in, *tensors):
    return tuple(t.numpy() for t in tensors) if numpy_in else tensors


def face_normals(verts, faces):
    """Unit face normals (zero for degenerate faces) and the doubled areas (float64, on the mesh's device)."""
    v, f, numpy_in = _as_tensors(verts, faces)
    return _out(numpy_in, *_face_normals(v, f))


def _face_normals(v, f):
    if _native_ok(v):
        from . import _native

        v, f = v.contiguous(), f.contiguous()
        fn = torch.empty(len(f), 3, dtype=torch.float64)
        area2 = torch.empty(len(f), dtype=torch.float64)
        if len(f):
            _native.load().mesh_face_normals(verts=v.data_ptr(), faces=f.data_ptr(), num_faces=len(f),
                                             normals=fn.data_ptr(), area2=area2.data_ptr(), num_threads=_threads())
        return fn, area2
    e1, e2 = v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]
    # products and differences as separate ops (torch.linalg.cross may fuse them, leaving a rounding residue
    # instead of 0 for a face with a repeated vertex)
    n = torch.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1], e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                     e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], dim=1)
    norm = torch.linalg.vector_norm(n, dim=1)
    return n / torch.where(norm > 0, norm, 1.0)[:, None], norm


def vertex_normals(verts, faces):
    """Angle-weighted vertex normals (trimesh's rule, which the original reads through `mesh.vertex_normals`)."""
    v, f, numpy_in = _as_tensors(verts, faces)
    if _native_ok(v):
        return _out(numpy_in, _sharp_weights(v, f, SHARP_COS)[3])
    return _out(numpy_in, _vertex_normals(v, f, _face_normals(v, f)[0]))


def _vertex_normals(v, f, fn):
    acc = torch.zeros_like(v)
    for c in range(3):
        e1 = v[f[:, (c + 1) % 3]] - v[f[:, c]]
        e2 = v[f[:, (c + 2) % 3]] - v[f[:, c]]
        l12 = torch.linalg.vector_norm(e1, dim=1) * torch.linalg.vector_norm(e2, dim=1)
        cos = (e1 * e2).sum(1) / torch.where(l12 > 0, l12, 1.0)
        angle = torch.arccos(cos.clamp(-1.0, 1.0)) * (l12 > 0)
        acc.index_add_(0, f[:, c], fn * angle[:, None])
    norm = torch.linalg.vector_norm(acc, dim=1)
    return acc / torch.where(norm > 0, norm, 1.0)[:, None]


def _pick(weights, u):
    """Indices drawn by weight (>= 0, some > 0) for uniforms u in [0, 1): binary search in the cumulative sums;
    a draw rounded onto the very end lands on the last item of positive weight, never on a zero-weight one."""
    cdf = torch.cumsum(weights, 0)
    index = torch.searchsorted(cdf, u * cdf[-1], right=True)
    last = (torch.arange(len(weights), device=weights.device) * (weights > 0)).max()
    return torch.minimum(index, last)


def sample_surface(verts, faces, count: int, seed=None):
    """`count` points uniform by area on the mesh and the unit normals of their faces: float64 [count, 3] x 2."""
    v, f, numpy_in = _as_tensors(verts, faces)
    fn, area2 = _face_normals(v, f)
    if len(f) == 0 or not bool(area2.sum() > 0):
        raise ValueError("the mesh has no area to sample")
    g = _generator(seed, v.device)
    face = _pick(area2, torch.rand(count, generator=g, dtype=torch.float64, device=v.device))
    uv = torch.rand(count, 2, generator=g, dtype=torch.float64, device=v.device)
    uv = torch.where((uv.sum(1) > 1.0)[:, None], 1.0 - uv, uv)  # fold the unit square onto the triangle
    a = v[f[face, 0]]
    pts = a + uv[:, :1] * (v[f[face, 1]] - a) + uv[:, 1:] * (v[f[face, 2]] - a)
    return _out(numpy_in, pts, fn[face])


def _sharp_weights(v, f, cos_threshold):
    """Per face edge (slot-major: edges (f0, f1), then (f1, f2), then (f2, f0)): its endpoints and its length if
    both ends are sharp by the original's rule, else 0; and the vertex normals.

    The original's rule: vertex `sharpness` starts at 1 and, per corner slot of the faces in order, becomes
    min(itself, vn . fn) through numpy's repeated-index assignment, so among the faces holding a vertex in that
    slot the last one wins. Here that face is found deterministically (the largest face index per vertex, a
    scatter max) rather than by the order of colliding writes."""
    a = torch.cat([f[:, 0], f[:, 1], f[:, 2]])
    b = torch.cat([f[:, 1], f[:, 2], f[:, 0]])
    if _native_ok(v):
        from . import _native

        v, f = v.contiguous(), f.contiguous()
        vn = torch.empty(len(v), 3, dtype=torch.float64)
        length = torch.empty(3 * len(f), dtype=torch.float64)
        _native.load().mesh_sharp_weights(verts=v.data_ptr(), num_verts=len(v), faces=f.data_ptr(), num_faces=len(f),
                                          cos_threshold=float(cos_threshold), vertex_normals=vn.data_ptr(),
                                          edge_weights=length.data_ptr(), num_threads=_threads())
        return a, b, length, vn
    fn, _ = _face_normals(v, f)
    vn = _vertex_normals(v, f, fn)
    sharpness = torch.ones(len(v), dtype=v.dtype, device=v.device)
    face_ids = torch.arange(len(f), device=v.device)
    for c in range(3):
        last = torch.full((len(v),), -1, dtype=torch.int64, device=v.device)
        last.scatter_reduce_(0, f[:, c], face_ids, reduce="amax")
        held = last >= 0
        dots = (vn * fn[last.clamp_min(0)]).sum(1)
        sharpness = torch.where(held, torch.minimum(sharpness, dots), sharpness)
    sharp = sharpness < cos_threshold
    length = torch.linalg.vector_norm(v[b] - v[a], dim=1) * (sharp[a] & sharp[b])
    return a, b, length, vn


def sharp_edges(verts, faces, cos_threshold: float = SHARP_COS):
    """The original's sharp edges: (a, b) vertex indices of the face edges taken (an edge shared by two faces
    appears twice, weighting as there) and the vertex normals."""
    v, f, numpy_in = _as_tensors(verts, faces)
    a, b, length, vn = _sharp_weights(v, f, cos_threshold)
    keep = length > 0
    return _out(numpy_in, a[keep], b[keep], vn)


def sample_sharp_edges(verts, faces, count: int, seed=None):
    """`count` points on the sharp edges by length, with normals blended linearly from the vertex normals (not
    renormalised, as in the original). A mesh without sharp edges gives empty [0, 3] arrays (the original
    raised IndexError)."""
    v, f, numpy_in = _as_tensors(verts, faces)
    a, b, length, vn = _sharp_weights(v, f, SHARP_COS)
    if len(a) == 0 or not bool(length.sum() > 0):
        empty = torch.zeros(0, 3, dtype=torch.float64, device=v.device)
        return _out(numpy_in, empty, empty.clone())
    g = _generator(seed, v.device)
    index = _pick(length, torch.rand(count, generator=g, dtype=torch.float64, device=v.device))
    w = torch.rand(count, 1, generator=g, dtype=torch.float64, device=v.device)
    ia, ib = a[index], b[index]
    return _out(numpy_in, w * v[ia] + (1 - w) * v[ib], w * vn[ia] + (1 - w) * vn[ib])
