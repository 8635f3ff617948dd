"""compat.trellis training losses (dense and sparse, time bins on the device) against the plainly written originals."""
import pytest
import torch

import flowkernels as fk
from flowkernels.compat import trellis as T1
from flowkernels.compat import trellis2 as T2
from flowkernels.compat.trellis_train import TrainingTerms
from flowkernels.reference import trellis as ref
from conftest import FakeSparse
from conftest import ToyDenoiser as Denoiser
from helpers import DEVICE, assert_close

BACKENDS = ["triton", "torch", "native"] if DEVICE == "cpu" else ["triton"]


def assert_terms_match(terms, expected, tol=1e-5):
    assert isinstance(terms, TrainingTerms) and terms._pending is not None, "bins must stay on the device"
    assert_close("loss", terms["loss"].detach(), expected["loss"].detach(), tol)
    assert terms["mse"] is terms["loss"]
    assert sorted(terms.keys()) == sorted(expected.keys())  # the same bins received samples
    for k, v in expected.items():
        if k.startswith("bin_"):
            got, want = float(terms[k]["mse"]), float(v["mse"])
            assert (got != got and want != want) or abs(got - want) <= tol * max(1.0, abs(want)), (k, got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B", [1, 5, 16])
def test_dense_matches_original(backend, B):
    model = Denoiser().to(DEVICE)
    x0 = torch.randn(B, 3, 7, 8, device=DEVICE)
    t = torch.rand(B, device=DEVICE)
    t[0] = 0.3  # a value on a bin edge in float64 but not in float32
    noise = torch.randn_like(x0)
    terms, status = T1.training_losses(model, x0, None, t=t, noise=noise, backend=backend)
    expected, _ = ref.dense_training_losses(model, x0, t, noise)
    assert status == {}
    assert_terms_match(terms, expected)
    # gradients reach the model as through the original loss
    g = torch.autograd.grad(terms["loss"], list(model.parameters()))
    g_ref = torch.autograd.grad(expected["loss"], list(model.parameters()))
    for a, b in zip(g, g_ref):
        assert_close("grad", a, b, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows", [[4, 1, 0, 9], [1], [30, 2, 17, 5, 1, 8, 3, 12]], ids=["empty", "one", "eight"])
def test_sparse_matches_original(backend, rows):
    model = Denoiser().to(DEVICE)
    offsets = torch.tensor([0] + torch.tensor(rows).cumsum(0).tolist(), device=DEVICE)
    feats = torch.randn(sum(rows), 8, device=DEVICE)
    t, noise = torch.rand(len(rows), device=DEVICE), torch.randn(sum(rows), 8, device=DEVICE)
    layout = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
    terms, _ = T1.training_losses(model, FakeSparse(feats, layout), None, t=t, noise=FakeSparse(noise, layout),
                                  backend=backend)
    expected, _ = ref.sparse_training_losses(model, feats, offsets, t, noise)
    assert_terms_match(terms, expected)
    g = torch.autograd.grad(terms["loss"], list(model.parameters()))
    g_ref = torch.autograd.grad(expected["loss"], list(model.parameters()))
    for a, b in zip(g, g_ref):
        assert_close("grad", a, b, 1e-5)
    # plain feats + offsets give the same
    terms2, _ = T1.training_losses(model, feats, None, t=t, noise=noise, offsets=offsets, backend=backend)
    assert_close("loss", terms2["loss"].detach(), terms["loss"].detach(), 1e-6)


def test_sparse_loss_function_reductions():
    offsets = torch.tensor([0, 3, 3, 8], device=DEVICE)
    pred, feats, noise = (torch.randn(8, 4, device=DEVICE) for _ in range(3))
    t = torch.rand(3, device=DEVICE)
    target = (1 - 1e-5) * noise - feats
    per = fk.flow_matching_loss(pred, feats, t, noise, convention="trellis", offsets=offsets)
    assert_close("sample 0", per[0], ((pred[:3] - target[:3]) ** 2).mean(), 1e-6)
    assert torch.isnan(per[1])  # no rows: NaN, as torch's mean of nothing
    mean = fk.flow_matching_loss(pred, feats, t, noise, convention="trellis", offsets=offsets, reduction="mean")
    assert_close("mean", mean, ((pred - target) ** 2).mean(), 1e-6)
    # strided (transposed) pred, data and noise give the same numbers on every backend
    for backend in BACKENDS:
        strided = [z.t().contiguous().t() for z in (pred, feats, noise)]
        assert not strided[0].is_contiguous()
        again = fk.flow_matching_loss(*strided[:2], t, strided[2], convention="trellis", offsets=offsets,
                                      reduction="mean", backend=backend)
        assert_close("strided mean", again, mean, 1e-6)
        xt = fk.flow_interpolate(strided[1], t, strided[2], convention="trellis", offsets=offsets, backend=backend)
        assert_close("strided x_t", xt, fk.flow_interpolate(feats, t, noise, convention="trellis", offsets=offsets,
                                                            backend=backend), 1e-6)


@pytest.mark.parametrize("schedule", [None, {"name": "uniform"}, {"name": "logitNormal", "args": {"mean": 1.0,
                                                                                                   "std": 1.0}}],
                         ids=["default", "uniform", "logitNormal"])
def test_schedules_draw_on_device_and_train(schedule):
    model = Denoiser().to(DEVICE)
    x0 = torch.randn(64, 2, 8, device=DEVICE)
    terms, _ = T1.training_losses(model, x0, t_schedule=schedule)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and model.lin.weight.grad is not None
    n = sum(1 for k in terms if k.startswith("bin_"))
    assert 1 <= n <= 10
    with pytest.raises(ValueError, match="t_schedule"):
        T1.training_losses(model, x0, t_schedule={"name": "cosine"})


def test_mixin_and_trellis2_variant():
    class FlowMatchingTrainer:  # the parts of TRELLIS's trainer the mixin uses
        def __init__(self):
            self.training_models = {"denoiser": Denoiser().to(DEVICE)}
            self.sigma_min = 1e-5
            self.t_schedule = {"name": "uniform"}

        def get_cond(self, cond, **kw):
            return cond

    class Trainer(T1.FlowMatchingLossMixin, FlowMatchingTrainer):
        pass

    class Trainer2(T2.FlowMatchingLossMixin, FlowMatchingTrainer):
        pass
    x0 = torch.randn(4, 3, 8, device=DEVICE)
    t, noise = torch.rand(4, device=DEVICE), torch.randn(4, 3, 8, device=DEVICE)
    trainer = Trainer()
    terms, _ = trainer.training_losses(x0, t=t, noise=noise)
    expected, _ = ref.dense_training_losses(trainer.training_models["denoiser"], x0, t, noise)
    assert_terms_match(terms, expected)
    terms2, _ = Trainer2().training_losses(x0, t=t, noise=noise)  # bf16 autocast denoiser, fp32 loss
    assert terms2["loss"].dtype == torch.float32 and torch.isfinite(terms2["loss"])


def test_bad_offsets_named():
    model = Denoiser().to(DEVICE)
    feats = torch.randn(10, 8, device=DEVICE)
    for bad in (torch.tensor([0, 4, 9], device=DEVICE), torch.tensor([0, 6, 4, 10], device=DEVICE),
                torch.tensor([1, 10], device=DEVICE), torch.tensor([[0, 10]], device=DEVICE),
                torch.tensor([0.0, 10.0], device=DEVICE)):
        with pytest.raises(ValueError, match="offsets"):
            T1.training_losses(model, feats, t=torch.rand(bad.numel() - 1 if bad.dim() == 1 else 1, device=DEVICE),
                               offsets=bad)
    with pytest.raises(ValueError, match="t must hold one value per sample"):
        T1.training_losses(model, feats, t=torch.rand(3, device=DEVICE), offsets=torch.tensor([0, 4, 10],
                                                                                              device=DEVICE))


def test_time_bin_stats_host_and_device_versions_agree():
    import numpy as np
    """The CPU version (Python numbers) and the tensor version bin and sum alike: edges, t = 0 and 1, NaN MSEs."""
    from flowkernels.compat import trellis_train as tt
    t = torch.cat([torch.rand(40), torch.tensor([0.0, 1.0, 0.1, 0.3, 0.7, 0.9999999])])
    mse = torch.rand(t.numel())
    mse[3] = float("nan")
    host = tt._time_bin_stats_host(t, mse)
    device = tt._time_bin_stats_device(t, mse)
    assert torch.equal(host[1], device[1])
    assert torch.equal(host[0].isnan(), device[0].isnan())
    keep = ~device[0].isnan()
    torch.testing.assert_close(host[0][keep], device[0][keep], rtol=1e-15, atol=0)
    want = np.digitize(t.numpy(), np.linspace(0, 1, 11)) - 1
    assert host[1].tolist() == [int((want == i).sum()) for i in range(10)]
