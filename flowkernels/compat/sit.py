"""Drop-in for SiT's / Hunyuan3D-2.1's `transport` module: `create_transport` and `Transport`.

    from flowkernels.compat.sit import create_transport   # instead of ...transport import create_transport
    transport = create_transport("Linear", "velocity")
    loss = transport.training_losses(model, x1, model_kwargs)["loss"].mean()

`training_losses` builds x_t with one fused kernel and the loss + gradient with another; on CUDA the noise is
drawn inside the kernels from a seed (never stored). Pass t= / noise= to reproduce a given draw exactly.
"""
from __future__ import annotations

import torch

from .._validation import check_choice
from ..flow_matching import flow_batch, flow_interpolate_batch, flow_matching_loss_batch
from ..sampling import check_model_output
from ..time_sampling import sample_time

_PATHS = {"linear": "Linear", "gvp": "GVP", "vp": "VP"}
_PREDICTIONS = {"velocity": "velocity", "noise": "noise", "score": "score"}
_WEIGHTS = {None: None, "none": None, "velocity": "velocity", "likelihood": "likelihood"}
_TIME_SAMPLERS = {"uniform": "uniform", "logit_normal": "logit_normal"}


class Transport:
    """SiT's Transport with the training path on fused kernels. Use `create_transport` to build one."""

    def __init__(self, *, path_type, prediction, loss_weight, train_eps, sample_eps,
                 train_sample_type="uniform", mean=0.0, std=1.0, shift_scale=1.0, backend=None):
        self.path_type = path_type
        self.model_type = prediction
        self.loss_type = loss_weight
        self.train_eps = train_eps
        self.sample_eps = sample_eps
        self.train_sample_type = train_sample_type
        self.mean, self.std, self.shift_scale = mean, std, shift_scale
        self.backend = backend

    def check_interval(self, train_eps, sample_eps, *, diffusion_form="SBDM", sde=False, reverse=False,
                       eval=False, last_step_size=0.0):
        """The time interval [t0, t1] exactly as SiT computes it."""
        t0, t1 = 0.0, 1.0
        eps = train_eps if not eval else sample_eps
        if self.path_type == "VP":
            t1 = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        elif self.model_type != "velocity" or sde:
            t0 = eps if (diffusion_form == "SBDM" and sde) or self.model_type != "velocity" else 0
            t1 = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        if reverse:
            t0, t1 = 1 - t0, 1 - t1
        return t0, t1

    def sample_t(self, batch_size: int, device=None, generator=None) -> torch.Tensor:
        """Per-sample t on `device`: uniform on check_interval's [t0, t1], or, as Hunyuan3D-2.1's sampler,
        logit-normal with SiT's sqrt(shift) warp on (0, 1), not mapped to [t0, t1] (the original does not)."""
        if self.train_sample_type == "uniform":
            t0, t1 = self.check_interval(self.train_eps, self.sample_eps)
            return sample_time(batch_size, sampler="uniform", t0=t0, t1=t1, device=device, generator=generator)
        return sample_time(batch_size, sampler="logit_normal", mean=self.mean, std=self.std,
                           shift=self.shift_scale, shift_sense="sit", device=device, generator=generator)

    def sample(self, x1, generator=None):
        """(t, x0, x1) as the original: noise x0 ~ N(0, I) like x1, t on x1's device and dtype."""
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        return self.sample_t(x1.shape[0], x1.device, generator).to(x1), x0, x1

    def _kernel_names(self):
        weighting = None if self.model_type == "velocity" else self.loss_type  # SiT ignores it for velocity
        return dict(convention="sit", path=self.path_type.lower(), prediction=self.model_type,
                    weighting=weighting, backend=self.backend)

    def training_losses(self, model, x1, model_kwargs=None, *, t=None, noise=None, generator=None):
        """{"loss": per-sample loss [B], "pred": model output}; callers take `.mean()` themselves.

        t / noise: use these instead of drawing them (for exact reproduction of a given draw)."""
        if model_kwargs is None:
            model_kwargs = {}
        if t is None:
            t = self.sample_t(x1.shape[0], x1.device, generator).to(x1)
        seed = None
        if noise is None:
            # a CPU draw keyed off torch's default (or the given CPU) generator: no device sync
            cpu_gen = generator if generator is not None and generator.device.type == "cpu" else None
            seed = torch.randint(0, 2**62, (), generator=cpu_gen, dtype=torch.int64)
        names = self._kernel_names()
        # the original's dtypes: x_t = α(t) x1 + σ(t) x0 in the promotion of x1, the noise (drawn like x1) and t
        data_dtype = x1.dtype if noise is None else torch.promote_types(x1.dtype, noise.dtype)
        out_dtype = torch.promote_types(data_dtype, t.dtype) if isinstance(t, torch.Tensor) else None
        # checked once for both kernels: the step's interpolation and loss take the same batch
        batch = flow_batch(x1, t, noise, seed=seed)
        t = batch.t
        xt = flow_interpolate_batch(batch, convention="sit", path=names["path"], prediction=self.model_type,
                                    out_dtype=out_dtype, backend=self.backend)
        # a tensor of x_t's shape, floating, on its device (a tuple raised an AttributeError here)
        model_output = check_model_output("model", model(xt, t, **model_kwargs), xt)
        loss = flow_matching_loss_batch(model_output, batch, **names)
        # computed in fp32, rounded once into the original's dtype: (model_output - u_t)^2 with u_t = x1 - x0 on the
        # linear velocity path, weighted by t-dependent terms otherwise
        loss_dtype = torch.promote_types(model_output.dtype, data_dtype)
        if self.path_type != "Linear" or self.model_type != "velocity":
            loss_dtype = torch.promote_types(loss_dtype, t.dtype)
        return {"loss": loss.to(loss_dtype), "pred": model_output}


def create_transport(path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None, sample_eps=None,
                     train_sample_type="uniform", mean=0.0, std=1.0, shift_scale=1.0, *,
                     bug_compatible: bool = False, backend=None) -> Transport:
    """SiT / Hunyuan3D-2.1 `create_transport` with the same signature and defaults.

    The original leaves sample_eps None unless given on the VP path and for non-velocity models (it tests train_eps
    after defaulting it; a later sampler then fails); here sample_eps defaults to 1e-3 there unless
    bug_compatible=True.
    """
    path = check_choice("path_type", path_type, _PATHS)
    model_type = check_choice("prediction", prediction, _PREDICTIONS)
    loss_type = check_choice("loss_weight", loss_weight, _WEIGHTS)
    sample_type = check_choice("train_sample_type", train_sample_type, _TIME_SAMPLERS)
    if path == "VP" or model_type != "velocity":
        train_eps = (1e-5 if path == "VP" else 1e-3) if train_eps is None else train_eps
        # The original tests train_eps *after* defaulting it, so sample_eps stays None unless given.
        if sample_eps is None and not bug_compatible:
            sample_eps = 1e-3
    else:  # velocity on Linear / GVP is stable on all of [0, 1]
        train_eps, sample_eps = 0, 0
    if not 0 <= train_eps < 0.5:
        raise ValueError(f"train_eps={train_eps} must lie in [0, 0.5)")
    if shift_scale <= 0:
        raise ValueError(f"shift_scale={shift_scale} must be > 0")
    return Transport(path_type=path, prediction=model_type, loss_weight=loss_type, train_eps=train_eps,
                     sample_eps=sample_eps, train_sample_type=sample_type, mean=mean, std=std,
                     shift_scale=shift_scale, backend=backend)
