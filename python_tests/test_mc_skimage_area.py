"""Area against scikit-image's (Lewiner's) mesh on saddle-dense fields: the native drivers decide ambiguous faces
from values as Lewiner does, so the areas agree within 5e-4 where the sign rule was up to 0.3-1% off.

The one stated exception is scikit-image's interior test for Lewiner's case 4 (two body-diagonal corners alone on
their side): its Cython port draws a tube through the cell where the trilinear interpolant does not join the two
corners (marching_cubes.md). We follow the interpolant there, so each field's difference is split cell by cell
(a triangle belongs to the cell holding its centroid) and the cells of that case where the interpolant does not
join the corners (`body_diagonal_cells`, a flood fill of the interpolant) are taken out; what is left must be
within the bound."""
import numpy as np
import pytest
import torch

import flowkernels as fk
from flowkernels.reference.mc_ambiguity import body_diagonal_cells

from test_mc_watertight import smooth_field

skimage = pytest.importorskip("skimage.measure")


def cell_areas(verts, faces, shape):
    """Area of the mesh in each cell (flattened, C order), each triangle counted in the cell of its centroid."""
    v = np.asarray(verts, dtype=np.float64)
    a, b, c = (v[np.asarray(faces)[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    cells = np.array(shape) - 1
    at = np.clip(np.floor((a + b + c) / 3).astype(np.int64), 0, cells - 1)
    return np.bincount(np.ravel_multi_index(at.T, tuple(cells)), area, minlength=int(np.prod(cells)))


def area_error(grid):
    """(relative area error against scikit-image, the same with its case-4 tubes taken out, cells taken out)."""
    sv, sf, _, _ = skimage.marching_cubes(grid, 0.0)
    mesh = fk.marching_cubes(grid, 0.0)
    ours, theirs = cell_areas(mesh.verts, mesh.faces, grid.shape), cell_areas(sv, sf, grid.shape)
    total = theirs.sum()
    slips = [np.ravel_multi_index(cell, tuple(np.array(grid.shape) - 1))
             for cell, joined in body_diagonal_cells(grid) if not joined]
    err = ours.sum() / total - 1
    return err, err - sum(ours[c] - theirs[c] for c in slips) / total, len(slips)


# (kind, shape, fields, bound per field): smallest side >= 16. At 16^3 a field in ~40 per kind is left above 5e-4
# by interior ambiguities Lewiner decides and the drivers do not (marching_cubes.md: his interior tests for cases
# 10 / 12 and the triangulation of some 7-vertex loops); there each field is held to 2e-3 and at most one of the
# batch may pass 5e-4. The sign rule these replace misses 5e-4 on about a third of these 16^3 fields (up to 3e-3).
FAMILIES = [("trilinear", (16, 16, 16), 6), ("gaussians", (16, 16, 16), 6), ("trilinear", (24, 24, 24), 3),
            ("gaussians", (24, 24, 24), 3), ("trilinear", (37, 53, 29), 2), ("gaussians", (37, 53, 29), 2)]


@pytest.mark.parametrize("kind,shape,fields", FAMILIES, ids=lambda x: "x".join(map(str, x)) if isinstance(x, tuple)
                         else str(x))
def test_area_matches_scikit_image_on_saddle_dense_fields(kind, shape, fields):
    seed = torch.initial_seed()
    rng = np.random.default_rng(seed)
    grids = []
    while len(grids) < fields:  # a field with no point below the level has no surface (scikit-image refuses it)
        grid = smooth_field(kind, shape, rng)
        if grid.min() < 0:
            grids.append(grid)
    results = [area_error(grid) for grid in grids]
    for n, (raw, rest, slips) in enumerate(results):
        print(f"seed {seed} field {n}: {kind} {shape} area error {raw:+.2e}, {rest:+.2e} without {slips} case-4 "
              "cells the interpolant does not join")
    rest = np.abs([r[1] for r in results])
    if min(shape) >= 24:
        assert (rest < 5e-4).all(), (seed, rest)
    else:
        assert (rest < 2e-3).all() and (rest >= 5e-4).sum() <= 1, (seed, rest)
        assert np.median(rest) < 2e-4, (seed, rest)
