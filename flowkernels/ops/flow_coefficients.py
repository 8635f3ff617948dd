"""The flow algebra's per-sample coefficients evaluated inside the Triton kernels (interpolate and loss).

The names, codes and formulas are defined in `flowkernels.flow_algebra`; this is their in-kernel evaluation, picked
at compile time by the `tl.constexpr` codes, so no [B]-sized coefficient tensors are launched or stored.
`flow_algebra.coefficients_torch` is the torch path's copy of the same formulas.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .. import flow_algebra as fa

# The codes as compile-time constants (a Triton kernel may read a global only when it is a tl.constexpr).
SIT_LINEAR = tl.constexpr(fa.SIT_LINEAR)
SIT_GVP = tl.constexpr(fa.SIT_GVP)
SIT_VP = tl.constexpr(fa.SIT_VP)
RECTIFIED = tl.constexpr(fa.RECTIFIED)
VELOCITY = tl.constexpr(fa.VELOCITY)
NOISE = tl.constexpr(fa.NOISE)
DATA = tl.constexpr(fa.DATA)
W_VELOCITY = tl.constexpr(fa.W_VELOCITY)
W_LIKELIHOOD = tl.constexpr(fa.W_LIKELIHOOD)
W_SIGMA_SQRT = tl.constexpr(fa.W_SIGMA_SQRT)
W_COSMAP = tl.constexpr(fa.W_COSMAP)
VP_SIGMA_MIN = tl.constexpr(fa.VP_SIGMA_MIN)
VP_SIGMA_MAX = tl.constexpr(fa.VP_SIGMA_MAX)


@triton.jit
def flow_coefficients(t, sigma_min, SCHEME: tl.constexpr, PREDICTION: tl.constexpr, WEIGHTING: tl.constexpr):
    """(a, b, p, cD, cN, w) for one sample's t (a scalar; the kernels pass fp64). See flowkernels.flow_algebra."""
    HALF_PI: tl.constexpr = 1.5707963267948966
    if SCHEME == SIT_LINEAR:
        a = t
        b = 1.0 - t
        da = 1.0 + 0.0 * t
        db = -1.0 + 0.0 * t
    elif SCHEME == SIT_GVP:
        a = tl.sin(HALF_PI * t)
        b = tl.cos(HALF_PI * t)
        da = HALF_PI * b
        db = -HALF_PI * a
    elif SCHEME == SIT_VP:  # alpha = exp(L), sigma = sqrt(1 - exp(2L))
        s = 1.0 - t
        L = -0.25 * s * s * (VP_SIGMA_MAX - VP_SIGMA_MIN) - 0.5 * s * VP_SIGMA_MIN
        dL = 0.5 * s * (VP_SIGMA_MAX - VP_SIGMA_MIN) + 0.5 * VP_SIGMA_MIN
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

    if SCHEME == RECTIFIED:
        if PREDICTION == DATA:  # data: pred * (-s) + x_t regressed onto D
            p = -t
            cD = a - 1.0
            cN = b
        else:  # velocity target (1 - sigma_min) N - D
            p = 1.0 + 0.0 * t
            cD = 1.0 + 0.0 * t
            cN = -db
    elif PREDICTION == VELOCITY:  # velocity target u_t = a' D + b' N
        p = 1.0 + 0.0 * t
        cD = -da
        cN = -db
    elif PREDICTION == NOISE:
        p = 1.0 + 0.0 * t
        cD = 0.0 * t
        cN = -1.0 + 0.0 * t
    else:  # score: out * sigma + N
        p = b
        cD = 0.0 * t
        cN = 1.0 + 0.0 * t

    w = 1.0 + 0.0 * t
    if WEIGHTING == W_VELOCITY or WEIGHTING == W_LIKELIHOOD:
        if SCHEME == SIT_VP:
            drift_var = 0.5 * (VP_SIGMA_MIN + (1.0 - t) * (VP_SIGMA_MAX - VP_SIGMA_MIN))
        else:
            drift_var = (da / a) * b * b - b * db
        if WEIGHTING == W_VELOCITY:
            w = (drift_var / b) * (drift_var / b)
        else:
            w = drift_var / (b * b)
    elif WEIGHTING == W_SIGMA_SQRT:
        w = 1.0 / (t * t)
    elif WEIGHTING == W_COSMAP:
        w = 2.0 / (3.141592653589793 * (1.0 - 2.0 * t + 2.0 * t * t))
    return a, b, p, cD, cN, w
