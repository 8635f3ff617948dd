"""TRELLIS / TRELLIS.2 flow-matching training losses on the fused kernels, with per-time-bin statistics kept on the
device.

    class MyTrainer(FlowMatchingLossMixin, FlowMatchingTrainer): ...        # TRELLIS trainer subclass
    terms, status = training_losses(denoiser, x_0, cond, t_schedule={"name": "logitNormal",
                                                                      "args": {"mean": 1.0, "std": 1.0}})

`terms["loss"]` (= `terms["mse"]`) is the mean over all elements, differentiable. The `bin_i` entries (mean of the
per-sample MSEs whose t falls in [i/10, (i+1)/10)) are computed in the same step without a host sync; which bins
exist is only known on the host, so it is read (one small copy) the first time a logger looks at those keys.

Sparse latents: pass a TRELLIS SparseTensor (anything with .feats, .layout and .replace) or a feature matrix
[N, C] with `offsets=` [B + 1]. t is broadcast to each sample's rows inside the kernels.
"""
from __future__ import annotations

import bisect
import contextlib
import functools

import numpy as np
import torch

from .._validation import check_real
from ..flow_algebra import TRELLIS_SIGMA_MIN
from ..flow_matching import flow_batch, flow_interpolate_batch, flow_matching_loss_batch
from ..time_sampling import sample_time
from ..sampling import check_model_output
from ._trellis_sampling import AttrDict, _layout_offsets

N_BINS = 10
# FlowMatchingTrainer's default t_schedule (TRELLIS and TRELLIS.2)
DEFAULT_T_SCHEDULE = {"name": "logitNormal", "args": {"mean": 0.0, "std": 1.0}}
_BIN_EDGES = np.linspace(0, 1, N_BINS + 1)  # the exact float64 edges TRELLIS digitizes with
_BIN_EDGES_LIST = _BIN_EDGES.tolist()


class TrainingTerms(dict):
    """TRELLIS's terms dict whose time-bin entries materialise on first read (one host copy of 10 counts)."""

    def __init__(self, eager: dict, bin_sums: torch.Tensor, bin_counts: torch.Tensor):
        super().__init__(eager)
        self._pending = (bin_sums, bin_counts)

    def _resolve(self):
        if self._pending is None:
            return
        sums, counts = self._pending
        self._pending = None
        means = sums / counts.clamp_min(1)
        for i, n in enumerate(counts.tolist()):
            if n > 0:
                dict.__setitem__(self, f"bin_{i}", AttrDict({"mse": means[i]}))

    def __getitem__(self, key):
        if not dict.__contains__(self, key):
            self._resolve()
        return dict.__getitem__(self, key)

    def __contains__(self, key):
        if not dict.__contains__(self, key):
            self._resolve()
        return dict.__contains__(self, key)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, key, default=None):
        return self[key] if key in self else default



def _resolving(method: str):
    """A dict method that first materialises the pending time-bin entries."""
    def wrapper(self, *args, **kwargs):
        self._resolve()
        return getattr(dict, method)(self, *args, **kwargs)
    wrapper.__name__ = method
    return wrapper


for _name in ("__iter__", "__len__", "keys", "items", "values", "copy", "__repr__", "__eq__"):
    setattr(TrainingTerms, _name, _resolving(_name))


@functools.lru_cache(maxsize=None)
def _bin_edges(device: torch.device) -> torch.Tensor:
    return torch.tensor(_BIN_EDGES, dtype=torch.float64, device=device)  # uploaded once per device, not per step


def time_bin_stats(t: torch.Tensor, mse_per_sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin sums (float64) and counts of per-sample MSEs, binned as np.digitize(t, linspace(0, 1, 11)) - 1."""
    if t.device.type == "cpu" and t.numel() <= 4096 and not torch.compiler.is_compiling():
        return _time_bin_stats_host(t, mse_per_sample)
    return _time_bin_stats_device(t, mse_per_sample)


def _time_bin_stats_device(t: torch.Tensor, mse_per_sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """time_bin_stats in tensor ops on t's device (no host sync)."""
    edges = _bin_edges(t.device)
    bins = torch.bucketize(t.double(), edges, right=True) - 1  # right=True: edges[i-1] <= t < edges[i], as digitize
    member = bins[:, None] == torch.arange(N_BINS, device=t.device)[None, :]
    # a masked sum, not a matmul: a NaN sample (e.g. one with no rows) must only poison its own bin, as in TRELLIS
    sums = torch.where(member, mse_per_sample.double()[:, None], 0.0).sum(dim=0)
    return sums, member.sum(dim=0)


def _time_bin_stats_host(t: torch.Tensor, mse_per_sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """time_bin_stats of a CPU batch read as Python numbers: a handful of values, where the tensor version's eight
    small ops cost as much as the step's loss kernels. NaN lands in no bin (t) or poisons only its bin (MSE)."""
    sums, counts = [0.0] * N_BINS, [0] * N_BINS
    # tolist() widens float32 / float16 values to Python floats exactly: the same numbers as .double() gives
    for ti, m in zip(t.tolist(), mse_per_sample.tolist()):
        b = bisect.bisect_right(_BIN_EDGES_LIST, ti) - 1  # np.digitize's bin (t = 1 and NaN: bin 10, none)
        if 0 <= b < N_BINS:
            sums[b] += m
            counts[b] += 1
    return torch.tensor(sums, dtype=torch.float64), torch.tensor(counts, dtype=torch.int64)


def sample_t_schedule(t_schedule, batch_size: int, device, generator=None) -> torch.Tensor:
    """TRELLIS's sample_t: {"name": "uniform"} or {"name": "logitNormal", "args": {"mean", "std"}}, on the device.
    None is the trainer's default, logitNormal(0, 1)."""
    schedule = t_schedule or DEFAULT_T_SCHEDULE
    name = schedule.get("name") if isinstance(schedule, dict) else None
    if name == "uniform":
        return sample_time(batch_size, sampler="uniform", device=device, generator=generator)
    if name == "logitNormal":
        args = schedule.get("args") or {}
        if not isinstance(args, dict):
            raise ValueError(f"t_schedule={t_schedule!r}: args must be a dict with mean and std")
        return sample_time(batch_size, sampler="logit_normal",
                           mean=check_real("t_schedule mean", args.get("mean", 0.0)),
                           std=check_real("t_schedule std", args.get("std", 1.0)), device=device, generator=generator)
    raise ValueError(f"t_schedule={t_schedule!r}: name must be 'uniform' or 'logitNormal'")


def _sparse_parts(x_0, offsets):
    """(features [N, C], offsets [B + 1] or None, rewrap) for dense tensors, TRELLIS sparse tensors or feats+offsets."""
    if hasattr(x_0, "feats") and hasattr(x_0, "replace"):
        if offsets is None:  # checked on the host: a gap or overlap would assign rows to the wrong sample
            offsets = _layout_offsets(x_0, x_0.feats.device)
        return x_0.feats, offsets, x_0.replace
    if not isinstance(x_0, torch.Tensor):
        raise ValueError(f"x_0 must be a torch.Tensor or a TRELLIS SparseTensor, got {type(x_0).__name__}")
    return x_0, offsets, (lambda feats: feats)


def training_losses(denoiser, x_0, cond=None, *, sigma_min: float = TRELLIS_SIGMA_MIN, t_schedule=None,
                    t=None, noise=None, offsets=None, generator=None, autocast_dtype=None, backend=None, **kwargs):
    """TRELLIS's FlowMatchingTrainer.training_losses (dense) / SparseFlowMatchingTrainer's (sparse) → (terms, {}).

    denoiser(x_t, t * 1000, cond, **kwargs) predicts v = (1 − σ) N − D. t and noise default to fresh draws
    (t from t_schedule on the device; noise inside the kernels from a seed, never stored); pass them to reproduce
    a given draw. autocast_dtype (e.g. torch.bfloat16, TRELLIS.2) runs the denoiser under autocast. The loss is
    computed in fp32 (fp64 for fp64 inputs) and returned in the original's dtype; x_t is handed over in the
    original's dtype (at least fp32: its t is fp32).
    """
    feats, offsets, rewrap = _sparse_parts(x_0, offsets)
    B = feats.shape[0] if offsets is None else offsets.numel() - 1
    device = feats.device
    if t is None:
        t = sample_t_schedule(t_schedule, B, device, generator)
    seed = None
    if noise is None:  # a CPU seed from torch's global generator: reproducible under torch.manual_seed, no sync
        seed = torch.randint(0, 2**62, (), dtype=torch.int64)
    elif hasattr(noise, "feats"):
        noise = noise.feats
    # the original's dtypes: t is fp32, so x_t = (1 - t) x_0 + (σ + (1 - σ) t) N is at least fp32 (bf16 data gives
    # the denoiser fp32 x_t); the target (1 - σ) N - x_0 keeps the data's dtype (N = randn_like(x_0))
    t = t.to(torch.float32) if isinstance(t, torch.Tensor) else t  # shape and type are checked by the kernels' API
    # checked once for both kernels: the step's interpolation and loss take the same batch
    batch = flow_batch(feats, t, noise, seed=seed, offsets=offsets)
    t = batch.t
    data_dtype = feats.dtype if noise is None else torch.promote_types(feats.dtype, noise.dtype)
    x_t = flow_interpolate_batch(batch, convention="trellis", sigma_min=sigma_min,
                                 out_dtype=torch.promote_types(data_dtype, torch.float32), backend=backend)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with autocast:
        pred = denoiser(rewrap(x_t), t * 1000, cond, **kwargs)
    pred = pred.feats if hasattr(pred, "feats") else pred
    pred = check_model_output("denoiser", pred, feats)  # a tuple raised AttributeError on .shape
    # mse: the mean over all elements (sparse: samples weigh by their rows, as F.mse_loss over all features),
    # computed in fp32 and rounded once into F.mse_loss(pred, target)'s dtype (fp32 at least under autocast)
    mse, mse_per_sample = flow_matching_loss_batch(pred, batch, convention="trellis", sigma_min=sigma_min,
                                                   reduction="mean", return_per_sample=True, backend=backend)
    mse_dtype = torch.promote_types(pred.dtype, data_dtype)
    mse = mse.to(torch.promote_types(mse_dtype, torch.float32) if autocast_dtype else mse_dtype)
    sums, counts = time_bin_stats(t.reshape(B), mse_per_sample.detach())
    return TrainingTerms({"mse": mse, "loss": mse}, sums, counts), {}


class FlowMatchingLossMixin:
    """Put before TRELLIS's FlowMatchingTrainer (or SparseFlowMatchingTrainer) in a trainer's bases to run its
    training_losses on the fused kernels. Uses self.training_models['denoiser'], self.get_cond, self.t_schedule,
    self.sigma_min, and the class attribute loss_autocast_dtype (None; torch.bfloat16 for TRELLIS.2 runs)."""

    loss_autocast_dtype = None

    def training_losses(self, x_0, cond=None, **kwargs):
        cond = self.get_cond(cond, **kwargs) if hasattr(self, "get_cond") else cond
        return training_losses(self.training_models["denoiser"], x_0, cond, sigma_min=self.sigma_min,
                               t_schedule=getattr(self, "t_schedule", None),
                               autocast_dtype=self.loss_autocast_dtype, **kwargs)


SparseFlowMatchingLossMixin = FlowMatchingLossMixin  # the same method handles SparseTensor inputs
