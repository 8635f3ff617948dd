"""The flow algebra: every convention's names, codes and per-sample coefficients, in one place.

Each training convention reduces to three affine maps of (data D, noise N, model output O) per sample, with
coefficients that depend on t only (design note: flowkernels/flow_kernels.md):

    x_t      = a D + b N                       (the noisy input)
    residual = p O + cD D + cN N               (loss = w * mean_flat(residual^2))
    target   = -(cD D + cN N) / p              (what O is regressed onto; only written on request)

Sampling needs two more linear maps of a velocity model's outputs:

    guided v = a_c c + a_u u                   (every guidance formula: `guidance_weights`)
    x0       = A x_t + B v                     (the data prediction: `x0_coefficients`)

The user-facing names (conventions and their aliases, paths, predictions, weightings) resolve here to small
integer codes. The Triton kernels receive the codes as `tl.constexpr` arguments and evaluate the same formulas
in `flowkernels/ops/flow_coefficients.py`; `coefficients_torch` below is the torch path's copy of those formulas.
This module imports neither Triton nor any kernel.
"""
from __future__ import annotations

import math

import torch

from ._validation import check_choice

# Schemes: SiT / Hunyuan3D-2.1 paths (t=0 noise, t=1 data) and the rectified family (t=0 data, t=1 noise),
# which covers TRELLIS (sigma_min=1e-5) and diffusers/SD3 (sigma_min=0).
SIT_LINEAR, SIT_GVP, SIT_VP, RECTIFIED = 0, 1, 2, 3
# Predictions: velocity (target u_t), noise (target N), score (out * sigma + N), data (SD3 preconditioning).
VELOCITY, NOISE, SCORE, DATA = 0, 1, 2, 3
# Weightings: none, SiT "velocity" / "likelihood", SD3 "sigma_sqrt" / "cosmap".
W_NONE, W_VELOCITY, W_LIKELIHOOD, W_SIGMA_SQRT, W_COSMAP = 0, 1, 2, 3, 4

# SiT's VP path: beta(t) runs linearly from VP_SIGMA_MIN to VP_SIGMA_MAX (SiT calls them beta_min / beta_max).
VP_SIGMA_MIN, VP_SIGMA_MAX = 0.1, 20.0
TRELLIS_SIGMA_MIN = 1e-5

# Every accepted convention name -> its canonical name. Used by training and sampling alike.
CONVENTIONS = {"sit": "sit", "hunyuan3d": "sit", "trellis": "trellis", "sd3": "sd3", "diffusers": "sd3"}
SIT_PATHS = {"linear": SIT_LINEAR, "gvp": SIT_GVP, "vp": SIT_VP}
PREDICTIONS = {
    "sit": {"velocity": VELOCITY, "noise": NOISE, "score": SCORE},
    "trellis": {"velocity": VELOCITY},
    "sd3": {"velocity": VELOCITY, "flow": VELOCITY, "data": DATA, "sample": DATA},
}
WEIGHTINGS = {
    "sit": {None: W_NONE, "none": W_NONE, "velocity": W_VELOCITY, "likelihood": W_LIKELIHOOD},
    "trellis": {None: W_NONE, "none": W_NONE},
    "sd3": {None: W_NONE, "none": W_NONE, "sigma_sqrt": W_SIGMA_SQRT, "cosmap": W_COSMAP},
}
# Guidance formulas, v = a_c c + a_u u: "cfg" (Hunyuan3D / diffusers) u + w (c - u); "trellis" (1 + w) c - w u;
# "trellis2" g c + (1 - g) u.
GUIDANCE_FORMULAS = ("cfg", "trellis", "trellis2")


def canonical_convention(convention: str) -> str:
    """"sit" (also "hunyuan3d"), "trellis" or "sd3" (also "diffusers"); a named ValueError otherwise."""
    return check_choice("convention", convention, CONVENTIONS)


def resolve_scheme(convention: str, path, prediction: str, weighting, sigma_min):
    """Turn user-facing names into (scheme, prediction, weighting, sigma_min) codes; named ValueErrors.

    path: "linear" / "gvp" / "vp" for SiT; the rectified conventions have one path ("linear", "rectified" or None).
    sigma_min: None picks the convention's default (TRELLIS 1e-5, SD3 0); SiT paths have none."""
    conv = canonical_convention(convention)
    if conv == "sit":
        scheme = check_choice("path", path, SIT_PATHS)
        if sigma_min is not None:
            raise ValueError("sigma_min applies to convention='trellis'/'sd3' only; SiT paths have none")
        sigma_min = 0.0
    else:
        if path is not None and str(path).lower() not in ("linear", "rectified"):
            raise ValueError(f"path={path!r}: convention={convention!r} has a single linear path")
        scheme = RECTIFIED
        if sigma_min is None:
            sigma_min = TRELLIS_SIGMA_MIN if conv == "trellis" else 0.0
        sigma_min = float(sigma_min)
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min={sigma_min} must lie in [0, 1)")
    pred = check_choice("prediction", prediction, PREDICTIONS[conv])
    weight = check_choice("weighting", weighting, WEIGHTINGS[conv])
    return scheme, pred, weight, sigma_min


def coefficients_torch(t: torch.Tensor, sigma_min: float, scheme: int, prediction: int, weighting: int):
    """(a, b, p, cD, cN, w) per sample from t, in float64 like the kernels' per-sample scalars."""
    t = t.double()
    one = torch.ones_like(t)
    if scheme == SIT_LINEAR:
        a, b, da, db = t, 1.0 - t, one, -one
    elif scheme == SIT_GVP:
        a, b = torch.sin(math.pi / 2 * t), torch.cos(math.pi / 2 * t)
        da, db = math.pi / 2 * b, -math.pi / 2 * a
    elif scheme == SIT_VP:  # alpha = exp(L), sigma = sqrt(1 - exp(2L))
        s = 1.0 - t
        L = -0.25 * s * s * (VP_SIGMA_MAX - VP_SIGMA_MIN) - 0.5 * s * VP_SIGMA_MIN
        dL = 0.5 * s * (VP_SIGMA_MAX - VP_SIGMA_MIN) + 0.5 * VP_SIGMA_MIN
        a, e2 = torch.exp(L), torch.exp(2.0 * L)
        b = torch.sqrt(1.0 - e2)
        da, db = a * dL, -e2 * dL / b
    else:  # rectified: t=0 data, t=1 noise
        a, b = 1.0 - t, sigma_min + (1.0 - sigma_min) * t
        da, db = -one, (1.0 - sigma_min) * one

    if scheme == RECTIFIED:
        # data: pred * (-t) + x_t regressed onto D; velocity: target (1 - sigma_min) N - D
        p, cD, cN = (-t, a - 1.0, b) if prediction == DATA else (one, one, -db)
    elif prediction == VELOCITY:  # target u_t = a' D + b' N
        p, cD, cN = one, -da, -db
    elif prediction == NOISE:
        p, cD, cN = one, 0.0 * one, -one
    else:  # score: out * sigma + N
        p, cD, cN = b, 0.0 * one, one

    w = one
    if weighting in (W_VELOCITY, W_LIKELIHOOD):
        if scheme == SIT_VP:
            drift_var = 0.5 * (VP_SIGMA_MIN + (1.0 - t) * (VP_SIGMA_MAX - VP_SIGMA_MIN))
        else:
            drift_var = (da / a) * b * b - b * db
        w = (drift_var / b) ** 2 if weighting == W_VELOCITY else drift_var / (b * b)
    elif weighting == W_SIGMA_SQRT:
        w = 1.0 / (t * t)
    elif weighting == W_COSMAP:
        w = 2.0 / (math.pi * (1.0 - 2.0 * t + 2.0 * t * t))
    return a, b, p, cD, cN, w


def x0_coefficients(convention: str, t: float, sigma_min: float = 0.0) -> tuple[float, float]:
    """(A, B) with the data prediction x0 = A·x_t + B·v of a velocity model at time t.

    SiT / Hunyuan3D: x_t = t D + (1 - t) N, v = D - N, so x0 = x_t + (1 - t) v.
    Rectified (TRELLIS, SD3 with sigma_min = 0): x_t = (1 - t) D + (sigma_min + (1 - sigma_min) t) N,
    v = (1 - sigma_min) N - D, so x0 = (1 - sigma_min) x_t - (sigma_min + (1 - sigma_min) t) v."""
    if canonical_convention(convention) == "sit":
        return 1.0, 1.0 - t
    return 1.0 - sigma_min, -(sigma_min + (1.0 - sigma_min) * t)


def guidance_weights(formula: str, scale: float) -> tuple[float, float]:
    """(a_c, a_u) with v = a_c·cond + a_u·uncond for each guidance formula."""
    formula = check_choice("formula", formula, GUIDANCE_FORMULAS)
    if formula == "trellis":    # TRELLIS: (1 + w) c − w u
        return 1.0 + scale, -scale
    # Hunyuan3D / diffusers u + w (c − u) and TRELLIS.2 g c + (1 − g) u: the same weights (different defaults)
    return scale, 1.0 - scale
