"""Drop-ins for Hunyuan3D-2.1: `MCSurfaceExtractor` (hy3dshape.models.autoencoders.surface_extractors),
`FlowMatchingSampler` (the denoising loop of Hunyuan3DDiTFlowMatchingPipeline.__call__), and the schedulers of
hy3dshape.schedulers (`FlowMatchEulerDiscreteScheduler`, `ConsistencyFlowMatchEulerDiscreteScheduler`).

Differences from the original extractor: extraction runs on the grid's device (CPU or CUDA) instead of
scikit-image on the CPU; vertices use the correct step (hi - lo) / (n - 1) (the original divides by n, shrinking the
mesh by R / (R + 1): pass legacy_scaling=True to reproduce it); NaN cells left by hierarchical decoding emit nothing
instead of NaN vertices. Faces keep the original's winding, so the pipeline's reversal on export still applies.
A grid with no surface gives None in the output list, as the original (whose scikit-image call raises, and whose
__call__ turns that into None). `bounds` must be a float or six values, as the original: an int raises a ValueError
here, where the original prints a traceback and returns None.
"""
from __future__ import annotations

import numpy as np
import torch

from .._validation import check_real
from ..marching_cubes import marching_cubes
from ..sampling import Guidance, hunyuan_timesteps, sample_euler
from .hunyuan3d_data import watertight_and_sample  # noqa: F401  (training data: hy3dshape/tools/watertight)
from .hunyuan3d_schedulers import (ConsistencyFlowMatchEulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
                                   FlowMatchEulerDiscreteSchedulerOutput)

__all__ = ["MCSurfaceExtractor", "Latent2MeshOutput", "FlowMatchingSampler", "FlowMatchEulerDiscreteScheduler",
           "ConsistencyFlowMatchEulerDiscreteScheduler",
           "watertight_and_sample"]


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
        if isinstance(bounds, float):  # as the original: a float is the half-size of a centred cube
            bounds = [-bounds, -bounds, -bounds, bounds, bounds, bounds]
        elif isinstance(bounds, (bool, int, np.integer)):
            raise ValueError(f"bounds={bounds!r} must be a float or [xmin, ymin, zmin, xmax, ymax, zmax]: the original "
                             "extractor rejects an int (pass float(bounds))")
        try:
            b = np.asarray(bounds, dtype=np.float64)
        except (TypeError, ValueError):
            b = None
        if b is None or b.shape != (6,) or not np.isfinite(b).all():
            raise ValueError(f"bounds must be a float or [xmin, ymin, zmin, xmax, ymax, zmax], got {bounds!r}")
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
            if faces.shape[0] == 0:  # no surface: None, as the original
                outputs.append(None)
                continue
            if not self.return_tensors and isinstance(verts, torch.Tensor):
                verts, faces = verts.cpu().numpy(), faces.cpu().numpy()
            outputs.append(Latent2MeshOutput(mesh_v=verts, mesh_f=faces))
        return outputs


class FlowMatchingSampler:
    """Hunyuan3D-2.1's flow-matching sampling loop (t: 0 noise → 1 data) on the fused guided step.

    sample(model, latents, cond) calls model(x, t, cond, guidance=guidance) with t in [0, 1], as the pipeline does:
    - CFG (guidance_scale >= 0 and the model has no `guidance_embed is True`): x = [latents; latents], cond must
      hold [cond; uncond] (the pipeline's encode_cond builds it), v = v_u + w (v_c − v_u);
    - a model with `guidance_embed = True`: no CFG, one pass on latents with guidance = [w] * B (latents' dtype);
    - guidance_scale < 0: no CFG.
    The update is x ← x + (t_next − t) v in an fp32 state.

    Grid: `sigmas=` (the pipeline's argument; shifted as its scheduler shifts them, 1.0 appended) or `timesteps=`
    (in the scheduler's units 0..num_train_timesteps, used as given, 1.0 appended; the original pipeline accepts
    and ignores this argument) or, by default, the pipeline's linspace(0, 1, N) with fix_final_step:
    fix_final_step=True (default) spends every one of the `num_inference_steps` model calls on a real step
    (grid linspace(0, 1, N + 1)); fix_final_step=False reproduces the original grid linspace(0, 1, N) + [1.0],
    whose last model call has dt = 0.
    callback(step_idx, t, outputs) every `callback_steps` steps, as the pipeline calls it: t the scheduler
    timestep (σ · num_train_timesteps, fp32 tensor), outputs.prev_sample the latents after the step.
    """

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, fix_final_step: bool = True,
                 backend=None):
        if not check_real("shift", shift) > 0:
            raise ValueError(f"shift={shift!r} must be > 0")
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or \
                num_train_timesteps < 1:  # 0 made every model time 0/0 = NaN
            raise ValueError(f"num_train_timesteps={num_train_timesteps!r} must be an integer >= 1")
        self.num_train_timesteps = num_train_timesteps
        self.shift = shift
        self.fix_final_step = fix_final_step
        self.backend = backend

    def timesteps(self, num_inference_steps: int, sigmas=None, timesteps=None) -> list:
        """The grid of t values, model times first, the final 1.0 last."""
        if sigmas is not None and timesteps is not None:
            raise ValueError("pass only one of timesteps or sigmas")
        if sigmas is not None:
            scheduler = FlowMatchEulerDiscreteScheduler(self.num_train_timesteps, self.shift)
            scheduler.set_timesteps(sigmas=sigmas)
            return self._in_unit_interval("sigmas", scheduler.sigmas.tolist())
        if timesteps is not None:
            t = torch.as_tensor(timesteps, dtype=torch.float32).reshape(-1).cpu() / self.num_train_timesteps
            if t.numel() < 1 or not bool(torch.isfinite(t).all()):
                raise ValueError("timesteps must hold at least one finite value")
            return self._in_unit_interval("timesteps", torch.cat([t, torch.ones(1)]).tolist())
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={num_inference_steps!r} must be an integer >= 1")
        return hunyuan_timesteps(num_inference_steps, self.shift, self.fix_final_step)

    def _in_unit_interval(self, name, ts):
        """t runs in [0, 1] (0 noise, 1 data); outside it the guidance interval would silently skip CFG there."""
        if not all(0.0 <= t <= 1.0 for t in ts):
            raise ValueError(f"{name} must give times in [0, 1] after shifting ({name}=... in "
                             f"{'[0, 1]' if name == 'sigmas' else f'[0, {self.num_train_timesteps}]'}), got "
                             f"t from {min(ts):g} to {max(ts):g}")
        return ts

    @torch.no_grad()
    def sample(self, model, latents: torch.Tensor, cond, *, num_inference_steps: int = 50, timesteps=None,
               sigmas=None, guidance_scale: float = 5.0, guidance=None, enable_pbar: bool = True,
               cuda_graph: bool = False, callback=None, callback_steps: int = 1):
        guidance_scale = check_real("guidance_scale", guidance_scale)  # NaN turned CFG off (NaN >= 0 is False)
        ts = self.timesteps(num_inference_steps, sigmas=sigmas, timesteps=timesteps)
        scale = float(self.num_train_timesteps)
        embedded = getattr(model, "guidance_embed", None) is True
        if embedded and guidance is None:  # the pipeline: CFG off, the scale goes in as an embedding
            guidance = torch.tensor([guidance_scale] * latents.shape[0], device=latents.device, dtype=latents.dtype)

        def model_fn(x, t):
            # the pipeline passes (σ·1000 in fp32 → latents dtype) / 1000
            t = (t * scale).to(x.dtype) / scale
            return model(x, t, cond, guidance=guidance)

        step_callback = None
        if callback is not None:
            if not callable(callback):
                raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")
            if isinstance(callback_steps, bool) or not isinstance(callback_steps, int) or callback_steps < 1:
                raise ValueError(f"callback_steps={callback_steps!r} must be an integer >= 1")

            def step_callback(i, t_next, state, x0):
                if i % callback_steps == 0:
                    t = (torch.tensor(ts[i], dtype=torch.float32) * scale).to(latents.device)
                    callback(i, t, FlowMatchEulerDiscreteSchedulerOutput(prev_sample=state.to(latents.dtype)))

        cfg = Guidance(scale=guidance_scale, formula="cfg") if guidance_scale >= 0 and not embedded else None
        return sample_euler(model_fn, latents, ts, guidance=cfg, convention="sit", verbose=enable_pbar,
                            cuda_graph=cuda_graph, callback=step_callback, backend=self.backend,
                            model_name=f"model {type(model).__name__}")
