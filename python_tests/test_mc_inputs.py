"""Marching cubes on awkward inputs: worker threads that fail to start, negative strides, boxes and values at the
edge of their type, thread counts that make no sense."""
import tracemalloc

import numpy as np
import pytest
import torch

import flowkernels as fk
from flowkernels import _native
from flowkernels.marching_cubes import CPU_METHODS
from flowkernels.reference.marching_cubes import marching_cubes_reference
from flowkernels.reference.mc_ambiguity import marching_cubes_decided


def blobs(shape, rng):
    idx = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64)
    field = np.full(shape, 1.0)
    for _ in range(4):
        c, r = rng.uniform(2, np.array(shape) - 3), rng.uniform(2, 6)
        field = np.minimum(field, np.linalg.norm(idx - c, axis=-1) - r)
    return field


@pytest.fixture
def rng():
    seed = torch.initial_seed()  # fresh per run, set by conftest
    print(f"numpy seed {seed}")
    return np.random.default_rng(seed)


@pytest.mark.parametrize("method", list(CPU_METHODS))
@pytest.mark.parametrize("nth", [1, 2])
def test_worker_thread_failing_to_start_raises_and_leaves_the_process_healthy(method, nth, rng):
    grid = blobs((41, 37, 70), rng)
    want = fk.marching_cubes(grid, num_threads=4, cpu_method=method)
    ext = _native.load()
    ext._set_fail_thread_start(nth)
    try:
        with pytest.raises(RuntimeError, match=f"could not start worker thread {nth} of 3.*num_threads"):
            fk.marching_cubes(grid, num_threads=4, cpu_method=method)
        single = fk.marching_cubes(grid, num_threads=1, cpu_method=method)  # no worker thread to start
    finally:
        ext._set_fail_thread_start(0)
    again = fk.marching_cubes(grid, num_threads=4, cpu_method=method)
    for mesh in (single, again):
        np.testing.assert_array_equal(mesh.faces, want.faces)
        np.testing.assert_array_equal(mesh.verts, want.verts)


VIEWS = {
    "x-reversed": lambda g: g[::-1],
    "flip-all": np.flip,
    "z-reversed": lambda g: g[:, :, ::-1],
    "mixed": lambda g: g[::2, ::-3, 1:][:, :, ::-1].transpose(1, 0, 2),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numpy_negative_strides_are_walked_without_a_copy(view, dtype, rng):
    base = blobs((37, 45, 33), rng).astype(dtype)
    grid = VIEWS[view](base)
    assert any(s < 0 for s in grid.strides)
    want = fk.marching_cubes(np.ascontiguousarray(grid), return_normals=True)
    for method in CPU_METHODS:
        tracemalloc.start()
        try:
            mesh = fk.marching_cubes(grid, return_normals=True, cpu_method=method)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < grid.nbytes / 2, f"{peak} bytes allocated by numpy: the grid ({grid.nbytes} bytes) was copied"
        for got, exp in zip(mesh, want):
            np.testing.assert_array_equal(got, exp)
    batch = np.stack([base, -base])[::-1]
    meshes = fk.marching_cubes(batch)
    np.testing.assert_array_equal(meshes[1].faces, fk.marching_cubes(base).faces)


def test_byte_swapped_numpy_grid_is_read_by_value(rng):
    grid = blobs((17, 19, 21), rng)
    mesh = fk.marching_cubes(grid.astype(grid.dtype.newbyteorder()))
    np.testing.assert_array_equal(mesh.faces, fk.marching_cubes(grid).faces)


@pytest.mark.parametrize("bounds", [1e39, (-1e308, 1e308), [(-3e38, 3e38)] * 3, [0, 0, 0, 1, 1, 4e38]])
def test_bounds_beyond_float32_raise_naming_bounds(bounds):
    with pytest.raises(ValueError, match="bounds"):
        fk.marching_cubes(np.random.default_rng(0).normal(size=(5, 6, 7)), bounds=bounds)


def test_bounds_near_the_float32_limit_still_work(rng):
    grid = blobs((17, 19, 21), rng)
    mesh = fk.marching_cubes(grid, bounds=(-1.5e38, 1.5e38))
    assert np.isfinite(mesh.verts).all() and np.abs(mesh.verts).max() <= 1.5e38


@pytest.mark.parametrize("dtype,big", [(np.float32, 3e38), (np.float32, 3.4028235e38), (np.float64, 1.7e308),
                                       ("bfloat16", 3.3e38)])
def test_values_beyond_the_type_range_apart_give_vertices_strictly_inside_edges(dtype, big, rng):
    """Neighbours of opposite sign whose difference overflows the dtype: each vertex strictly inside its edge, no
    zero-area face, unit normals, and the float64 reference's positions."""
    shape = (9, 11, 13)
    signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    grid64 = signs * big * rng.uniform(0.5, 1.0, shape)
    if dtype == "bfloat16":
        grid = torch.from_numpy(grid64.astype(np.float32)).to(torch.bfloat16)
        grid64 = grid.float().double().numpy()
    else:
        grid = grid64.astype(dtype)
        grid64 = grid.astype(np.float64)
    mesh = fk.marching_cubes(grid, return_normals=True)
    verts, faces = np.asarray(mesh.verts, dtype=np.float64), np.asarray(mesh.faces)
    assert len(faces) > 100 and np.isfinite(verts).all()
    n_edge = len(marching_cubes_reference(grid64)[0])  # the edge vertices; cell-centre vertices follow them
    frac = verts[:n_edge] - np.floor(verts[:n_edge])
    on_edge = (frac > 0).sum(1)
    assert (on_edge == 1).all(), "a vertex sits on a grid point"
    along = frac.max(1)
    assert (along > 0).all() and (along < 1).all()
    a, b, c = (verts[faces[:, i]] for i in range(3))
    assert (np.linalg.norm(np.cross(b - a, c - a), axis=1) > 0).all(), "zero-area faces"
    np.testing.assert_allclose(np.linalg.norm(np.asarray(mesh.normals, dtype=np.float64), axis=1), 1, atol=1e-5)
    ref_v, ref_f = marching_cubes_decided(grid64)
    np.testing.assert_array_equal(faces, ref_f)
    np.testing.assert_allclose(verts, ref_v, atol=2e-6)


@pytest.mark.parametrize("num_threads", [2**40, -1, 4097, "4", 2.0, True])
def test_bad_num_threads_raise_naming_num_threads(num_threads):
    with pytest.raises(ValueError, match="num_threads"):
        fk.marching_cubes(np.ones((3, 3, 3)), num_threads=num_threads)


@pytest.mark.parametrize("value", ["abc", "-2", str(2**40), "1.5"])
def test_bad_thread_environment_variable_raises_naming_it(value, monkeypatch):
    monkeypatch.setenv("FLOWKERNELS_NUM_THREADS", value)
    with pytest.raises(ValueError, match="FLOWKERNELS_NUM_THREADS"):
        fk.marching_cubes(np.ones((3, 3, 3)))
    monkeypatch.setenv("FLOWKERNELS_NUM_THREADS", " 3 ")
    grid = -np.ones((3, 3, 3))
    grid[1, 1, 1] = 1.0
    assert len(fk.marching_cubes(grid).faces) == 8
    assert len(fk.marching_cubes(grid, num_threads=2).faces) == 8  # the argument wins over the variable
