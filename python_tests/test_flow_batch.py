"""A batch checked once for a training step (flow_batch): its interpolation and loss equal the two plain calls bit
for bit, dense and ragged, noise tensor and seed; bad inputs get the plain calls' named errors."""
import pytest
import torch

import flowkernels as fk


def _inputs(ragged, seeded):
    gen = torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
    if ragged:
        rows = torch.tensor([7, 0, 19, 3])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
        x1, kw = torch.randn(int(rows.sum()), 5, generator=gen), dict(offsets=offsets, convention="trellis")
        B = 4
    else:
        x1, kw, B = torch.randn(3, 11, 6, generator=gen), {}, 3
    t = torch.rand(B, generator=gen)
    noise = None if seeded else torch.randn(x1.shape, generator=gen)
    seed = int(torch.randint(0, 2**62, (), generator=gen)) if seeded else None
    return x1, t, noise, seed, kw


@pytest.mark.parametrize("seeded", [False, True], ids=["noise", "seed"])
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
def test_batch_calls_equal_the_plain_calls(ragged, seeded):
    x1, t, noise, seed, kw = _inputs(ragged, seeded)
    offsets = kw.pop("offsets", None)
    batch = fk.flow_batch(x1, t, noise, seed=seed, offsets=offsets)
    xt = fk.flow_interpolate_batch(batch, **kw)
    want_xt = fk.flow_interpolate(x1, t, noise, seed=seed, offsets=offsets, **kw)
    assert torch.equal(xt, want_xt)
    pred = (xt * 0.5).requires_grad_(True)
    pred_plain = pred.detach().clone().requires_grad_(True)
    do = torch.randn(())
    for reduction in ("mean", "none"):
        got = fk.flow_matching_loss_batch(pred, batch, reduction=reduction, **kw)
        want = fk.flow_matching_loss(pred_plain, x1, t, noise, seed=seed, offsets=offsets, reduction=reduction,
                                     **kw)
        # a ragged sample with no rows has a NaN mean on both
        torch.testing.assert_close(got.detach(), want.detach(), rtol=0, atol=0, equal_nan=True)
        (got.nansum() * do).backward()
        (want.nansum() * do).backward()
        assert torch.equal(pred.grad, pred_plain.grad)


def test_batch_errors_name_the_argument():
    x1, t, noise, _, _ = _inputs(False, False)
    with pytest.raises(ValueError, match="t has values outside"):
        fk.flow_batch(x1, t + 2, noise)
    with pytest.raises(ValueError, match="noise has shape"):
        fk.flow_batch(x1, t, noise[:, :3])
    with pytest.raises(ValueError, match="pass a noise tensor or a seed"):
        fk.flow_batch(x1, t)
    batch = fk.flow_batch(x1, t, noise)
    with pytest.raises(ValueError, match="pred has shape"):
        fk.flow_matching_loss_batch(x1[:, :3], batch)
    with pytest.raises(ValueError, match="reduction"):
        fk.flow_matching_loss_batch(x1, batch, reduction="avg")
    with pytest.raises(ValueError, match="batch must be the FlowBatch"):
        fk.flow_interpolate_batch(tuple(batch))
