"""Marching cubes: flowkernels against scikit-image (lewiner, lorensen) and, when installed, PyMCubes and VTK."""
import numpy as np
import pytest
import torch

import flowkernels as fk

SIZES = [64, 128, 256]


def sphere(n):
    x = np.linspace(-1, 1, n, dtype=np.float32)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return np.sqrt(X**2 + Y**2 + Z**2) - 0.6


def gyroid(n):
    x = np.linspace(0, 4 * np.pi, n, dtype=np.float32)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return np.sin(X) * np.cos(Y) + np.sin(Y) * np.cos(Z) + np.sin(Z) * np.cos(X)


SHAPES = {"sphere": sphere, "gyroid": gyroid}


def peers():
    out = {"flowkernels": lambda g: fk.marching_cubes(g, 0.0)}
    try:
        from skimage.measure import marching_cubes
        out["skimage-lewiner"] = lambda g: marching_cubes(g, 0.0, method="lewiner")
        out["skimage-lorensen"] = lambda g: marching_cubes(g, 0.0, method="lorensen")
    except ImportError:
        pass
    try:
        import mcubes
        out["pymcubes"] = lambda g: mcubes.marching_cubes(g, 0.0)
    except ImportError:
        pass
    return out


PEERS = peers()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", list(PEERS))
def test_marching_cubes(benchmark, impl, shape, n):
    benchmark.group = f"mc-{shape}-{n}"
    grid = SHAPES[shape](n)
    if impl == "flowkernels" and torch.cuda.is_available():
        grid = torch.from_numpy(grid).cuda()
    fn = PEERS[impl]
    result = fn(grid)
    benchmark.extra_info.update(faces=int(len(result[1])), grid=n)
    benchmark(fn, grid)
