"""Hostile calls of the flow-matching training API: autograd corner cases and odd inputs."""
import pytest
import torch

import flowkernels as fk

BACKENDS = ["native", "torch", "triton"]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_is_a_named_error_not_a_zero_hessian(backend, reduction):
    """A gradient penalty through the loss (create_graph=True) needs d²loss/dpred², which the stored gradient does
    not carry: with another term giving the first gradient a graph, the penalty's gradient silently lacked the
    loss's part (here 2·(2/M)² per element)."""
    B, M = 3, 10
    x1, noise, t = torch.randn(B, M), torch.randn(B, M), torch.rand(B)
    pred = torch.randn(B, M, requires_grad=True)
    loss = fk.flow_matching_loss(pred, x1, t, noise, reduction=reduction, backend=backend)
    total = loss.sum() + (pred ** 2).sum()   # another term: the first gradient has a graph
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(total, pred, create_graph=True)
    # first-order backward, with or without retain_graph, is unaffected
    loss = fk.flow_matching_loss(pred, x1, t, noise, reduction=reduction, backend=backend)
    (g,) = torch.autograd.grad(loss.sum(), pred, retain_graph=True)
    (g2,) = torch.autograd.grad(loss.sum(), pred)
    want = 2 * (pred.detach().double() - (x1.double() - noise.double())) / M
    want = want / B if reduction == "mean" else want
    torch.testing.assert_close(g.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g2, g)


@pytest.mark.parametrize("mode_scale", [10.0, -2.0, 7.3])
def test_mode_sampling_scale_that_leaves_the_unit_interval_is_refused(mode_scale):
    """SD3's mode map with mode_scale=10 drew t down to -0.29 and up to 1.29: the CPU loss then refused 't has
    values outside [0, 1]', and on CUDA those samples' losses were NaN."""
    with pytest.raises(ValueError, match="mode_scale"):
        fk.sample_time(1000, sampler="mode", mode_scale=mode_scale)


@pytest.mark.parametrize("mode_scale", [-1.0, 0.0, 1.29, 7.2])
def test_mode_sampling_scales_inside_the_range_stay_in_the_unit_interval(mode_scale):
    t = fk.sample_time(20000, sampler="mode", mode_scale=mode_scale, dtype=torch.float64)
    assert 0.0 <= t.min().item() and t.max().item() <= 1.0


def test_sit_training_losses_names_a_model_that_returns_a_tuple():
    """A model returning (output,) raised AttributeError: 'tuple' object has no attribute 'shape'."""
    from flowkernels.compat.sit import create_transport
    transport = create_transport("Linear", "velocity")
    x1 = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="model returned a tuple"):
        transport.training_losses(lambda x, t: (x,), x1)
    with pytest.raises(ValueError, match="model returned shape"):
        transport.training_losses(lambda x, t: x[:1], x1)


def test_trellis_training_losses_checks_the_sparse_layout():
    """A layout with a gap ([0:2], [3:7]) became offsets [0, 3, 7] from the slices' starts: row 2 was trained as
    part of sample 0 without a word."""
    from conftest import FakeSparse
    from flowkernels.compat.trellis import training_losses
    lin = torch.nn.Linear(4, 4)

    def denoiser(x, t, cond=None, **kw):
        return x.replace(lin(x.feats))
    with pytest.raises(ValueError, match="layout\\[1\\]"):
        training_losses(denoiser, FakeSparse(torch.randn(7, 4), [slice(0, 2), slice(3, 7)]))
    terms, _ = training_losses(denoiser, FakeSparse(torch.randn(7, 4), [slice(0, 3), slice(3, 7)]))
    assert torch.isfinite(terms["loss"])


def test_trellis_training_losses_names_a_denoiser_that_returns_a_tuple():
    from flowkernels.compat.trellis import training_losses
    with pytest.raises(ValueError, match="denoiser returned a tuple"):
        training_losses(lambda x, t, cond=None: (x,), torch.randn(3, 8))


@pytest.mark.parametrize("schedule,message", [
    ({"name": "logitNormal", "args": {"mean": "abc"}}, "t_schedule mean='abc'"),   # float('abc')'s message
    ({"name": "logitNormal", "args": [0.0, 1.0]}, "args must be a dict"),           # AttributeError: .get
    ({"name": "logitNormal", "args": {"std": float("nan")}}, "t_schedule std=nan"),
])
def test_trellis_t_schedule_arguments_are_named(schedule, message):
    from flowkernels.compat.trellis_train import sample_t_schedule
    with pytest.raises(ValueError, match=message):
        sample_t_schedule(schedule, 4, "cpu")
