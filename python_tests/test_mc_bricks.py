"""The CUDA driver's brick algorithm, checked without a GPU: the CPU method "bricks" runs the same
__host__ __device__ functions (csrc/marching_cubes/brick.h) with warps emulated lane by lane, and must give the
bit-plane method's mesh bit for bit; the CUDA source must compile for sm_90 and sm_80 without spills or local memory
and with at least half of each SM's threads resident."""
import math

import numpy as np
import pytest
import torch

import flowkernels as fk
from flowkernels import _native, compile_check
from flowkernels.reference.mc_ambiguity import marching_cubes_decided



def run(grid, method, **kwargs):
    return fk.marching_cubes(grid, return_normals=True, cpu_method=method, **kwargs)


def assert_same_mesh(a, b):
    for name in ("faces", "verts", "normals"):
        x, y = torch.as_tensor(getattr(a, name)), torch.as_tensor(getattr(b, name))
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert torch.equal(x, y), f"{name} differ at {(x != y).nonzero()[:4].tolist()}"


def field(name, shape):
    """Smooth fields on a grid of `shape` (index space), for surfaces that cross many segments and blocks."""
    axes = [torch.linspace(0, 1, n, dtype=torch.float64) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    if name == "sphere":
        return ((x - 0.5) ** 2 + (y - 0.45) ** 2 + (z - 0.55) ** 2).sqrt() - 0.3
    if name == "gyroid":
        x, y, z = 4 * math.pi * x, 4 * math.pi * y, 5 * math.pi * z
        return torch.sin(x) * torch.cos(y) + torch.sin(y) * torch.cos(z) + torch.sin(z) * torch.cos(x)
    raise ValueError(name)


def grid_case(case):
    """(grid, kwargs) for each grid family the marching cubes tests use, sized so rows span several segments
    and blocks, with row lengths on and off the 32-point segment."""
    if case == "gyroid-nan":  # NaN slices, and NaN / inf points on both sides of a segment boundary
        grid = field("gyroid", (37, 29, 70)).float()
        grid[17:19] = float("nan")
        band = grid[:, :, 29:35]
        band[torch.rand(band.shape) < 0.2] = float("nan")
        grid[3, 4, 63], grid[30, 20, 64] = float("inf"), -float("inf")
        return grid, dict(level=0.2)
    if case == "sphere-nan-holes":  # a decoder that never evaluated the top of the box, and an inf block
        grid = field("sphere", (40, 40, 40))
        grid[:, :, 25:] = float("nan")
        grid[10:14, 10:30, 5:9] = float("inf")
        return grid, {}
    if case == "strided":  # non-contiguous along z: lanes do not read consecutive values
        grid = field("sphere", (45, 60, 50)).float().permute(2, 0, 1)[:, ::2, 1:]
        assert not grid.is_contiguous()
        return grid, dict(bounds=1.0)
    if case == "fp16":
        return field("gyroid", (30, 31, 33)).half(), dict(level=0.1)
    if case == "bf16":
        return field("sphere", (34, 33, 95)).bfloat16(), dict(bounds=[-1, -1, -1, 1, 1, 1])
    if case == "fp64-ascent":
        return field("gyroid", (21, 22, 64)), dict(level=-0.3, gradient_direction="ascent")
    if case == "noise":  # dense crossings: block offsets near their largest, most segments active
        return torch.randn(11, 13, 97), dict(level=0.05)
    if case == "sparse":  # a small sphere in a large box: runs of empty blocks between active ones
        grid = field("sphere", (70, 66, 40)) + 0.22
        return grid.float(), {}
    raise ValueError(case)


CASES = ["gyroid-nan", "sphere-nan-holes", "strided", "fp16", "bf16", "fp64-ascent", "noise", "sparse"]


@pytest.mark.parametrize("case", CASES)
def test_bricks_match_bitplanes_bit_for_bit(case):
    grid, kwargs = grid_case(case)
    want = run(grid, "bitplanes", **kwargs)
    got = run(grid, "bricks", num_threads=3, **kwargs)
    assert len(want.faces) > 50
    assert_same_mesh(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (runs on GPU machines)")
@pytest.mark.parametrize("case", CASES)
def test_cuda_driver_matches_cpu_bit_for_bit(case):
    grid, kwargs = grid_case(case)
    want = run(grid, "bitplanes", **kwargs)
    got = fk.marching_cubes(grid.cuda(), return_normals=True, **kwargs)
    assert got.faces.is_cuda and got.verts.is_cuda
    assert_same_mesh(type(got)(*(t.cpu() for t in got)), want)


# Rows shorter than, equal to, and just over one segment, several segments, partial last blocks (segment counts
# that are not multiples of 32), and grids too thin for cells.
SHAPES = [(1, 1, 1), (2, 2, 2), (1, 5, 5), (3, 7, 2), (9, 4, 13), (3, 3, 31), (3, 4, 32), (4, 3, 33), (2, 5, 64),
          (3, 2, 65), (5, 3, 97), (6, 7, 130)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bricks_match_the_reference_on_segment_edge_shapes(shape):
    grid = torch.randn(shape, dtype=torch.float64)
    grid[torch.rand(shape) < 0.05] = float("nan")
    level = float(torch.rand(()) - 0.5)
    got = run(grid, "bricks", level=level)
    assert_same_mesh(got, run(grid, "bitplanes", level=level))
    if grid.numel() <= 2000:  # the plain reference is slow: small grids only
        v, f = marching_cubes_decided(grid.numpy(), level)
        np.testing.assert_array_equal(got.faces.numpy(), f)
        np.testing.assert_allclose(got.verts.numpy(), v, atol=2e-6)


def test_bricks_scratch_fits_the_budget():
    """About 0.66 byte per grid point, so a 1024^3 fp16 grid and its scratch take under 3 GiB."""
    ext = _native.load()
    n = 1024
    per_point = ext.mc_brick_scratch_bytes(cuda=False, shape=(n, n, n)) / n**3
    assert 0.6 < per_point < 0.7
    assert 2 * n**3 + per_point * n**3 < 3 * 2**30
    # Rows shorter than a segment pay for a whole one: about 2.1 bytes per point from 10 points a row.
    assert ext.mc_brick_scratch_bytes(cuda=False, shape=(64, 64, 10)) / (64 * 64 * 10) < 2.25
    with pytest.raises(ValueError, match="too large"):
        ext.mc_brick_scratch_bytes(cuda=False, shape=(2, 2**27, 2**20))


@pytest.mark.skipif(compile_check.find_nvcc() is None, reason="needs nvcc (present on the CI machine)")
@pytest.mark.parametrize("arch", [90, 80])
def test_cuda_driver_compiles_without_spills_at_half_occupancy(arch):
    """Every kernel of the driver (CUB's scan included) compiles with the build's flags with no spills and no
    local memory, and, from its registers, __launch_bounds__ block size and shared memory, keeps at least half of
    the SM's threads resident (the compile check's rule) - the fp64 vertex kernel too."""
    results = [r for r in compile_check.compile_cuda(arch) if r.config == "brick_cuda.cu"]
    print(compile_check.format_table(results))
    assert all(r.ok for r in results), [(r.kernel, r.problems) for r in results if not r.ok]
    ours = [r for r in results if "brick::" in r.kernel and "cub" not in r.kernel.lower()]
    parts = ("classify_kernel", "valid_cells_kernel", "count_kernel", "compact_kernel", "emit_vertices_kernel",
             "emit_faces_kernel", "emit_centres_kernel")
    for part in parts:
        assert any(part in r.kernel for r in ours), f"{part} missing from the ptxas report"
    # classify, count, vertices, faces and centres read the grid: one kernel per dtype
    assert len(ours) == 4 + 1 + 4 + 1 + 4 + 4 + 4
    for r in results:
        assert r.spill_stores == 0 and r.spill_loads == 0 and r.stack == 0, (r.kernel, r)
    for r in ours:
        assert r.threads == 256 and r.occupancy >= 0.5, (r.kernel, r.registers, r.threads, r.occupancy)
