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
