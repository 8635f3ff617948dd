"""Guided Euler / Heun sampling on the fused step kernel: `sample_euler`, `Guidance`, the time grids of the
systems flowkernels replaces, and the step-level API the drop-in samplers build on (`step_coefficients`,
`guided_step`, `guidance_rescale_factor`).

Per step, the eager loops of those systems run 5-10 ops over the whole state (cat for [x; x], chunk, the guidance
combine, the update, casts, the data prediction). Here one kernel does the combine, the update in an fp32 state, the
cast and duplication into the next model input, and optionally the data prediction. The per-step scalars and the
model's time values are uploaded once per run as small device tables, so no step copies anything from the host.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ._dispatch import resolve_backend
from ._validation import (FLOAT_DTYPES, check_choice, check_float_tensor, check_real, check_row_offsets,
                          check_same_shape)
from .flow_algebra import GUIDANCE_FORMULAS, canonical_convention, guidance_weights, x0_coefficients
from .ops import guided_step as _step_op

__all__ = ["sample_euler", "Guidance", "trellis_timesteps", "hunyuan_timesteps", "step_coefficients", "guided_step",
           "guidance_rescale_factor", "guidance_weights", "x0_coefficients", "check_model_output"]


def step_coefficients(dt: float, a_c: float = 1.0, a_u: float = 0.0, x0_a: float = 1.0, x0_b: float = 0.0,
                      dt_h: float = 0.0) -> list[float]:
    """One row of the per-step coefficient table that `guided_step` reads (upload it, or many rows, as a float32
    tensor): x_next = x + dt·v + dt_h·h with v = a_c·c + a_u·u, and the data prediction x0 = x0_a·x + x0_b·v
    (`flowkernels.flow_algebra.x0_coefficients` gives x0_a, x0_b for each convention)."""
    return _step_op.coefficient_row(dt, a_c, a_u, x0_a, x0_b, dt_h)


def guided_step(x: torch.Tensor, c: torch.Tensor, u: Optional[torch.Tensor], coef: torch.Tensor, *,
                out: torch.Tensor, h: Optional[torch.Tensor] = None, model_in: Optional[torch.Tensor] = None,
                x0: Optional[torch.Tensor] = None, v_out: Optional[torch.Tensor] = None,
                offsets: Optional[torch.Tensor] = None, rescale: float = 0.0, backend: Optional[str] = None) -> None:
    """One fused guided Euler (or Heun) update: out = x + dt·v (+ dt_h·h), v = a_c·c + a_u·u, scalars read from
    `coef` (a `step_coefficients` row on x's device).

    rescale φ > 0 (needs u): TRELLIS.2's guidance rescale, v scaled so that x0 becomes k·x0 with
    k = φ·std(x0_c)/std(x0_guided) + 1 − φ per sample (`guidance_rescale_factor`), formed on the device in the same
    call (a statistics pass, then the step; no host sync). Where x0 does not depend on v (x0_b = 0, the data end)
    the original's formula is 0/0; the step takes its limit there (flowkernels/flow_kernels.md). Where x0_guided
    has no spread (std 0) the ratio is undefined (the original gives NaN) and the rescale is skipped (k = 1).

    offsets [B + 1] (int64, on x's device): x, c, u and the outputs are [N, ...] rows of B ragged samples (TRELLIS
    sparse latents), sample b being rows offsets[b]:offsets[b + 1]; the std is then over each sample's rows.

    Side outputs, each written in the same pass when given: model_in (the next model input, [B] or [2B] rows, in
    its own dtype), x0 (the data prediction), v_out (v in fp32, Heun's predictor). c and u may be the two halves of
    one [cond; uncond] output (read in place through their batch strides). out may be x itself; out, h, model_in,
    x0 and v_out must be contiguous. Every tensor's shape, dtype and device is checked on the host (a named
    ValueError: the kernels would read or write past a smaller buffer); CPU offsets are checked by value too
    (CUDA offsets are trusted: checking them would cost a sync per step)."""
    if not _usual_step(x, c, u, coef, out, model_in, (h, x0, v_out), offsets, rescale):
        _check_step(x, c, u, coef, out, h, model_in, x0, v_out, offsets, rescale)
    unchecked_guided_step(x, c, u, coef, out=out, h=h, model_in=model_in, x0=x0, v_out=v_out, offsets=offsets,
                          rescale=rescale, backend=backend)


def _usual_step(x, c, u, coef, out, model_in, outputs, offsets, rescale) -> bool:
    """Whether a call is the usual sampling step, checked in a few comparisons (a step of a small latent takes tens
    of microseconds, and the named checks cost a third of that): no offsets or rescale, c, u and the outputs of x's
    shape, floating dtype and device, contiguous outputs, a float32 coefficient row. Anything else goes through
    `_check_step`, which names what is wrong."""
    if offsets is not None or rescale != 0 or type(x) is not torch.Tensor or x.dtype not in _STEP_DTYPES \
            or x.dim() == 0:
        return False
    shape, device = x.shape, x.device
    for z in (c, u):
        if z is not None and (type(z) is not torch.Tensor or z.shape != shape or z.dtype not in _STEP_DTYPES
                              or z.device != device):
            return False
    for z in (out, model_in) + outputs:
        if z is not None and (type(z) is not torch.Tensor or z.dtype not in _STEP_DTYPES or z.device != device
                              or not z.is_contiguous()):
            return False
        if z is not None and z is not model_in and z.shape != shape:
            return False
    if model_in is not None and (model_in.shape[1:] != shape[1:] or model_in.shape[0] not in (shape[0],
                                                                                           2 * shape[0])):
        return False
    return (type(coef) is torch.Tensor and coef.dtype is torch.float32 and coef.dim() == 1
            and coef.shape[0] >= _step_op.N_COEF and coef.device == device)


def _check_step(x, c, u, coef, out, h, model_in, x0, v_out, offsets, rescale):
    """guided_step's named checks."""
    _check_step_tensors(x, c, u, coef, offsets, rescale)
    for name, z in (("out", out), ("h", h), ("x0", x0), ("v_out", v_out)):
        if z is not None:
            _check_buffer(name, z, x, (tuple(x.shape),), "x's shape")
    if model_in is not None:
        rows = x.shape[0]
        _check_buffer("model_in", model_in, x, tuple((k * rows,) + tuple(x.shape[1:]) for k in (1, 2)),
                      "[B] or [2B] rows of x's shape")


def unchecked_guided_step(x, c, u, coef, *, out, h=None, model_in=None, x0=None, v_out=None, offsets=None,
                          rescale=0.0, backend=None) -> None:
    """`guided_step` without its host checks: for the drop-ins, which check their own arguments once."""
    _step_op.guided_step(x, c, u, coef, out=out, h=h, model_in=model_in, x0=x0, v_out=v_out, offsets=offsets,
                         rescale=rescale, backend=resolve_backend(backend, x.device))


_STEP_DTYPES = FLOAT_DTYPES + (torch.float64,)


def _check_buffer(name, z, x, shapes, what):
    """A contiguous floating tensor of one of `shapes` on x's device (the kernels write it as one buffer)."""
    check_float_tensor(name, z, _STEP_DTYPES, min_ndim=0)
    if tuple(z.shape) not in shapes:
        raise ValueError(f"{name} has shape {tuple(z.shape)}; expected {what} {tuple(x.shape)}")
    if z.device != x.device:
        raise ValueError(f"{name} is on {z.device} but x is on {x.device}")
    if not z.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernels write it as one buffer)")


def _check_step_tensors(x, c, u, coef, offsets, rescale):
    """Host-side checks of the step-level API's inputs (metadata; CPU offsets also by value)."""
    check_float_tensor("x", x, _STEP_DTYPES)
    for name, z in (("c", c), ("u", u)):
        if z is not None:
            check_float_tensor(name, z, _STEP_DTYPES)
            check_same_shape(name, z, "x", x)
    check_float_tensor("coef", coef, (torch.float32, torch.float64))
    if coef.dim() != 1 or coef.shape[0] < _step_op.N_COEF:
        raise ValueError(f"coef must be one step_coefficients row ([{_step_op.N_COEF}]), got shape "
                         f"{tuple(coef.shape)}")
    if coef.device != x.device:
        raise ValueError(f"coef is on {coef.device} but x is on {x.device}")
    if isinstance(rescale, bool) or not isinstance(rescale, numbers.Real) or not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale={rescale!r} must be a number in [0, 1]")
    if rescale > 0 and u is None:
        raise ValueError("rescale > 0 needs the unconditional output u")
    per_row = x[0].numel() if x.shape[0] else 2
    if offsets is not None:
        _check_offsets(offsets, x, rescale > 0 and per_row < 2)
    elif rescale > 0 and per_row < 2:
        raise ValueError(f"rescale > 0 needs at least 2 elements per sample (a standard deviation); x has shape "
                         f"{tuple(x.shape)}")


def _check_offsets(offsets, x, single_values_fail=False):
    """int64 offsets over x's rows (the step kernels read them as int64, so int32 is refused rather than copied)."""
    offsets = check_row_offsets(offsets, x.shape[0], x.device, "x", dtypes=(torch.int64,))
    if single_values_fail and offsets.device.type == "cpu" and bool(((offsets[1:] - offsets[:-1]) == 1).any()):
        raise ValueError("rescale > 0 needs at least 2 elements per sample (a standard deviation); a sample of "
                         f"offsets has one row of {x[0].numel()} element")


def guidance_rescale_factor(x: torch.Tensor, c: torch.Tensor, u: torch.Tensor, coef: torch.Tensor, phi: float, *,
                            offsets: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """TRELLIS.2's guidance rescale factor per sample, k [B] float32, from float64 sums:
    k = phi·std(x0_c)/std(x0_guided) + 1 − phi, with the x0 of the conditional and of the guided velocity; ragged
    samples (offsets) take the std over their rows. `guided_step(..., rescale=phi)` applies it without this call
    (on CUDA it is formed inside the step kernel)."""
    _check_step_tensors(x, c, u, coef, offsets, phi)
    resolved = resolve_backend(backend, x.device)
    return _step_op.rescale_factor(x, c, u, coef, phi, offsets, "native" if resolved == "native" else "torch")


def _check_grid_args(steps, warp_name, warp):
    """A grid of `steps` >= 1 steps and a finite warp > 0 (0 or a negative one gave NaN or non-monotone grids)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    if not check_real(warp_name, warp) > 0:
        raise ValueError(f"{warp_name}={warp!r} must be > 0")


def trellis_timesteps(steps: int, rescale_t: float = 1.0) -> list[float]:
    """TRELLIS's grid: linspace(1, 0, steps + 1) warped by r t / (1 + (r − 1) t)."""
    _check_grid_args(steps, "rescale_t", rescale_t)
    t = np.linspace(1, 0, steps + 1)
    return (rescale_t * t / (1 + (rescale_t - 1) * t)).tolist()


def hunyuan_timesteps(steps: int, shift: float = 1.0, fix_final_step: bool = True) -> list[float]:
    """Hunyuan3D-2.1's grid (t: 0 noise → 1 data), shifted by s t / (1 + (s − 1) t), in float32 as its scheduler.

    The original evaluates the model at linspace(0, 1, steps) and appends 1.0, so its last step has dt = 0: a
    wasted model call (`fix_final_step=False` reproduces that grid). The fix uses linspace(0, 1, steps + 1): every
    one of the `steps` model calls moves the state."""
    _check_grid_args(steps, "shift", shift)
    t = np.linspace(0, 1, steps + 1 if fix_final_step else steps)
    t = shift * t / (1 + (shift - 1) * t)
    t = torch.from_numpy(t).to(torch.float32)
    if not fix_final_step:
        t = torch.cat([t, torch.ones(1)])
    return t.tolist()


@dataclass
class Guidance:
    """Classifier-free guidance for `sample_euler`.

    formula: "cfg" (u + w(c − u)), "trellis" ((1 + w) c − w u) or "trellis2" (g c + (1 − g) u).
    interval: guidance applies where lo <= t <= hi (TRELLIS's cfg_interval); elsewhere only the conditional pass runs.
    rescale: TRELLIS.2's guidance rescale φ in [0, 1] (needs per-sample std: one extra pass over c and u).
    uncond_fn: the unconditional model uncond_fn(x, t). When None, model_fn is called once on [x; x] and returns
    [cond; uncond] stacked on the batch dimension (Hunyuan3D's layout); the halves are read in place.
    """
    scale: float
    formula: str = "cfg"
    interval: tuple = (0.0, 1.0)
    rescale: float = 0.0
    uncond_fn: Optional[Callable] = None

    def validate(self):
        check_choice("guidance.formula", self.formula, GUIDANCE_FORMULAS)
        check_real("guidance.scale", self.scale)
        try:
            lo, hi = (check_real("guidance.interval", v, 0.0, 1.0) for v in self.interval)
        except (TypeError, ValueError):
            lo, hi = 1.0, 0.0
        if not lo <= hi:
            raise ValueError(f"guidance.interval={self.interval!r} must be a pair (lo, hi) with 0 <= lo <= hi <= 1")
        check_real("guidance.rescale", self.rescale, 0.0, 1.0)
        if self.uncond_fn is not None and not callable(self.uncond_fn):
            raise ValueError(f"guidance.uncond_fn must be callable or None, got {type(self.uncond_fn).__name__}")

    def active(self, t: float) -> bool:
        if self.formula == "trellis2" and self.scale == 1.0:
            return False  # g = 1 is the conditional prediction alone (TRELLIS.2 skips the negative pass)
        return self.interval[0] <= t <= self.interval[1]


def check_model_output(name: str, out, x_in) -> torch.Tensor:
    """A model's output as the fused step reads it: a floating tensor of exactly the input's shape, on its device.
    Host-side metadata only (no sync); a larger output would be read out of bounds by the kernels, a broadcastable
    one silently broadcast, an integer one used as is."""
    expected = tuple(x_in.shape)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{name} returned a {type(out).__name__}; expected a torch.Tensor of shape {expected}")
    if tuple(out.shape) != expected:
        rows = f" ({out.shape[0]} rows for an input of {expected[0]} rows)" if out.dim() and \
            out.shape[0] != expected[0] else ""
        raise ValueError(f"{name} returned shape {tuple(out.shape)} for an input of shape {expected}{rows}")
    if not out.is_floating_point():
        raise ValueError(f"{name} returned dtype {out.dtype}; expected a floating dtype")
    if out.device != x_in.device:
        raise ValueError(f"{name} returned a tensor on {out.device} for an input on {x_in.device}")
    return out


class _Evaluation:
    """One model evaluation of a run: its time, whether it is guided, and its row of the coefficient table."""
    __slots__ = ("t", "guided", "coef")

    def __init__(self, t, guided, coef):
        self.t, self.guided, self.coef = t, guided, coef


def _plan(timesteps, guidance, method, convention, sigma_min):
    """The evaluations of a run, in order, with their step coefficients."""
    evals = []
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        dt = t_next - t
        stages = [(t, dt, 0.0)] if method == "euler" else [(t, dt, 0.0), (t_next, dt / 2, dt / 2)]
        for s, (te, d, dh) in enumerate(stages):
            guided = guidance is not None and guidance.active(te)
            a_c, a_u = guidance_weights(guidance.formula, guidance.scale) if guided else (1.0, 0.0)
            x0_a, x0_b = x0_coefficients(convention, te, sigma_min)
            # Heun's corrector adds dt/2 · v_predictor, stepping from the start of the step, not the predictor
            evals.append(_Evaluation(te, guided, _step_op.coefficient_row(d, a_c, a_u, x0_a, x0_b, dh)))
    return evals


def _check_timesteps(timesteps) -> list[float]:
    given = timesteps
    if isinstance(timesteps, torch.Tensor):
        timesteps = timesteps.detach().cpu().double().reshape(-1).tolist() if timesteps.dim() <= 1 else None
    if isinstance(timesteps, np.ndarray) and timesteps.ndim > 1:
        timesteps = None
    try:  # a string is iterable too: "10" would be the grid [1.0, 0.0]
        ts = None if isinstance(timesteps, (str, bytes)) else [float(t) for t in timesteps]
    except (TypeError, ValueError):
        ts = None
    if ts is None:
        shape = f" of shape {tuple(given.shape)}" if hasattr(given, "shape") else ""
        raise ValueError(f"timesteps must be a 1-D sequence of numbers (e.g. trellis_timesteps(steps)), got "
                         f"{type(given).__name__}{shape}")
    if len(ts) < 2:
        raise ValueError(f"timesteps must hold at least 2 values (steps >= 1), got {len(ts)}")
    if not all(math.isfinite(t) for t in ts):
        raise ValueError("timesteps must be finite")
    return ts


def sample_euler(
    model_fn: Callable, noise: torch.Tensor, timesteps: Sequence[float], *, guidance: Optional[Guidance] = None,
    method: str = "euler", convention: str = "trellis", sigma_min: float = 0.0, time_scale: float = 1.0,
    model_dtype: Optional[torch.dtype] = None, verbose: bool = False, cuda_graph: bool = False,
    callback: Optional[Callable] = None, backend: Optional[str] = None, model_name: str = "model_fn",
) -> torch.Tensor:
    """Integrate dx/dt = v from timesteps[0] to timesteps[-1], starting at `noise`.

    model_fn(x, t) -> v with x in `model_dtype` (default noise.dtype) and t a float32 tensor of per-row times
    multiplied by `time_scale` (1000 for TRELLIS / diffusers models). Step i moves from timesteps[i] to
    timesteps[i + 1] (either direction). `convention` ("sit"/"hunyuan3d", "trellis", "sd3"/"diffusers") and
    `sigma_min` define the data prediction used by guidance rescale and passed to `callback(i, t, x, x0)` after
    each step. method "heun" evaluates twice per step. `cuda_graph=True` (CUDA only) captures each kind of step
    after one eager warm-up and replays it. Returns the final state in noise.dtype. The state is fp32 (fp64 for
    fp64 noise). Every model output (and guidance.uncond_fn's) is checked on the host before the step reads it: a
    tensor of the input's shape, a floating dtype, on noise's device; otherwise a ValueError names `model_name`.
    Not differentiable: the result carries no autograd history (noise that requires grad is a ValueError while
    grad mode is on).
    """
    check_float_tensor("noise", noise, FLOAT_DTYPES + (torch.float64,))
    if noise.requires_grad and torch.is_grad_enabled():
        # the fused steps write the state in place outside autograd: a gradient through them would be wrong
        raise ValueError("noise requires grad, but sample_euler is not differentiable: pass noise.detach() or "
                         "call it under torch.no_grad()")
    time_scale, sigma_min = check_real("time_scale", time_scale), check_real("sigma_min", sigma_min, 0.0, 1.0)
    if model_dtype is not None and model_dtype not in FLOAT_DTYPES + (torch.float64,):
        raise ValueError(f"model_dtype={model_dtype!r} must be a floating dtype "
                         f"({', '.join(str(d) for d in FLOAT_DTYPES + (torch.float64,))})")
    if not callable(model_fn):
        raise ValueError(f"{model_name} must be callable, got {type(model_fn).__name__}")
    if callback is not None and not callable(callback):  # else a TypeError after the first step's model call
        raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")
    ts = _check_timesteps(timesteps)
    method = check_choice("method", method, ("euler", "heun"))
    convention = canonical_convention(convention)
    if guidance is not None:
        if not isinstance(guidance, Guidance):
            raise ValueError(f"guidance must be a flowkernels.Guidance, got {type(guidance).__name__}")
        guidance.validate()
        if guidance.rescale > 0 and math.prod(noise.shape[1:]) < 2:
            raise ValueError("guidance.rescale needs at least 2 elements per sample (a standard deviation)")
    if cuda_graph and noise.device.type != "cuda":
        raise ValueError("cuda_graph=True needs CUDA tensors (noise is on %s)" % noise.device)
    backend = resolve_backend(backend, noise.device)
    runner = _EulerRun(model_fn, noise, ts, guidance, method, convention, sigma_min, time_scale,
                       model_dtype or noise.dtype, backend, model_name)
    return runner.run(verbose=verbose, cuda_graph=cuda_graph, callback=callback)


class _EulerRun:
    """Buffers and tables of one sampling run; `_evaluate` is the per-evaluation work a CUDA graph captures."""

    def __init__(self, model_fn, noise, ts, guidance, method, convention, sigma_min, time_scale, model_dtype,
                 backend, model_name="model_fn"):
        self.model_fn, self.guidance, self.method, self.backend = model_fn, guidance, method, backend
        self.model_name = model_name
        self.ts, self.out_dtype = ts, noise.dtype
        B, dev = noise.shape[0], noise.device
        self.B = B
        self.evals = _plan(ts, guidance, method, convention, sigma_min)
        batched = guidance is not None and guidance.uncond_fn is None
        self.rows = [2 if (batched and e.guided) else 1 for e in self.evals]
        # the two small tables of the run, uploaded once
        # fp64 coefficients for an fp64 state (its torch path stays exact); the kernels read fp32 ones
        coef_dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
        self.coef_table = torch.tensor([e.coef for e in self.evals], dtype=coef_dtype).to(dev, non_blocking=True)
        self.t_table = torch.tensor([e.t * time_scale for e in self.evals], dtype=torch.float32).to(
            dev, non_blocking=True)[:, None].expand(-1, 2 * B).contiguous()
        state_dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
        self.state = noise.detach().to(state_dtype, copy=True).contiguous()
        self.model_in = torch.empty((2 * B,) + tuple(noise.shape[1:]), dtype=model_dtype, device=dev)
        self.model_in[:B].copy_(noise)
        if self.rows[0] == 2:
            self.model_in[B:].copy_(noise)
        self.x_pred = torch.empty_like(self.state) if method == "heun" else None
        self.v1 = torch.empty_like(self.state) if method == "heun" else None
        self.x0 = None
        # static per-evaluation inputs for graph replay
        self.coef_now = self.coef_table[0].clone()
        self.t_now = self.t_table[0].clone()

    def _model_outputs(self, rows, guided, t):
        B = self.B
        x_in = self.model_in[: rows * B]
        out = check_model_output(self.model_name, self.model_fn(x_in, t[: rows * B]), x_in)
        if not guided:
            return out, None
        if rows == 2:
            return out[:B], out[B:]
        return out, check_model_output("guidance.uncond_fn", self.guidance.uncond_fn(x_in, t[:B]), x_in)

    def _evaluate(self, i, coef, t):
        """The work of evaluation i, reading its scalars from `coef` and `t` (device tensors)."""
        e = self.evals[i]
        c, u = self._model_outputs(self.rows[i], e.guided, t)
        phi = self.guidance.rescale if e.guided else 0.0  # rescale: formed on the device inside guided_step
        next_rows = self.rows[i + 1] if i + 1 < len(self.evals) else 0
        model_in = self.model_in[: next_rows * self.B] if next_rows else None
        heun_stage = (i % 2) if self.method == "heun" else 0
        if heun_stage == 0 and self.method == "heun":  # predictor: x_pred = x + dt v1, keep v1
            _step_op.guided_step(self.state, c, u, coef, out=self.x_pred, rescale=phi, model_in=model_in, v_out=self.v1,
                        backend=self.backend)
        elif heun_stage == 1:                           # corrector: x += dt/2 (v1 + v2)
            _step_op.guided_step(self.state, c, u, coef, out=self.state, rescale=phi, h=self.v1, model_in=model_in,
                        backend=self.backend)
        else:
            _step_op.guided_step(self.state, c, u, coef, out=self.state, rescale=phi, model_in=model_in, x0=self.x0,
                        backend=self.backend)

    def run(self, *, verbose, cuda_graph, callback):
        graphs, warmed = {}, set()
        per_step = 1 if self.method == "euler" else 2
        steps = len(self.ts) - 1
        if callback is not None and self.method == "euler":  # Heun's x0 would mix two times: none is given
            self.x0 = torch.empty_like(self.state)
        step_range = range(steps)
        if verbose:  # tqdm is imported only for a progress bar
            from tqdm.auto import tqdm
            step_range = tqdm(step_range, desc="Sampling")
        for step in step_range:
            for i in range(step * per_step, (step + 1) * per_step):
                if not cuda_graph:
                    self._evaluate(i, self.coef_table[i], self.t_table[i])
                    continue
                kind = (self.rows[i], self.evals[i].guided, i % per_step, i + 1 < len(self.evals) and self.rows[i + 1])
                self.coef_now.copy_(self.coef_table[i])
                self.t_now.copy_(self.t_table[i])
                if kind in graphs:
                    graphs[kind].replay()
                elif kind in warmed:
                    graphs[kind] = self._capture(i)
                    graphs[kind].replay()
                else:
                    self._evaluate(i, self.coef_now, self.t_now)
                    warmed.add(kind)
            if callback is not None:
                callback(step, self.ts[step + 1], self.state, self.x0)
        return self.state.to(self.out_dtype)

    def _capture(self, i):
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._evaluate(i, self.coef_now, self.t_now)
        return graph
