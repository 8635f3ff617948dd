"""Hostile calls of the training-data preparation API (flowkernels.data)."""
import numpy as np
import pytest

from flowkernels import data

TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.mark.parametrize("resolution", [3, 16])
def test_watertight_names_an_eps_below_the_grid_step(resolution):
    """resolution=16 with the default eps = 2/256 (a 0.073 grid step): no grid point lies within eps of the surface
    and the 'watertight' mesh came back with no faces, silently."""
    with pytest.raises(ValueError, match="eps=0.0078125 offset surface crosses no grid cell"):
        data.watertight(TETRA_V, TETRA_F, resolution=resolution)
    verts, faces = data.watertight(TETRA_V, TETRA_F, resolution=16, eps=2 / 16)  # an eps of a grid step works
    assert len(faces) > 0 and np.isfinite(verts).all()


def test_watertight_names_a_flat_mesh():
    """A flat sheet (z = 0 everywhere) gave marching cubes' 'bounds=array(...) is inverted or empty'."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    with pytest.raises(ValueError, match="verts span no extent along axis z"):
        data.watertight(v, f, resolution=32)


@pytest.mark.parametrize("count", [-1, 2.5, True])
def test_sample_counts_are_checked_by_name(count):
    """count=-1 raised torch's 'negative dimension', 2.5 a TypeError from torch.rand."""
    for fn in (data.sample_surface, data.sample_sharp_edges):
        with pytest.raises(ValueError, match="count="):
            fn(TETRA_V, TETRA_F, count)
    shell = data.watertight(TETRA_V, TETRA_F, resolution=24, eps=0.05, return_shell=True)
    with pytest.raises(ValueError, match="count="):
        data.sample_mesh(shell, count)


@pytest.mark.parametrize("seed", [-1, "x", 1.5])
def test_sample_seeds_are_checked_by_name(seed):
    """numpy's 'expected non-negative integer' / SeedSequence's TypeError did not name the argument."""
    with pytest.raises(ValueError, match="seed="):
        data.sample_surface(TETRA_V, TETRA_F, 5, seed=seed)


def test_shell_queries_check_their_points():
    """inside_shell labelled NaN points (a NaN cast to a grid index), and a [P, 2] array failed with numpy's
    broadcasting message."""
    shell = data.watertight(TETRA_V, TETRA_F, resolution=24, eps=0.05, return_shell=True)
    for fn in (data.inside_shell, data.shell_labels):
        with pytest.raises(ValueError, match="points holds NaN or inf"):
            fn(shell, np.full((3, 3), np.nan))
        with pytest.raises(ValueError, match="points must be a \\[P, 3\\] array"):
            fn(shell, np.zeros((3, 2)))
    inside = data.inside_shell(shell, np.array([[0.3, 0.3, 0.0], [5.0, 5.0, 5.0]]))  # in the 2 eps band, far out
    assert inside.tolist() == [True, False]
