"""The TRELLIS / TRELLIS.2 Euler samplers on the fused guided step (shared by compat.trellis and compat.trellis2).

Structure kept from TRELLIS so pipelines that subclass or monkey-patch these samplers keep working:
`sample` → `sample_once` per step → `_inference_model` per model evaluation (t·1000 as a float32 [B] tensor).

What changes: the guidance combine, the Euler update and the data prediction run in one kernel, reading the
conditional and negative predictions where the model left them. When `_inference_model` is overridden (on the
instance, as TRELLIS's multi-image pipelines do, or in a subclass), it is called exactly as TRELLIS calls it, with
the guidance keyword arguments, and its result is treated as the final velocity.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .._validation import check_real
from ..flow_algebra import guidance_weights, x0_coefficients
from ..sampling import check_model_output, step_coefficients, trellis_timesteps
from ..sampling import unchecked_guided_step as guided_step


class AttrDict(dict):
    """A dict with attribute access (TRELLIS returns EasyDict objects)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def _feats(x):
    """Dense tensors as they are; TRELLIS sparse tensors by their feature matrix (no hard dependency)."""
    return x.feats if hasattr(x, "feats") and hasattr(x, "replace") else x


def _coef_dtype(x: torch.Tensor) -> torch.dtype:
    """Step coefficients in fp32 (what the kernels read), fp64 for an fp64 state (its torch path stays exact)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def repeat_condition(cond, batch: int):
    """TRELLIS's rule: a tensor condition of batch 1 serves a larger noise batch by repetition; anything else
    (None, a condition of the full batch, non-tensor conditions) passes through unchanged."""
    if isinstance(cond, torch.Tensor) and cond.dim() > 0 and cond.shape[0] == 1 and batch > 1:
        return cond.repeat(batch, *([1] * (cond.dim() - 1)))
    return cond


def _layout_offsets(x, device) -> torch.Tensor:
    """[B + 1] row offsets of a sparse tensor's samples from its host-side layout (slices): an upload, no sync.
    The layout is checked on the host: the kernels read each sample's rows from these offsets, so slices past the
    feature rows, gaps or overlaps would read out of bounds or mix samples."""
    layout, rows = x.layout, _feats(x).shape[0]
    bounds = [0]
    for b, s in enumerate(layout):
        start, stop, step = s.start or 0, s.stop, s.step
        if step not in (None, 1) or start != bounds[-1] or stop is None or stop < start:
            raise ValueError(f"the sparse tensor's layout[{b}]={s!r} must be the slice {bounds[-1]}:<end> (its "
                             f"samples' rows in order, back to back)")
        bounds.append(stop)
    if bounds[-1] != rows:
        raise ValueError(f"the sparse tensor's layout covers rows 0:{bounds[-1]} but its feats have {rows} rows")
    return torch.tensor(bounds, dtype=torch.int64).to(device, non_blocking=True)


def _check_rescale_samples(x, x_t, rescale: float):
    """TRELLIS.2's rescale divides by a per-sample std: a sample of one element gives 0/0 (NaN everywhere)."""
    per_row = x[0].numel() if x.shape[0] else 2
    sizes = [per_row] if x is x_t else [(s.stop - (s.start or 0)) * per_row for s in x_t.layout]
    if rescale > 0 and any(n == 1 for n in sizes):
        raise ValueError("guidance_rescale > 0 needs at least 2 elements per sample (a standard deviation); the "
                         f"samples have {sorted(set(sizes))} elements")


class _Plan:
    """How one step evaluates the model: which conditions, the combine weights, rescale φ. `second` is the
    condition of the second (negative) pass, or NO_PASS: None is a condition like any other (a model may read
    cond=None as unconditional, and TRELLIS then evaluates it)."""
    __slots__ = ("first", "second", "a_c", "a_u", "rescale")
    NO_PASS = object()

    def __init__(self, first, second, a_c, a_u, rescale):
        self.first, self.second, self.a_c, self.a_u, self.rescale = first, second, a_c, a_u, rescale

    @classmethod
    def single(cls, cond):
        """One pass with `cond`, its prediction used as is."""
        return cls(cond, cls.NO_PASS, 1.0, 0.0, 0.0)

    @property
    def guided(self) -> bool:
        return self.second is not _Plan.NO_PASS


class TrellisEulerBase:
    """TRELLIS's FlowEulerSampler(sigma_min). Subclasses set how guidance keyword arguments are read."""

    # names of the keyword arguments that carry guidance (consumed here, never passed to the model)
    _guidance_keys: tuple = ()

    def __init__(self, sigma_min: float, backend: Optional[str] = None):
        self.sigma_min = check_real("sigma_min", sigma_min, 0.0, 1.0)
        if self.sigma_min == 1.0:  # x_t would not depend on the data
            raise ValueError("sigma_min=1.0 must be < 1")
        self.backend = backend

    # --- conversions, as TRELLIS defines them -------------------------------------------------------------------
    def _eps_to_xstart(self, x_t, t, eps):
        return (x_t - (self.sigma_min + (1 - self.sigma_min) * t) * eps) / (1 - t)

    def _xstart_to_eps(self, x_t, t, x_0):
        return (x_t - (1 - t) * x_0) / (self.sigma_min + (1 - self.sigma_min) * t)

    def _v_to_xstart_eps(self, x_t, t, v):
        eps = (1 - t) * v + x_t
        x_0 = (1 - self.sigma_min) * x_t - (self.sigma_min + (1 - self.sigma_min) * t) * v
        return x_0, eps

    def _pred_to_xstart(self, x_t, t, pred):
        x0_a, x0_b = x0_coefficients("trellis", t, self.sigma_min)
        return x0_a * x_t + x0_b * pred

    def _xstart_to_pred(self, x_t, t, x_0):
        return ((1 - self.sigma_min) * x_t - x_0) / (self.sigma_min + (1 - self.sigma_min) * t)

    # --- model evaluation -------------------------------------------------------------------------------------------
    def _evaluate(self, model, x_t, t, cond=None, **kwargs):
        """One model evaluation, TRELLIS's way: t·1000 as a float32 [B] tensor, and a batch-1 condition repeated to
        the batch of x_t (TRELLIS's pipelines draw several samples from one image this way). Every model call of
        these samplers, guided or not, patched `_inference_model` or not, passes through here."""
        batch = x_t.shape[0]  # a TRELLIS SparseTensor's shape[0] is its batch size
        t = torch.tensor([1000 * t] * batch, device=x_t.device, dtype=torch.float32)
        return model(x_t, t, repeat_condition(cond, batch), **kwargs)

    def _plan(self, t: float, cond, guidance: dict) -> _Plan:
        """Unguided by default; the CFG samplers override this."""
        return _Plan.single(cond)

    def _inference_model(self, model, x_t, t, cond=None, **kwargs):
        """One evaluation without guidance keywords; with them, the guided velocity as TRELLIS's mixins return it."""
        guidance = {k: kwargs.pop(k) for k in self._guidance_keys if k in kwargs}
        if not guidance:
            return self._evaluate(model, x_t, t, cond, **kwargs)
        plan = self._plan(t, cond, guidance)
        c = self._evaluate(model, x_t, t, plan.first, **kwargs)
        if not plan.guided:
            return c
        u = self._evaluate(model, x_t, t, plan.second, **kwargs)
        pred = plan.a_c * c + plan.a_u * u
        if plan.rescale > 0:  # TRELLIS.2's guidance rescale, written as it does it
            x_0_pos = self._pred_to_xstart(x_t, t, c)
            x_0_cfg = self._pred_to_xstart(x_t, t, pred)
            dims = list(range(1, x_0_pos.ndim))
            ratio = x_0_pos.std(dim=dims, keepdim=True) / x_0_cfg.std(dim=dims, keepdim=True)
            x_0 = plan.rescale * (x_0_cfg * ratio) + (1 - plan.rescale) * x_0_cfg
            pred = self._xstart_to_pred(x_t, t, x_0)
        return pred

    def _inference_overridden(self) -> bool:
        return "_inference_model" in vars(self) or \
            type(self)._inference_model is not TrellisEulerBase._inference_model

    def _get_model_prediction(self, model, x_t, t, cond=None, **kwargs):
        pred_v = self._inference_model(model, x_t, t, cond, **kwargs)
        pred_x_0, pred_eps = self._v_to_xstart_eps(x_t=x_t, t=t, v=pred_v)
        return pred_x_0, pred_eps, pred_v

    # --- the fused step -------------------------------------------------------------------------------------------
    def _coef_row(self, t, t_prev, plan):
        x0_a, x0_b = x0_coefficients("trellis", t, self.sigma_min)
        return step_coefficients(-(t - t_prev), plan.a_c, plan.a_u, x0_a, x0_b)

    def _step(self, model, x_t, t, t_prev, cond, kwargs, coef=None):
        guidance = {k: kwargs[k] for k in self._guidance_keys if k in kwargs}
        if self._inference_overridden():
            plan = _Plan.single(cond)
            c = self._inference_model(model, x_t, t, cond, **kwargs)
            u = None
        else:
            plan = self._plan(t, cond, guidance) if guidance else _Plan.single(cond)
            model_kw = {k: v for k, v in kwargs.items() if k not in self._guidance_keys}
            c = self._inference_model(model, x_t, t, plan.first, **model_kw)
            u = self._inference_model(model, x_t, t, plan.second, **model_kw) if plan.guided else None
        x = _feats(x_t)
        name = "_inference_model" if self._inference_overridden() else f"the model ({type(model).__name__})"
        cf = check_model_output(name, _feats(c), x)
        uf = check_model_output(name, _feats(u), x) if u is not None else None
        device = x.device
        if coef is None:
            coef = torch.tensor(self._coef_row(t, t_prev, plan), dtype=_coef_dtype(x)).to(device, non_blocking=True)
        dtype = torch.promote_types(x.dtype, cf.dtype)
        sparse = x is not x_t
        rescale = plan.rescale if uf is not None else 0.0
        offsets = None
        if sparse and rescale > 0:  # per-sample std over each sample's rows, as TRELLIS.2's sparse tensors define it
            offsets = _layout_offsets(x_t, device)
        if rescale > 0:
            _check_rescale_samples(x, x_t, rescale)
        elif sparse:  # element-wise only: one long row
            x, cf = x.reshape(1, -1), cf.reshape(1, -1)
            uf = uf.reshape(1, -1) if uf is not None else None
        x_prev = torch.empty(x.shape, dtype=dtype, device=device)
        x_0 = torch.empty(x.shape, dtype=dtype, device=device)
        guided_step(x, cf, uf, coef, out=x_prev, x0=x_0, offsets=offsets, rescale=rescale, backend=self.backend)
        if sparse:
            return x_t.replace(x_prev.reshape(_feats(x_t).shape)), x_t.replace(x_0.reshape(_feats(x_t).shape))
        return x_prev, x_0

    @torch.no_grad()
    def sample_once(self, model, x_t, t: float, t_prev: float, cond: Optional[Any] = None, **kwargs):
        """x_{t_prev} from x_t: AttrDict(pred_x_prev, pred_x_0)."""
        pred_x_prev, pred_x_0 = self._step(model, x_t, t, t_prev, cond, kwargs)
        return AttrDict({"pred_x_prev": pred_x_prev, "pred_x_0": pred_x_0})

    @torch.no_grad()
    def sample(self, model, noise, cond: Optional[Any] = None, steps: int = 50, rescale_t: float = 1.0,
               verbose: bool = True, tqdm_desc: str = "Sampling", **kwargs):
        """AttrDict(samples, pred_x_t (list), pred_x_0 (list)), TRELLIS's grid and update."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r} must be an integer >= 1")
        if not (check_real("rescale_t", rescale_t) > 0):
            raise ValueError(f"rescale_t={rescale_t!r} must be > 0")
        self._check_guidance(kwargs)
        t_seq = trellis_timesteps(steps, rescale_t)
        pairs = [(t_seq[i], t_seq[i + 1]) for i in range(steps)]
        table = None
        if not self._inference_overridden():  # the whole run's step coefficients in one upload
            guidance = {k: kwargs[k] for k in self._guidance_keys if k in kwargs}
            rows = [self._coef_row(t, tp, self._plan(t, cond, guidance) if guidance else _Plan.single(cond))
                    for t, tp in pairs]
            table = torch.tensor(rows, dtype=_coef_dtype(_feats(noise))).to(_feats(noise).device, non_blocking=True)
        sample = noise
        ret = AttrDict({"samples": None, "pred_x_t": [], "pred_x_0": []})
        steps_iter = pairs
        if verbose:  # tqdm is imported only for a progress bar
            from tqdm.auto import tqdm
            steps_iter = tqdm(pairs, desc=tqdm_desc)
        for i, (t, t_prev) in enumerate(steps_iter):
            sample, pred_x_0 = self._step(model, sample, t, t_prev, cond, kwargs,
                                          coef=table[i] if table is not None else None)
            ret.pred_x_t.append(sample)
            ret.pred_x_0.append(pred_x_0)
        ret.samples = sample
        return ret

    def _check_guidance(self, kwargs):
        """Named errors for guidance arguments (subclasses add theirs)."""


def check_interval(name: str, interval):
    try:
        lo, hi = interval
        ok = 0.0 <= float(lo) <= float(hi) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={interval!r} must be a pair (lo, hi) with 0 <= lo <= hi <= 1")


def trellis1_plan(t, cond, guidance, interval_key):
    """TRELLIS: v = (1 + w) c − w u, inside cfg_interval when the sampler has one."""
    if interval_key and interval_key in guidance:
        lo, hi = guidance[interval_key]
        if not lo <= t <= hi:
            return _Plan.single(cond)
    a_c, a_u = guidance_weights("trellis", check_real("cfg_strength", guidance["cfg_strength"]))
    return _Plan(cond, guidance["neg_cond"], a_c, a_u, 0.0)


def trellis2_plan(t, cond, guidance, interval_key):
    """TRELLIS.2: v = g c + (1 − g) u with optional rescale; g = 1 is cond alone, g = 0 is neg_cond alone."""
    g = check_real("guidance_strength", guidance.get("guidance_strength", 1.0))
    if interval_key and interval_key in guidance:
        lo, hi = guidance[interval_key]
        if not lo <= t <= hi:
            g = 1.0
    if g == 1:
        return _Plan.single(cond)
    if g == 0:
        return _Plan.single(guidance["neg_cond"])
    a_c, a_u = guidance_weights("trellis2", g)
    return _Plan(cond, guidance["neg_cond"], a_c, a_u, check_real("guidance_rescale",
                                                                  guidance.get("guidance_rescale", 0.0), 0.0, 1.0))
