"""Drop-in for Hunyuan3D-2.1's `MCSurfaceExtractor` (hy3dshape.models.autoencoders.surface_extractors).

Differences from the original: extraction runs on the grid's device (CPU or CUDA) instead of scikit-image on
the CPU; vertices use the correct step (hi - lo) / (n - 1) (the original divides by n, shrinking the mesh by
R / (R + 1): pass legacy_scaling=True to reproduce it); NaN cells left by hierarchical decoding emit nothing
instead of NaN vertices. Faces keep the original's winding, so the pipeline's reversal on export still applies.
"""
from __future__ import annotations

import numpy as np
import torch

from ..marching_cubes import marching_cubes


class Latent2MeshOutput:
    def __init__(self, mesh_v=None, mesh_f=None):
        self.mesh_v = mesh_v
        self.mesh_f = mesh_f


class MCSurfaceExtractor:
    """__call__(grid_logits [B, R+1, R+1, R+1], mc_level=, bounds=, octree_resolution=) -> list of outputs."""

    def __init__(self, legacy_scaling: bool = False, return_tensors: bool = False):
        self.legacy_scaling = legacy_scaling
        self.return_tensors = return_tensors  # keep mesh_v / mesh_f as tensors on the grid's device

    @staticmethod
    def _box(bounds):
        if isinstance(bounds, (int, float)):
            bounds = [-bounds, -bounds, -bounds, bounds, bounds, bounds]
        b = np.asarray(bounds, dtype=np.float64)
        if b.shape != (6,):
            raise ValueError(f"bounds must be a number or [xmin, ymin, zmin, xmax, ymax, zmax], got {bounds!r}")
        return b

    def run(self, grid_logit, *, mc_level, bounds, octree_resolution, **kwargs):
        box = self._box(bounds)
        if self.legacy_scaling:  # original: v / (R + 1) * size + min
            n = int(octree_resolution) + 1
            size = box[3:] - box[:3]
            box = np.concatenate([box[:3], box[:3] + size * (np.asarray(grid_logit.shape) - 1) / n])
        mesh = marching_cubes(grid_logit, float(mc_level), bounds=box)
        return mesh.verts, mesh.faces

    def __call__(self, grid_logits, **kwargs):
        outputs = []
        for i in range(grid_logits.shape[0]):
            verts, faces = self.run(grid_logits[i], **kwargs)
            if not self.return_tensors and isinstance(verts, torch.Tensor):
                verts, faces = verts.cpu().numpy(), faces.cpu().numpy()
            outputs.append(Latent2MeshOutput(mesh_v=verts, mesh_f=faces))
        return outputs
