"""Per-sample coefficients shared by the interpolate and loss kernels.

Every convention of SPEC §1 reduces to three affine maps of (data D, noise N, model output O) per sample:

    x_t      = a D + b N                       (the noisy input)
    residual = p O + cD D + cN N               (loss = w * mean_flat(residual^2))
    target   = -(cD D + cN N) / p              (what O is regressed onto; only written on request)

The kernels evaluate these from t inside the kernel (constexpr codes pick the formulas), so no [B]-sized
coefficient tensors are launched or stored. `coefficients_torch` is the same table for the plain torch path.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._validation import check_choice

# Schemes: SiT / Hunyuan3D-2.1 paths (t=0 noise, t=1 data) and the rectified family (t=0 data, t=1 noise),
# which covers TRELLIS (sigma_min=1e-5) and diffusers/SD3 (sigma_min=0).
SIT_LINEAR, SIT_GVP, SIT_VP, RECTIFIED = 0, 1, 2, 3
# Predictions: velocity (target u_t), noise (target N), score (out * sigma + N), data (SD3 preconditioning).
VELOCITY, NOISE, SCORE, DATA = 0, 1, 2, 3
# Weightings: none, SiT "velocity" / "likelihood", SD3 "sigma_sqrt" / "cosmap".
W_NONE, W_VELOCITY, W_LIKELIHOOD, W_SIGMA_SQRT, W_COSMAP = 0, 1, 2, 3, 4

VP_SIGMA_MIN, VP_SIGMA_MAX = 0.1, 20.0
TRELLIS_SIGMA_MIN = 1e-5

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


def resolve_scheme(convention: str, path: str, prediction: str, weighting, sigma_min):
    """Turn user-facing names into (scheme, prediction, weighting, sigma_min) codes; named ValueErrors."""
    conv = check_choice("convention", convention, CONVENTIONS)
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


@triton.jit
def flow_coefficients(t, sigma_min, SCHEME: tl.constexpr, PREDICTION: tl.constexpr, WEIGHTING: tl.constexpr):
    """(a, b, p, cD, cN, w) for one sample's t (fp32 scalar). See the module docstring."""
    HALF_PI: tl.constexpr = 1.5707963267948966
    if SCHEME == 0:  # SiT Linear
        a = t
        b = 1.0 - t
        da = 1.0 + 0.0 * t
        db = -1.0 + 0.0 * t
    elif SCHEME == 1:  # SiT GVP
        a = tl.sin(HALF_PI * t)
        b = tl.cos(HALF_PI * t)
        da = HALF_PI * b
        db = -HALF_PI * a
    elif SCHEME == 2:  # SiT VP: alpha = exp(L), sigma = sqrt(1 - exp(2L))
        s = 1.0 - t
        L = -0.25 * s * s * (20.0 - 0.1) - 0.5 * s * 0.1
        dL = 0.5 * s * (20.0 - 0.1) + 0.5 * 0.1
        a = tl.exp(L)
        e2 = tl.exp(2.0 * L)
        b = tl.sqrt(1.0 - e2)
        da = a * dL
        db = -e2 * dL / b
    else:  # rectified: t=0 data, t=1 noise
        a = 1.0 - t
        b = sigma_min + (1.0 - sigma_min) * t
        da = -1.0 + 0.0 * t
        db = (1.0 - sigma_min) + 0.0 * t

    if SCHEME == 3:
        if PREDICTION == 3:  # data: pred * (-s) + x_t regressed onto D
            p = -t
            cD = a - 1.0
            cN = b
        else:  # velocity target (1 - sigma_min) N - D
            p = 1.0 + 0.0 * t
            cD = 1.0 + 0.0 * t
            cN = -db
    elif PREDICTION == 0:  # velocity target u_t = a' D + b' N
        p = 1.0 + 0.0 * t
        cD = -da
        cN = -db
    elif PREDICTION == 1:  # noise
        p = 1.0 + 0.0 * t
        cD = 0.0 * t
        cN = -1.0 + 0.0 * t
    else:  # score: out * sigma + N
        p = b
        cD = 0.0 * t
        cN = 1.0 + 0.0 * t

    w = 1.0 + 0.0 * t
    if WEIGHTING == 1 or WEIGHTING == 2:
        if SCHEME == 2:
            drift_var = 0.5 * (0.1 + (1.0 - t) * (20.0 - 0.1))
        else:
            drift_var = (da / a) * b * b - b * db
        if WEIGHTING == 1:
            w = (drift_var / b) * (drift_var / b)
        else:
            w = drift_var / (b * b)
    elif WEIGHTING == 3:
        w = 1.0 / (t * t)
    elif WEIGHTING == 4:
        w = 2.0 / (3.141592653589793 * (1.0 - 2.0 * t + 2.0 * t * t))
    return a, b, p, cD, cN, w


def coefficients_torch(t: torch.Tensor, sigma_min: float, scheme: int, prediction: int, weighting: int):
    """Torch twin of `flow_coefficients` for the torch path, in float64 like the kernel's scalars."""
    t = t.double()
    one = torch.ones_like(t)
    if scheme == SIT_LINEAR:
        a, b, da, db = t, 1.0 - t, one, -one
    elif scheme == SIT_GVP:
        a, b = torch.sin(math.pi / 2 * t), torch.cos(math.pi / 2 * t)
        da, db = math.pi / 2 * b, -math.pi / 2 * a
    elif scheme == SIT_VP:
        s = 1.0 - t
        L = -0.25 * s * s * (VP_SIGMA_MAX - VP_SIGMA_MIN) - 0.5 * s * VP_SIGMA_MIN
        dL = 0.5 * s * (VP_SIGMA_MAX - VP_SIGMA_MIN) + 0.5 * VP_SIGMA_MIN
        a, e2 = torch.exp(L), torch.exp(2.0 * L)
        b = torch.sqrt(1.0 - e2)
        da, db = a * dL, -e2 * dL / b
    else:
        a, b = 1.0 - t, sigma_min + (1.0 - sigma_min) * t
        da, db = -one, (1.0 - sigma_min) * one

    if scheme == RECTIFIED:
        p, cD, cN = (-t, a - 1.0, b) if prediction == DATA else (one, one, -db)
    elif prediction == VELOCITY:
        p, cD, cN = one, -da, -db
    elif prediction == NOISE:
        p, cD, cN = one, 0.0 * one, -one
    else:
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
