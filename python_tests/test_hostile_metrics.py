"""Hostile calls of the metrics: every bad argument a named ValueError, never a silently wrong number."""
import numpy as np
import pytest
import torch

from flowkernels import metrics

TETRA_V = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
TETRA_F = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.fixture
def igl():
    return pytest.importorskip("igl")


@pytest.mark.parametrize("points", [np.full((4, 3), np.nan), np.array([[0.1, 0.1, np.inf]])], ids=["nan", "inf"])
def test_inside_test_refuses_non_finite_query_points(igl, points):
    """A NaN query point counted as outside both meshes: volume_iou(..., points=NaNs) returned 0.0."""
    with pytest.raises(ValueError, match="points hold non-finite"):
        metrics.volume_iou((TETRA_V, TETRA_F), (TETRA_V * 0.5, TETRA_F), points=points)
    with pytest.raises(ValueError, match="points hold non-finite"):
        metrics.winding_number((TETRA_V, TETRA_F), points)


def test_inside_test_refuses_points_not_of_shape_q3(igl):
    """[N, 3, 2] points were reshaped to [-1, 3]: the coordinates of different points mixed silently."""
    with pytest.raises(ValueError, match="points must have shape \\[Q, 3\\]"):
        metrics.winding_number((TETRA_V, TETRA_F), np.random.default_rng(0).random((4, 3, 2)))


@pytest.mark.parametrize("padding", [float("nan"), -0.1, float("inf"), "0.05"])
def test_volume_iou_names_a_bad_padding(igl, padding):
    """padding=NaN made every query point NaN (an IoU of 0.0)."""
    with pytest.raises(ValueError, match="padding="):
        metrics.volume_iou((TETRA_V, TETRA_F), (TETRA_V, TETRA_F), 100, padding=padding)


@pytest.mark.parametrize("seed", [2**70, 1.5, "0", True])
def test_seeds_are_checked_by_name(seed):
    """seed=2**70 raised torch's 'Overflow when unpacking long long', "0" a TypeError on seed + 1."""
    with pytest.raises(ValueError, match="seed="):
        metrics.evaluate((TETRA_V, TETRA_F), (TETRA_V, TETRA_F), n_points=10, seed=seed)
    with pytest.raises(ValueError, match="seed="):
        metrics.sample_surface((TETRA_V, TETRA_F), 10, seed=seed)
    with pytest.raises(ValueError, match="seed="):
        metrics.chamfer_to_nearest((TETRA_V, TETRA_F), [(TETRA_V, TETRA_F)], n_points=10, seed=seed)


def test_negative_seeds_still_sample():
    points, normals = metrics.sample_surface((TETRA_V, TETRA_F), 16, seed=-3)
    assert points.shape == (16, 3) and torch.isfinite(points).all()
