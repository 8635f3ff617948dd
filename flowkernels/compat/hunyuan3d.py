"""Drop-ins for Hunyuan3D-2.1: `MCSurfaceExtractor` (hy3dshape.models.autoencoders.surface_extractors) and
`FlowMatchingSampler`, the denoising loop of Hunyuan3DDiTFlowMatchingPipeline.__call__.

Differences from the original: extraction runs on the grid's device (CPU or CUDA) instead of scikit-image on
the CPU; vertices use the correct step (hi - lo) / (n - 1) (the original divides by n, shrinking the mesh by
R / (R + 1): pass legacy_scaling=True to reproduce it); NaN cells left by hierarchical decoding emit nothing
instead of NaN vertices. Faces keep the original's winding, so the pipeline's reversal on export still applies.
"""
from __future__ import annotations

import numpy as np
import torch

from ..marching_cubes import marching_cubes
from ..sampling import Guidance, hunyuan_timesteps, sample_euler
from .hunyuan3d_data import watertight_and_sample  # noqa: F401  (training data: hy3dshape/tools/watertight)


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


class FlowMatchingSampler:
    """Hunyuan3D-2.1's flow-matching sampling loop (t: 0 noise → 1 data) on the fused guided step.

    sample(model, latents, cond) calls model(x, t, cond, guidance=guidance_embed) with x = [latents; latents] and
    t in [0, 1] when guidance_scale >= 0 (cond must then hold [cond; uncond], as the pipeline's encode_cond
    builds it) and v = v_u + w (v_c − v_u); the update is x ← x + (t_next − t) v in fp32.

    fix_final_step=True (default) spends every one of the `num_inference_steps` model calls on a real step
    (grid linspace(0, 1, N + 1)); fix_final_step=False reproduces the original grid linspace(0, 1, N) + [1.0],
    whose last model call has dt = 0.
    """

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, fix_final_step: bool = True,
                 backend=None):
        if not shift > 0:
            raise ValueError(f"shift={shift!r} must be > 0")
        self.num_train_timesteps = num_train_timesteps
        self.shift = shift
        self.fix_final_step = fix_final_step
        self.backend = backend

    def timesteps(self, num_inference_steps: int) -> list:
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={num_inference_steps!r} must be an integer >= 1")
        return hunyuan_timesteps(num_inference_steps, self.shift, self.fix_final_step)

    @torch.no_grad()
    def sample(self, model, latents: torch.Tensor, cond, *, num_inference_steps: int = 50,
               guidance_scale: float = 5.0, guidance=None, enable_pbar: bool = True, cuda_graph: bool = False,
               callback=None):
        ts = self.timesteps(num_inference_steps)
        scale = float(self.num_train_timesteps)

        def model_fn(x, t):
            # the pipeline passes (σ·1000 in fp32 → latents dtype) / 1000
            t = (t * scale).to(x.dtype) / scale
            return model(x, t, cond, guidance=guidance)

        cfg = Guidance(scale=guidance_scale, formula="cfg") if guidance_scale >= 0 else None
        return sample_euler(model_fn, latents, ts, guidance=cfg, convention="sit", verbose=enable_pbar,
                            cuda_graph=cuda_graph, callback=callback, backend=self.backend)
