"""The launch configurations the compile check compiles, each built through the op's own plan function.

Tensors are empty CPU tensors (never touched): the binder reads only their dtypes and alignment, the plan
functions only their shapes and strides. The grid is planned for `_plan.COMPILE_TARGET`.
"""
from __future__ import annotations

import itertools

import torch

from .compile_check import Case
from .flow_algebra import PREDICTIONS, RECTIFIED, SIT_PATHS, WEIGHTINGS
from .ops import _plan
from .ops.flow_interpolate import interpolate_plan
from .ops.flow_loss import loss_plan, scale_rows_plan
from .ops.guided_step import coefficient_row, stats_plan, step_plan
from .ops.nearest_neighbor import nearest_both_plan

T = _plan.COMPILE_TARGET
DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
B = 4
DENSE_M = {"aligned": 4096, "odd": 4099}   # elements per sample
RAGGED_C = {"aligned": 8, "odd": 7}        # channels per row of a sparse latent (TRELLIS: 8)
RAGGED_ROWS = 3000


def _empty(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype)


def _rows(ragged: bool, align: str):
    """(shape, offsets) of a batch of B samples."""
    if ragged:
        return (RAGGED_ROWS, RAGGED_C[align]), torch.tensor([0, 700, 700, 2100, RAGGED_ROWS])
    return (B, DENSE_M[align]), None


def _scheme_codes():
    """Every (scheme, prediction, weighting) the loss accepts."""
    codes = set()
    for conv, preds in PREDICTIONS.items():
        schemes = SIT_PATHS.values() if conv == "sit" else (RECTIFIED,)
        for s, p, w in itertools.product(schemes, preds.values(), WEIGHTINGS[conv].values()):
            codes.add((s, p, w))
    return sorted(codes)


def _wide(dtype: str, ragged: bool, align: str) -> bool:
    """Dense fp32/bf16 rows whose every sample starts 16-byte aligned: 128-bit loads are required."""
    return dtype in ("fp32", "bf16") and not ragged and align == "aligned"


# --- loss -----------------------------------------------------------------------------------------------------------
def loss_case(pred_dtype="bf16", seeded=True, weighted=False, grad=True, ragged=False, align="aligned",
              codes=(0, 0, 0), x1_dtype="fp32") -> Case:
    def build():
        shape, offsets = _rows(ragged, align)
        pred = _empty(shape, DT[pred_dtype])
        x1 = _empty(shape, DT[x1_dtype])
        noise = None if seeded else _empty(shape, DT[x1_dtype])
        t = _empty((B,))
        weight = _empty((B,)) if weighted else None
        g = _empty(shape if grad else (0,), DT[pred_dtype])
        return loss_plan(pred, x1, noise, t, weight, 1234 if seeded else None, offsets, *codes, 0.0, g, target=T)
    config = (f"pred={pred_dtype} x1={x1_dtype} {'seed' if seeded else 'noise'}{' weight' if weighted else ''}"
              f"{' grad' if grad else ''} {'ragged' if ragged else 'dense'}-{align} scheme/pred/w={codes}")
    return Case("loss", config, build, wide_loads=_wide(pred_dtype, ragged, align) and x1_dtype != "fp16")


def scale_rows_case(dtype="bf16", ragged=False, align="aligned") -> Case:
    def build():
        shape, offsets = _rows(ragged, align)
        return scale_rows_plan(_empty(shape, DT[dtype]), _empty((B,)), offsets, _empty(shape, DT[dtype]), target=T)
    return Case("scale_rows", f"{dtype} {'ragged' if ragged else 'dense'}-{align}", build,
                wide_loads=_wide(dtype, ragged, align))


def interpolate_case(dtype="fp32", out_dtype="fp32", seeded=True, write_target=True, ragged=False,
                     align="aligned", codes=(0, 0)) -> Case:
    def build():
        shape, offsets = _rows(ragged, align)
        x1 = _empty(shape, DT[dtype])
        noise = None if seeded else _empty(shape, DT[dtype])
        xt = _empty(shape, DT[out_dtype])
        tgt = _empty(shape if write_target else (0,), DT[out_dtype])
        return interpolate_plan(x1, noise, _empty((B,)), 99 if seeded else None, offsets, *codes, 0.0, xt, tgt,
                                launch_target=T)
    config = (f"x1={dtype} out={out_dtype} {'seed' if seeded else 'noise'}{' target' if write_target else ''} "
              f"{'ragged' if ragged else 'dense'}-{align} scheme/pred={codes}")
    # seeded: the only load is x1 (the noise is drawn); still 128-bit when x1 rows are aligned
    return Case("interpolate", config, build, wide_loads=_wide(dtype, ragged, align))


# --- guided step ----------------------------------------------------------------------------------------------------
STEP_KINDS = {
    "cond":           dict(),
    "cfg+[x;x]":      dict(uncond=True, model_in=2),
    "cfg+x0":         dict(uncond=True, x0=True),
    "heun-predictor": dict(uncond=True, v_out=True, model_in=1),
    "heun-corrector": dict(uncond=True, h=True, model_in=1),
    "rescale+x0":     dict(uncond=True, x0=True, rescale=True),
}


def step_case(dtype="fp16", kind="cfg+[x;x]", ragged=False, align="aligned") -> Case:
    opts = STEP_KINDS[kind]

    def build():
        shape, offsets = _rows(ragged, align)
        rows = shape[0]
        both = _empty((2 * rows,) + shape[1:], DT[dtype])  # one [cond; uncond] output, halves read in place
        c, u = both[:rows], (both[rows:] if opts.get("uncond") else None)
        x, out = _empty(shape), _empty(shape)
        coef = torch.tensor(coefficient_row(-0.1, 3.0, -2.0, 1.0, -0.5))
        n_in = opts.get("model_in", 0)
        stats = None
        if opts.get("rescale"):
            stats = stats_plan(x, c, u, coef, offsets, target=T).outputs["partial"]
        return step_plan(x, c, u, coef, out, h=_empty(shape) if opts.get("h") else None,
                         model_in=_empty((n_in * rows,) + shape[1:], DT[dtype]) if n_in else None,
                         x0=_empty(shape, DT[dtype]) if opts.get("x0") else None,
                         v_out=_empty(shape) if opts.get("v_out") else None,
                         offsets=offsets, rescale=0.5 if stats is not None else 0.0, stats=stats, target=T)
    return Case("guided_step", f"{dtype} {kind} {'ragged' if ragged else 'dense'}-{align}", build,
                wide_loads=_wide(dtype, ragged, align))


def stats_case(dtype="fp16", ragged=False, align="aligned") -> Case:
    def build():
        shape, offsets = _rows(ragged, align)
        rows = shape[0]
        both = _empty((2 * rows,) + shape[1:], DT[dtype])
        coef = torch.tensor(coefficient_row(-0.1, 3.0, -2.0, 1.0, -0.5))
        return stats_plan(_empty(shape), both[:rows], both[rows:], coef, offsets, target=T)
    return Case("rescale_stats", f"{dtype} {'ragged' if ragged else 'dense'}-{align}", build,
                wide_loads=_wide(dtype, ragged, align))


# --- nearest neighbours (metrics) -----------------------------------------------------------------------------------
def nearest_case(points=(5000, 4099), samples=2) -> Case:
    def build():
        n_p, n_q = points
        offsets = [torch.linspace(0, n, samples + 1).round().long() for n in points]
        return nearest_both_plan(_empty((n_p, 3)), offsets[0], _empty((n_q, 3)), offsets[1], target=T)
    return Case("nearest", f"both directions {points[0]}x{points[1]} points, {samples} samples", build)


# --- the sets -------------------------------------------------------------------------------------------------------
def representative_cases() -> list[Case]:
    """A few cases that cover each kernel's hot configuration (the default test run)."""
    return [
        loss_case("bf16", seeded=True),                                   # training with in-kernel noise
        loss_case("fp32", seeded=False, ragged=True, align="aligned", codes=(RECTIFIED, 0, 0)),  # TRELLIS sparse
        step_case("fp16", "cfg+[x;x]"),                                   # the sampler's step
        step_case("fp32", "rescale+x0", ragged=True),                     # TRELLIS.2 sparse rescale
        loss_case("bf16", seeded=False, x1_dtype="bf16"),                 # bf16 data and noise tensors
        nearest_case(),                                                   # the metrics' nearest neighbours
    ]


def all_cases() -> list[Case]:
    out = []
    for codes in _scheme_codes():
        for seeded in (True, False):
            out.append(loss_case("bf16", seeded=seeded, codes=codes))
    for pred, seeded, weighted, grad, ragged, align in itertools.product(
            DT, (True, False), (False, True), (True, False), (False, True), ("aligned", "odd")):
        out.append(loss_case(pred, seeded, weighted, grad, ragged, align))
    out.append(loss_case("bf16", seeded=False, x1_dtype="bf16"))
    for dtype, ragged, align in itertools.product(DT, (False, True), ("aligned", "odd")):
        out.append(scale_rows_case(dtype, ragged, align))
    for s, p in sorted({(s, p) for s, p, _ in _scheme_codes()}):
        for seeded in (True, False):
            out.append(interpolate_case(seeded=seeded, codes=(s, p)))
    for dtype, out_dtype, write_target, ragged, align in itertools.product(
            ("fp32", "bf16"), ("fp32", "bf16"), (True, False), (False, True), ("aligned", "odd")):
        out.append(interpolate_case(dtype, out_dtype, False, write_target, ragged, align))
    for dtype, kind, align in itertools.product(DT, STEP_KINDS, ("aligned", "odd")):
        out.append(step_case(dtype, kind, False, align))
    for dtype, kind, align in itertools.product(DT, ("cond", "rescale+x0"), ("aligned", "odd")):
        out.append(step_case(dtype, kind, True, align))
    for dtype, ragged, align in itertools.product(DT, (False, True), ("aligned", "odd")):
        out.append(stats_case(dtype, ragged, align))
    out.append(nearest_case())
    out.append(nearest_case((1, 70000), samples=1))
    return out
