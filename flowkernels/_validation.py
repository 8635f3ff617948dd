"""Input validation at the Python boundary: every error names the offending argument."""
from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_choice(name: str, value, choices):
    """Normalise a string option (case-insensitive) and reject unknown names."""
    key = value.lower() if isinstance(value, str) else value
    if key not in choices:
        raise ValueError(f"{name}={value!r} is not one of {sorted(str(c) for c in choices)}")
    return choices[key] if isinstance(choices, dict) else key


def check_real(name: str, value, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite real number (a Python or numpy number, or a one-element tensor) in [lo, hi], as a float: strings,
    bools, NaN and infinities are named errors (NaN would pass every comparison-based range check silently)."""
    v = None
    if not isinstance(value, (str, bytes, bool)):
        try:
            v = float(value)
        except (TypeError, ValueError, RuntimeError):
            v = None
    if v is None or not math.isfinite(v) or not lo <= v <= hi:
        where = "" if (lo, hi) == (-math.inf, math.inf) else f" in [{lo:g}, {hi:g}]"
        raise ValueError(f"{name}={value!r} must be a finite number{where}")
    return v


def check_row_offsets(offsets, rows: int, device, data: str, dtypes=(torch.int64, torch.int32)) -> torch.Tensor:
    """offsets [B + 1] of ragged samples over the `rows` rows of the tensor named `data`, as contiguous int64: named
    errors for what the host can see. On the CPU the values too (0 first, `rows` last, never decreasing: the kernels
    index rows with them); a CUDA tensor's values are not read (a sync per call), the kernels clamp them instead."""
    if not isinstance(offsets, torch.Tensor) or offsets.dim() != 1 or offsets.dtype not in dtypes \
            or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be a 1-D {' or '.join(str(d).split('.')[-1] for d in dtypes)} tensor of B + 1 "
                         f"row offsets, got {getattr(offsets, 'dtype', type(offsets).__name__)} of shape "
                         f"{tuple(getattr(offsets, 'shape', ()))}")
    if offsets.device != torch.device(device):
        raise ValueError(f"offsets is on {offsets.device} but {data} is on {device}")
    offsets = offsets.to(torch.int64).contiguous()
    if offsets.device.type == "cpu" and not torch.compiler.is_compiling():
        if offsets.numel() <= 4097:  # a few values: read as Python ints (one call, not five small ops)
            v = offsets.tolist()
            bad = v[0] != 0 or v[-1] != rows or any(a > b for a, b in zip(v, v[1:]))
        else:
            bad = int(offsets[0]) != 0 or int(offsets[-1]) != rows or bool((offsets[1:] < offsets[:-1]).any())
        if bad:
            shown = offsets.tolist() if offsets.numel() <= 8 else offsets[:4].tolist() + ["..."] + offsets[-2:].tolist()
            raise ValueError(f"offsets must run from 0 to {data}'s {rows} rows without decreasing, got {shown}")
    return offsets


def check_float_tensor(name: str, x, dtypes=FLOAT_DTYPES, min_ndim: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {x.dtype}; expected one of {list(dtypes)}")
    if x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor):
    if x.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but {ref_name} has shape {tuple(ref.shape)}")
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}")


def check_per_sample(name: str, x, batch: int, device, dtypes=FLOAT_DTYPES + (torch.float64,)) -> torch.Tensor:
    """A per-sample vector: shape [B] (or broadcastable [B, 1, ...]) on the data's device."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [{batch}], got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {x.dtype}; expected a floating dtype")
    if x.numel() != batch or (x.dim() > 0 and x.shape[0] != batch) or any(s != 1 for s in x.shape[1:]):
        raise ValueError(f"{name} must hold one value per sample (shape [{batch}]), got shape {tuple(x.shape)}")
    if x.device != torch.device(device):
        raise ValueError(f"{name} is on {x.device} but the data is on {device}")
    return x.reshape(batch)


def check_device(option: str, name, *, here: bool = True):
    """A torch.device that exists here: unknown names and CUDA without a visible GPU are named errors.
    here=False checks the name only (cpu, cuda or cuda:N), for work that runs on other machines (Ray tasks)."""
    import torch

    if name is None:
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option} {name!r} is not a device; use cpu or cuda (cuda:N for one GPU)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{option} {name!r}: flowkernels runs on cpu or cuda")
    if dev.type == "cuda" and here:
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: no CUDA device is visible (torch.cuda.is_available() is False; "
                             "is this torch a CPU build?)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev
