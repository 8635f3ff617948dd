"""Surface and sharp-edge samples of a triangle mesh as torch ops on the mesh's device (CPU or CUDA, one code path).
The public functions read back their input check and whether there is anything to sample; their draws
(draw_surface, draw_edges) read nothing, and the sharp-edge rule reads only its output sizes (the GPU pipeline
calls these directly).

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


def check_seed(seed):
    """None, a non-negative integer (numpy's SeedSequence takes no other), a numpy or a torch Generator."""
    if seed is None or isinstance(seed, (np.random.Generator, torch.Generator)):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be None, an integer >= 0 or a random generator")
    return int(seed)


def check_count(count):
    """A sample count: an integer >= 0 (a negative one raised torch's 'negative dimension', 2.5 a TypeError)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count={count!r} must be an integer >= 0")
    return int(count)


def _generator(seed, device):
    seed = check_seed(seed)
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
    """Angle-weighted vertex normals, trimesh's `vertex_normals` (which the original reads) op for op, on the
    mesh as given (no vertex merging)."""
    v, f, numpy_in = _as_tensors(verts, faces)
    return _out(numpy_in, trimesh_normals(v, f)[1])


def _pick(weights, u):
    """Indices drawn by weight (>= 0, some > 0) for uniforms u in [0, 1): binary search in the cumulative sums;
    a draw rounded onto the very end lands on the last item of positive weight, never on a zero-weight one."""
    cdf = torch.cumsum(weights, 0)
    index = torch.searchsorted(cdf, u * cdf[-1], right=True)
    last = (torch.arange(len(weights), device=weights.device) * (weights > 0)).max()
    return torch.minimum(index, last)


def sample_surface(verts, faces, count: int, seed=None):
    """`count` points uniform by area on the mesh and the unit normals of their faces: float64 [count, 3] x 2."""
    count = check_count(count)
    v, f, numpy_in = _as_tensors(verts, faces)
    fn, area2 = _face_normals(v, f)
    if len(f) == 0 or not bool(area2.sum() > 0):
        raise ValueError("the mesh has no area to sample")
    return _out(numpy_in, *draw_surface(v, f, fn, area2, count, _generator(seed, v.device)))


def draw_surface(v, f, fn, area2, count, g):
    """sample_surface's draw from the face normals and doubled areas of a checked mesh (some area), read-free."""
    face = _pick(area2, torch.rand(count, generator=g, dtype=torch.float64, device=v.device))
    uv = torch.rand(count, 2, generator=g, dtype=torch.float64, device=v.device)
    uv = torch.where((uv.sum(1) > 1.0)[:, None], 1.0 - uv, uv)  # fold the unit square onto the triangle
    a = v[f[face, 0]]
    pts = a + uv[:, :1] * (v[f[face, 1]] - a) + uv[:, 1:] * (v[f[face, 2]] - a)
    return pts, fn[face]


def _sqrt(x):
    # torch's vectorised CPU sqrt is not correctly rounded (it differs from IEEE sqrt in the last bit on AVX-512);
    # numpy's is, as is CUDA's double sqrt
    return torch.from_numpy(np.sqrt(x.numpy())) if x.device.type == "cpu" else torch.sqrt(x)


def _arccos(x):
    # numpy's arccos on the CPU: the original's own (numpy picks it per CPU: SVML on AVX-512, else its portable
    # one); on a GPU the device's acos (see flowkernels/data.md: why this one cannot be numpy's bit for bit)
    return torch.from_numpy(np.arccos(x.numpy())) if x.device.type == "cpu" else torch.arccos(x)


def _dot3(a, b):
    p = a * b
    return (p[:, 0] + p[:, 1]) + p[:, 2]  # numpy's row dot with ones and sum over 3: left to right


def _unitize(x):
    """trimesh.util.unitize: rows times the reciprocal of their norm where it exceeds 1e-13, else times the norm."""
    norm = _sqrt(_dot3(x, x))
    valid = norm > 1e-13
    return x * torch.where(valid, 1.0 / norm, norm)[:, None], valid


# Histogram bins for the entries' ranks in _sequential_sums: a vertex of a marching-cubes shell is in at most
# a few dozen face corners, so one read covers it; more falls back to an exact count (two more reads).
RANK_BINS = 64


def _sequential_sums(index, values, n):
    """out[i] = sum of values[k] over k with index[k] == i, added one after another in k order (scipy's COO
    product does this): entries are grouped by their rank among equal indices, and rank r's group (distinct
    indices) is added in turn. One read-back: the size of each rank's group (a histogram of RANK_BINS bins,
    the last one holding every rank beyond; an exact count only when an index holds more entries than that)."""
    order = torch.argsort(index, stable=True)
    si = index[order]
    rank = torch.arange(len(si), device=index.device) - torch.searchsorted(si, si)
    hist = torch.zeros(RANK_BINS + 1, dtype=torch.int64, device=index.device)
    counts = hist.scatter_add_(0, rank.clamp(max=RANK_BINS), torch.ones_like(rank)).tolist()
    if counts[RANK_BINS]:
        counts = torch.bincount(rank).tolist()
    counts = [c for c in counts if c]  # the groups shrink with the rank: only trailing ones are empty
    entries = order[torch.argsort(rank, stable=True)]
    out = torch.zeros((n,) + values.shape[1:], dtype=values.dtype, device=values.device)
    k = 0
    for c in counts:
        e = entries[k:k + c]
        out[index[e]] += values[e]
        k += c
    return out


def trimesh_normals(v, f):
    """(face normals, vertex normals) as trimesh computes `face_normals` and `vertex_normals` for the original,
    operation for operation in float64: the cross product of (b - a) and (c - b), unitize, corner angles from
    arccos of unit-edge dots (the third as pi minus the others, all zero when one is below 1e-8), faces with a
    valid normal summed per vertex in (face, corner) order, unitize. Bit for bit trimesh's on the CPU."""
    t0, t1, t2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e0, e1 = t1 - t0, t2 - t1
    cr = torch.stack([e0[:, 1] * e1[:, 2] - e0[:, 2] * e1[:, 1], e0[:, 2] * e1[:, 0] - e0[:, 0] * e1[:, 2],
                      e0[:, 0] * e1[:, 1] - e0[:, 1] * e1[:, 0]], 1)
    unit, valid = _unitize(cr)
    fn = torch.where(valid[:, None], unit, 0.0)
    u, w, x = _unitize(e0)[0], _unitize(e1)[0], _unitize(t2 - t0)[0]
    a0 = _arccos(_dot3(u, x).clamp(-1.0, 1.0))
    a1 = _arccos(_dot3(-u, w).clamp(-1.0, 1.0))
    ang = torch.stack([a0, a1, (np.pi - a0) - a1], 1)
    ang = torch.where((ang < 1e-8).any(1, keepdim=True), 0.0, ang)
    sq = fn * fn
    ok = ((sq[:, 0] + sq[:, 1]) + sq[:, 2]) > 0.5
    # faces without a valid normal add +0.0 in their place instead of being filtered out (a boolean filter is a
    # read-back on a GPU): x + 0.0 == x bit for bit, as the sums start at +0.0 and never become -0.0
    vals = torch.where(ok[:, None, None], ang[:, :, None] * fn[:, None, :], 0.0).reshape(-1, 3)
    return fn, _unitize(_sequential_sums(f.reshape(-1), vals, len(v)))[0]


def merge_like_trimesh(v, f):
    """trimesh.Trimesh(V, F)'s processing (merge_vertices), which the original's mesh goes through: referenced
    vertices whose coordinates agree to 8 decimals (round(v * 1e8)) become one, at the position of the first.
    Returns (merged verts, merged faces, rep: the input index of each merged vertex, inv: the merged index of each
    input vertex, -1 where unreferenced). Marching-cubes shells have such pairs where the surface pinches."""
    n = len(v)
    referenced = torch.zeros(n, dtype=torch.bool, device=v.device)
    referenced[f.reshape(-1)] = True
    ids = torch.nonzero(referenced).reshape(-1)
    key = torch.round(v[ids] * 1e8).to(torch.int64)
    uniq, group = torch.unique(key, dim=0, return_inverse=True)  # its output size: a read-back on a GPU
    first = torch.full((len(uniq),), len(ids), dtype=torch.int64, device=v.device)
    first.scatter_reduce_(0, group, torch.arange(len(ids), device=v.device), reduce="amin")
    # merged vertices in order of first occurrence (trimesh's keep_order), so merged faces read the same
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=v.device)
    rep = ids[first[order]]
    inv = torch.full((n,), -1, dtype=torch.int64, device=v.device)
    inv[ids] = rank[group]
    return v[rep], inv[f], rep, inv


def _sharp_weights(v, f, cos_threshold):
    """Per face edge (slot-major: edges (f0, f1), then (f1, f2), then (f2, f0)): its endpoints, its length if
    both ends are sharp by the original's rule, else 0, whether it is selected (both ends sharp: also the
    zero-length edges of faces that merging made degenerate, which the original selects with weight 0); and the
    vertex normals.

    The original's rule: vertex `sharpness` starts at 1 and, per corner slot of the faces in order, becomes
    min(itself, vn . fn) through numpy's repeated-index assignment, so among the faces holding a vertex in that
    slot the last one wins. Here that face is found deterministically (the largest face index per vertex, a
    scatter max) rather than by the order of colliding writes. vn and fn are trimesh's (trimesh_normals) on the
    mesh as trimesh processes it (merge_like_trimesh)."""
    if _native_ok(v):
        return _sharp_weights_native(v, f, cos_threshold)
    mv, mf, rep, inv = merge_like_trimesh(v, f)
    a = torch.cat([mf[:, 0], mf[:, 1], mf[:, 2]])
    b = torch.cat([mf[:, 1], mf[:, 2], mf[:, 0]])
    fn, vn = trimesh_normals(mv, mf)
    sharpness = torch.ones(len(mv), dtype=v.dtype, device=v.device)
    face_ids = torch.arange(len(f), device=v.device)
    for c in range(3):
        last = torch.full((len(mv),), -1, dtype=torch.int64, device=v.device)
        last.scatter_reduce_(0, mf[:, c], face_ids, reduce="amax")
        held = last >= 0
        dots = _dot3(vn, fn[last.clamp_min(0)])
        sharpness = torch.where(held, torch.minimum(sharpness, dots), sharpness)
    sharp = sharpness < cos_threshold
    selected = sharp[a] & sharp[b]
    length = torch.linalg.vector_norm(mv[b] - mv[a], dim=1) * selected
    # back to the input's vertex indices (a merged vertex is its first input vertex)
    return rep[a], rep[b], length, selected, _to_input(v, inv, vn)


def _to_input(v, inv, vn):
    """Vertex normals of the merged mesh for every input vertex (0 where unreferenced: trimesh drops those)."""
    return torch.where((inv >= 0)[:, None], vn[inv.clamp_min(0)], 0.0) if len(vn) else torch.zeros_like(v)


def _sharp_weights_native(v, f, cos_threshold):
    """_sharp_weights in the native core (the same operations; numpy's arccos between its two passes)."""
    from . import _native

    ext = _native.load()
    v, f = v.contiguous(), f.contiguous()
    n_f = len(f)
    mf, rep, inv = torch.empty_like(f), torch.empty(len(v), dtype=torch.int64), torch.empty(len(v), dtype=torch.int64)
    n_m = ext.mesh_merge_like_trimesh(verts=v.data_ptr(), num_verts=len(v), faces=f.data_ptr(), num_faces=n_f,
                                      merged_faces=mf.data_ptr(), rep=rep.data_ptr(), inv=inv.data_ptr())
    rep = rep[:n_m]
    mv = v[rep].contiguous()
    fn, cos = torch.empty(n_f, 3, dtype=torch.float64), torch.empty(n_f, 2, dtype=torch.float64)
    ext.mesh_trimesh_face_pass(verts=mv.data_ptr(), faces=mf.data_ptr(), num_faces=n_f, normals=fn.data_ptr(),
                               cosines=cos.data_ptr(), num_threads=_threads())
    ang = np.ascontiguousarray(np.arccos(cos.numpy()))
    vn = torch.empty(n_m, 3, dtype=torch.float64)
    length, sel = torch.empty(3 * n_f, dtype=torch.float64), torch.empty(3 * n_f, dtype=torch.uint8)
    ext.mesh_trimesh_sharp(faces=mf.data_ptr(), num_verts=n_m, num_faces=n_f, normals=fn.data_ptr(),
                           angles=ang.ctypes.data, cos_threshold=float(cos_threshold), vertex_normals=vn.data_ptr(),
                           edge_lengths=length.data_ptr(), verts=mv.data_ptr(), selected=sel.data_ptr(),
                           num_threads=_threads())
    a = torch.cat([mf[:, 0], mf[:, 1], mf[:, 2]])
    b = torch.cat([mf[:, 1], mf[:, 2], mf[:, 0]])
    return rep[a], rep[b], length, sel.bool(), _to_input(v, inv, vn)


def sharp_edges(verts, faces, cos_threshold: float = SHARP_COS):
    """The original's sharp edges: (a, b) vertex indices of the face edges taken (an edge shared by two faces
    appears twice, weighting as there) and the vertex normals."""
    v, f, numpy_in = _as_tensors(verts, faces)
    a, b, _, keep, vn = _sharp_weights(v, f, cos_threshold)
    return _out(numpy_in, a[keep], b[keep], vn)


def sample_sharp_edges(verts, faces, count: int, seed=None):
    """`count` points on the sharp edges by length, with normals blended linearly from the vertex normals (not
    renormalised, as in the original). A mesh without sharp edges gives empty [0, 3] arrays (the original
    raised IndexError)."""
    count = check_count(count)
    v, f, numpy_in = _as_tensors(verts, faces)
    a, b, length, _, vn = _sharp_weights(v, f, SHARP_COS)
    if len(a) == 0 or not bool(length.sum() > 0):
        empty = torch.zeros(0, 3, dtype=torch.float64, device=v.device)
        return _out(numpy_in, empty, empty.clone())
    return _out(numpy_in, *draw_edges(v, a, b, length, vn, count, _generator(seed, v.device)))


def draw_edges(v, a, b, length, vn, count, g):
    """sample_sharp_edges' draw from the edge weights of _sharp_weights (some positive), read-free."""
    index = _pick(length, torch.rand(count, generator=g, dtype=torch.float64, device=v.device))
    w = torch.rand(count, 1, generator=g, dtype=torch.float64, device=v.device)
    ia, ib = a[index], b[index]
    return w * v[ia] + (1 - w) * v[ib], w * vn[ia] + (1 - w) * vn[ib]
