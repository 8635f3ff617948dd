"""Hunyuan3D-2.1's hy3dshape/tools/watertight/watertight_and_sample.py as a call sequence on libigl 2.6, for the
side-by-side tests and `flowkernels bench --ops prepare` (not for use: flowkernels.data is the fast path).

The steps and calls are the original's (libigl, trimesh, scipy.stats.truncnorm, numpy's global RNG). libigl 2.6
changed two signatures the script relies on: `signed_distance` returns (S, I, C, N) and takes no
`return_normals`, `marching_cubes` returns (V, F, E2V); the two shims below adapt only those.
"""
from __future__ import annotations

import time

import numpy as np


def _igl():
    import igl
    return igl


def signed_distance(P, V, F, return_normals=False, sign_type=None):
    igl = _igl()
    kw = {} if sign_type is None else {"sign_type": sign_type}
    S, I, C, _ = igl.signed_distance(np.asarray(P, np.float64), np.asarray(V, np.float64), np.asarray(F, np.int64),
                                     **kw)
    return S, I, C


def marching_cubes(S, GV, nx, ny, nz, isovalue):
    V, F, _ = _igl().marching_cubes(S, GV, nx, ny, nz, isovalue)
    return V, F


def watertight(V, F, epsilon=2.0 / 256, grid_res=256):
    igl = _igl()
    min_corner, max_corner = V.min(axis=0), V.max(axis=0)
    padding = 0.05 * (max_corner - min_corner)
    min_corner, max_corner = min_corner - padding, max_corner + padding
    axes = [np.linspace(min_corner[a], max_corner[a], grid_res) for a in range(3)]
    X, Y, Z = np.meshgrid(*axes, indexing="ij")
    grid_points = np.vstack([X.ravel(), Y.ravel(), Z.ravel()]).T
    sdf, _, _ = signed_distance(grid_points, V, F, sign_type=igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL)
    return marching_cubes(epsilon - np.abs(sdf), grid_points, grid_res, grid_res, grid_res, 0.0)


def labels(points, mesh):
    sdf, _, _ = signed_distance(points.astype(np.float32), mesh.vertices, mesh.faces, return_normals=False,
                                sign_type=_igl().SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER)
    return -sdf


def random_sample_pointcloud(mesh, num):
    points, face_idx = mesh.sample(num, return_index=True)
    normals = mesh.face_normals[face_idx]
    index = np.random.default_rng().choice(num, num, replace=False)
    return points[index], normals[index]


def sharp_edges(mesh):
    """The first half of the original's sharp_sample_pointcloud, its selection: (edge_a, edge_b, V, VN)."""
    V, N, VN, F = mesh.vertices, mesh.face_normals, mesh.vertex_normals, mesh.faces
    VN2 = np.ones(V.shape[0])
    for i in range(3):
        dot = np.stack((VN2[F[:, i]], np.sum(VN[F[:, i]] * N, axis=-1)), axis=-1)
        VN2[F[:, i]] = np.min(dot, axis=-1)
    sharp_mask = VN2 < 0.985
    edge_a = np.concatenate((F[:, 0], F[:, 1], F[:, 2]))
    edge_b = np.concatenate((F[:, 1], F[:, 2], F[:, 0]))
    sharp_edge = sharp_mask[edge_a] * sharp_mask[edge_b]
    return edge_a[sharp_edge > 0], edge_b[sharp_edge > 0], V, VN


def sharp_sample_pointcloud(mesh, num):
    edge_a, edge_b, V, VN = sharp_edges(mesh)
    weights = np.linalg.norm(V[edge_b] - V[edge_a], axis=-1)
    weights /= np.sum(weights)
    index = np.searchsorted(weights.cumsum(), np.random.rand(num))
    w = np.random.rand(num, 1)
    samples = w * V[edge_a][index] + (1 - w) * V[edge_b][index]
    normals = w * VN[edge_a][index] + (1 - w) * VN[edge_b][index]
    return samples, normals


def sample_sdf(mesh, random_surface, sharp_surface):
    from scipy.stats import truncnorm

    vol_points = (np.random.rand(sharp_surface.shape[0] * 2, 3) - 0.5) * 2 * 1.05
    a, b = -0.25, 0.25
    offset1 = truncnorm.rvs(a / 0.005, b / 0.005, loc=0, scale=0.005, size=(len(random_surface), 3))
    offset2 = truncnorm.rvs(a / 0.05, b / 0.05, loc=0, scale=0.05, size=(len(random_surface), 3))
    near = np.concatenate([random_surface + offset1, random_surface + offset2], axis=0)
    unit = len(sharp_surface) // 6
    scales = (0.001, 0.003, 0.06, 0.01, 0.02, 0.04)
    cuts = [unit * i for i in range(6)] + [len(sharp_surface)]
    sharp_near = np.concatenate([sharp_surface[cuts[i]:cuts[i + 1]]
                                 + np.random.normal(scale=s, size=(cuts[i + 1] - cuts[i], 3))
                                 for i, s in enumerate(scales)], axis=0)
    np.random.shuffle(near)
    np.random.shuffle(sharp_near)
    out = {}
    for key, pts in (("vol", vol_points), ("random_near", near), ("sharp_near", sharp_near)):
        out[f"{key}_points"] = pts.astype(np.float16)
        out[f"{key}_label"] = labels(pts, mesh).astype(np.float16)
    return out


def sample_mesh(V, F, num=499712 // 4, timings=None):
    import trimesh

    timings = {} if timings is None else timings
    mesh = trimesh.Trimesh(vertices=V, faces=F)
    t = time.perf_counter()
    surface, normal = random_sample_pointcloud(mesh, num)
    timings["surface"] = time.perf_counter() - t
    t = time.perf_counter()
    sharp, sharp_normal = sharp_sample_pointcloud(mesh, num)
    timings["sharp"] = time.perf_counter() - t
    surface_data = {"random_surface": np.concatenate((surface, normal), axis=1).astype(np.float16),
                    "sharp_surface": np.concatenate((sharp, sharp_normal), axis=1).astype(np.float16)}
    t = time.perf_counter()
    sdf_data = sample_sdf(mesh, surface, sharp)
    timings["labels"] = time.perf_counter() - t
    return surface_data, sdf_data


def watertight_and_sample(input_path, output_prefix, grid_res=256, timings=None):
    """The script's __main__ on one file, with seconds per stage written into `timings`."""
    igl = _igl()
    from ..data import normalize_to_unit_box

    timings = {} if timings is None else timings
    t = time.perf_counter()
    V, F = igl.read_triangle_mesh(input_path)
    V = normalize_to_unit_box(V)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    mc_verts, mc_faces = watertight(V, F, grid_res=grid_res)
    timings["watertight"] = time.perf_counter() - t
    surface_data, sdf_data = sample_mesh(mc_verts, mc_faces, timings=timings)
    t = time.perf_counter()
    np.savez(f"{output_prefix}_surface.npz", **surface_data)
    np.savez(f"{output_prefix}_sdf.npz", **sdf_data)
    igl.writeOBJ(f"{output_prefix}_watertight.obj", mc_verts, mc_faces)  # write_obj in libigl < 2.6
    timings["write"] = time.perf_counter() - t
    return timings
