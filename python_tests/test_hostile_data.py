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
