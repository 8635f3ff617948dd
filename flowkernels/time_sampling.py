"""Device-side time samplers: t is drawn where the data lives, with an optional torch.Generator, no host sync."""
from __future__ import annotations

import math

import torch

from ._validation import check_choice, check_real

SAMPLERS = {"uniform": "uniform", "logit_normal": "logit_normal", "logitnormal": "logit_normal", "mode": "mode"}
SHIFT_SENSES = {"sit": "sit", "sd3": "sd3"}
TIME_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# SD3's mode map t = 1 - u - m (cos^2(pi u / 2) - 1 + u) stays in [0, 1] for every u in [0, 1] only when
# -1 <= m <= min over u of (1 - u) / (u - sin^2(pi u / 2)) = 7.235...; the upper end is rounded down.
MODE_SCALE_RANGE = (-1.0, 7.2)


def sample_time(batch_size: int, *, sampler: str = "uniform", device=None, generator=None,
                t0: float = 0.0, t1: float = 1.0, mean: float = 0.0, std: float = 1.0,
                mode_scale: float = 1.29, shift: float = 1.0, shift_sense: str = "sit",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw per-sample times t of shape [batch_size].

    sampler:
      - "uniform": t ~ U(t0, t1).
      - "logit_normal": t = sigmoid(mean + std * z), z ~ N(0, 1).
      - "mode": SD3's mode sampling u <- 1 - u - m (cos^2(pi u / 2) - 1 + u), m = mode_scale.
    shift (applied after sampling when != 1):
      - shift_sense="sit" (Hunyuan3D-2.1): r = sqrt(shift); t <- r t / (1 + (r - 1) t); t is the data end
        (t=1 data), so shift > 1 moves samples toward the data.
      - shift_sense="sd3": t <- shift t / (1 + (shift - 1) t), t = sigma (t=1 noise): toward the noise.
    """
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size={batch_size!r} must be a non-negative int")
    sampler = check_choice("sampler", sampler, SAMPLERS)
    sense = check_choice("shift_sense", shift_sense, SHIFT_SENSES)
    if not (0.0 <= t0 <= t1 <= 1.0):
        raise ValueError(f"t0={t0}, t1={t1} must satisfy 0 <= t0 <= t1 <= 1")
    for name, value in (("mean", mean), ("std", std), ("mode_scale", mode_scale), ("shift", shift)):
        check_real(name, value)  # NaN would give all-NaN t
    if std < 0:
        raise ValueError(f"std={std} must be >= 0")
    if sampler == "mode" and not MODE_SCALE_RANGE[0] <= mode_scale <= MODE_SCALE_RANGE[1]:
        raise ValueError(f"mode_scale={mode_scale} must lie in [{MODE_SCALE_RANGE[0]:g}, {MODE_SCALE_RANGE[1]:g}]: "
                         "outside it the mode map sends some t outside [0, 1]")
    if not shift > 0:
        raise ValueError(f"shift={shift} must be > 0")
    if dtype not in TIME_DTYPES:  # an integer dtype would round every t to 0 or 1
        raise ValueError(f"dtype={dtype!r} must be a floating dtype ({', '.join(map(str, TIME_DTYPES))})")
    if generator is not None and device is None:
        device = generator.device
    kw = dict(device=device, generator=generator, dtype=torch.float32)
    if sampler == "uniform":
        t = torch.rand(batch_size, **kw)
        if (t0, t1) != (0.0, 1.0):  # on [0, 1] the affine map is the identity: two ops saved per step
            t = t * (t1 - t0) + t0
    elif sampler == "logit_normal":
        t = torch.sigmoid(torch.randn(batch_size, **kw) * std + mean)
    else:
        u = torch.rand(batch_size, **kw)
        t = 1.0 - u - mode_scale * (torch.cos(math.pi * u / 2.0) ** 2 - 1.0 + u)
    if shift != 1.0:
        r = math.sqrt(shift) if sense == "sit" else shift
        t = r * t / (1.0 + (r - 1.0) * t)
    return t.to(dtype)
