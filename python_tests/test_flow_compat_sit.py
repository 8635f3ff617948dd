"""compat.sit against a plainly written SiT Transport.training_losses, plus compile / opcheck / DDP."""
import os
import tempfile

import pytest
import torch

import flowkernels as fk
from flowkernels import flow_algebra as fa
from flowkernels.compat.sit import create_transport
from flowkernels.ops.flow_interpolate import flow_interpolate_op
from flowkernels.ops.flow_loss import flow_loss_op, scale_rows_op
from flowkernels.reference.sit_transport import create_original_transport
from conftest import ToyTransportModel as TinyModel
from helpers import DEVICE, assert_close

COMBOS = [(p, "velocity", None) for p in ("Linear", "GVP", "VP")] + [
    (p, pred, w) for p in ("Linear", "GVP", "VP") for pred in ("noise", "score") for w in (None, "velocity",
                                                                                           "likelihood")]


def original_training_losses(transport_args, model, x1, t, x0, model_kwargs):
    """SiT's training_losses in its own call sequence (reference.sit_transport) for a given t and noise: its
    sample() hands them over instead of drawing, as a user reproducing a draw would patch it."""
    original = create_original_transport(*transport_args)
    original.sample = lambda x: (t, x0, x)
    terms = original.training_losses(model, x1, model_kwargs)
    return terms["loss"], terms["pred"]


@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(str(c) for c in combo) for combo in COMBOS])
def test_training_losses_match_original(combo):
    path, prediction, loss_weight = combo
    transport = create_transport(path, prediction, loss_weight, backend="triton")
    x1 = torch.randn(6, 5, 8, device=DEVICE)
    t0, t1 = transport.check_interval(transport.train_eps, transport.sample_eps)
    t = torch.rand(6, device=DEVICE) * (t1 - t0) * 0.9 + t0 + 0.05 * (t1 - t0)
    x0 = torch.randn_like(x1)
    model = TinyModel().to(DEVICE)
    ours = transport.training_losses(model, x1, {"scale": 0.7}, t=t, noise=x0)
    assert set(ours) == {"loss", "pred"} and ours["loss"].shape == (6,)
    grads = torch.autograd.grad(ours["loss"].mean(), list(model.parameters()))
    theirs, out = original_training_losses(combo, model, x1, t, x0, {"scale": 0.7})
    want = torch.autograd.grad(theirs.mean(), list(model.parameters()))
    assert_close("loss", ours["loss"], theirs, 2e-6)
    assert_close("pred", ours["pred"], out, 1e-6)  # x_t differs by fp32 rounding of the coefficients
    for g, w in zip(grads, want):
        assert_close("param grad", g, w, 2e-5)


def test_intervals_and_defaults_match_original():
    assert create_transport().check_interval(0, 0) == (0.0, 1.0)
    vp = create_transport("VP")
    assert vp.train_eps == 1e-5 and vp.check_interval(vp.train_eps, vp.sample_eps) == (0.0, 1 - 1e-5)
    noise = create_transport("Linear", "noise")
    assert noise.train_eps == 1e-3 and noise.check_interval(1e-3, 1e-3) == (1e-3, 1 - 1e-3)
    assert create_transport("GVP", "score", train_eps=1e-2).sample_eps == 1e-3      # fixed default
    assert create_transport("GVP", "score", train_eps=1e-2, bug_compatible=True).sample_eps is None


@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(str(c) for c in combo) for combo in COMBOS])
def test_eps_defaults_and_interval_as_the_original(combo):
    """create_transport resolves train_eps / sample_eps as the original (bug_compatible: sample_eps left None where
    the original leaves it), and both give the same training interval."""
    for train_eps in (None, 0.02):
        ours = create_transport(*combo, train_eps=train_eps, bug_compatible=True)
        theirs = create_original_transport(*combo, train_eps=train_eps)
        assert (ours.train_eps, ours.sample_eps) == (theirs.train_eps, theirs.sample_eps), (combo, train_eps)
        assert ours.check_interval(ours.train_eps, ours.sample_eps) == \
            theirs.check_interval(theirs.train_eps, theirs.sample_eps)


SAMPLE_CASES = [("Linear", "velocity", "uniform", 1.0), ("Linear", "noise", "uniform", 1.0),
                ("VP", "velocity", "uniform", 1.0), ("GVP", "score", "logit_normal", 4.0),
                ("Linear", "velocity", "logit_normal", 1.0), ("VP", "noise", "logit_normal", 2.5)]


@pytest.mark.parametrize("path,prediction,sampler,shift", SAMPLE_CASES,
                         ids=["-".join(map(str, c)) for c in SAMPLE_CASES])
def test_sample_draws_what_the_original_draws(path, prediction, sampler, shift):
    """transport.sample(x1) from the same torch seed draws the original's x0 (the same bits) and t on the CPU: the
    same ops for the uniform sampler (the same bits), sigmoid for its 1 / (1 + exp(-t)) for the logit-normal one,
    which, as the original, is not mapped into the training interval [t0, t1]."""
    seed = torch.initial_seed()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x1 = torch.randn(7, 5, 3, dtype=dtype)
        kwargs = dict(train_sample_type=sampler, mean=0.3, std=1.4, shift_scale=shift)
        ours = create_transport(path, prediction, **kwargs)
        theirs = create_original_transport(path, prediction, **kwargs)
        torch.manual_seed(seed)
        t, x0, same = ours.sample(x1)
        torch.manual_seed(seed)
        t_want, x0_want, _ = theirs.sample(x1)
        assert same is x1 and torch.equal(x0, x0_want) and t.dtype == t_want.dtype == dtype, (seed, dtype)
        if sampler == "uniform":
            assert torch.equal(t, t_want), (seed, dtype)
        elif dtype == torch.bfloat16:  # the original rounds to bf16 at each of its eight ops, ours once at the end
            torch.testing.assert_close(t, t_want, rtol=0, atol=4 * 2.0 ** -8, msg=f"seed {seed}")
        else:
            assert_close("t", t, t_want, 1e-6)


def test_draws_its_own_t_and_noise():
    transport = create_transport("Linear", train_sample_type="logit_normal", shift_scale=4.0, backend="triton")
    model = TinyModel().to(DEVICE)
    x1 = torch.randn(4, 3, 8, device=DEVICE)
    torch.manual_seed(0)
    a = transport.training_losses(model, x1)["loss"]
    torch.manual_seed(0)
    b = transport.training_losses(model, x1)["loss"]
    assert torch.isfinite(a).all() and torch.equal(a, b)
    t, x0, same = transport.sample(x1)
    assert same is x1 and x0.shape == x1.shape and t.shape == (4,) and ((t >= 0) & (t <= 1)).all()


def test_create_transport_rejects_unknown_names():
    for kwargs, name in [({"path_type": "Cosine"}, "path_type"), ({"prediction": "x0"}, "prediction"),
                         ({"loss_weight": "snr"}, "loss_weight"), ({"train_sample_type": "beta"}, "train_sample_type")]:
        with pytest.raises(ValueError, match=name):
            create_transport(**kwargs)


def test_sample_time_samplers():
    g = torch.Generator(device=DEVICE).manual_seed(3)
    t = fk.sample_time(20000, sampler="uniform", t0=0.1, t1=0.4, generator=g)
    assert t.device.type == torch.device(DEVICE).type and 0.1 <= t.min() and t.max() <= 0.4
    z = torch.logit(fk.sample_time(20000, sampler="logit_normal", mean=1.0, std=0.5, generator=g).double())
    assert abs(z.mean().item() - 1.0) < 0.03 and abs(z.std().item() - 0.5) < 0.03
    base = fk.sample_time(20000, sampler="logit_normal", generator=g).mean()
    assert fk.sample_time(20000, sampler="logit_normal", shift=3.0, generator=g).mean() > base + 0.1
    # mode: the formula applied to the same uniform draw
    u = torch.rand(64, generator=torch.Generator(device=DEVICE).manual_seed(9), device=DEVICE)
    want = 1 - u - 1.29 * (torch.cos(torch.pi * u / 2) ** 2 - 1 + u)
    got = fk.sample_time(64, sampler="mode", generator=torch.Generator(device=DEVICE).manual_seed(9))
    assert_close("mode", got, want, 1e-6)
    # SD3 shift: s' = k s / (1 + (k - 1) s); SiT: r = sqrt(k)
    s = fk.sample_time(64, generator=torch.Generator(device=DEVICE).manual_seed(2))
    s3 = fk.sample_time(64, shift=3.0, shift_sense="sd3", generator=torch.Generator(device=DEVICE).manual_seed(2))
    assert_close("sd3 shift", s3, 3 * s / (1 + 2 * s), 1e-6)
    with pytest.raises(ValueError, match="sampler"):
        fk.sample_time(4, sampler="beta")
    with pytest.raises(ValueError, match="shift"):
        fk.sample_time(4, shift=0.0)


@pytest.mark.parametrize("backend", ["torch", "triton", "native"])
def test_opcheck(backend):
    x1 = torch.randn(3, 4, 5, device=DEVICE)
    t = torch.rand(3, device=DEVICE)
    pred = torch.randn(3, 4, 5, device=DEVICE, requires_grad=True)
    seed = torch.tensor(7)
    sit_velocity = dict(scheme=fa.SIT_LINEAR, prediction=fa.VELOCITY, sigma_min=0.0)
    torch.library.opcheck(flow_loss_op, (pred, x1, None, t, None, seed, None),
                          dict(sit_velocity, weighting=fa.W_NONE, compute_grad=True, backend=backend))
    vp_score = dict(scheme=fa.SIT_VP, prediction=fa.SCORE, weighting=fa.W_VELOCITY, sigma_min=0.0)
    torch.library.opcheck(flow_loss_op, (pred, x1, torch.randn_like(x1), t, t + 1, None, None),
                          dict(vp_score, compute_grad=True, backend=backend))
    torch.library.opcheck(flow_interpolate_op, (x1, None, t, seed, None),
                          dict(sit_velocity, write_target=True, out_dtype=torch.float32, backend=backend))
    torch.library.opcheck(scale_rows_op, (torch.randn(3, 4, 5, device=DEVICE), t, None, backend, torch.bfloat16))
    # ragged rows (sparse latents): 3 samples over 7 rows, one of them empty
    offsets = torch.tensor([0, 4, 4, 7], device=DEVICE)
    feats = torch.randn(7, 8, device=DEVICE)
    pred_r = torch.randn(7, 8, device=DEVICE, requires_grad=True)
    trellis = dict(scheme=fa.RECTIFIED, prediction=fa.VELOCITY, sigma_min=fa.TRELLIS_SIGMA_MIN)
    torch.library.opcheck(flow_loss_op, (pred_r, feats, None, t, None, seed, offsets),
                          dict(trellis, weighting=fa.W_NONE, compute_grad=True, backend=backend))
    torch.library.opcheck(flow_interpolate_op, (feats, None, t, seed, offsets),
                          dict(trellis, write_target=False, out_dtype=torch.float32, backend=backend))
    torch.library.opcheck(scale_rows_op, (torch.randn(7, 8, device=DEVICE), t, offsets, backend, torch.float32))


def test_torch_compile_fullgraph_training_step():
    model = TinyModel().to(DEVICE)
    x1 = torch.randn(4, 6, 8, device=DEVICE)
    t = torch.rand(4, device=DEVICE) * 0.9 + 0.05
    seed = torch.tensor(11)

    def step(x1, t, seed):
        xt = fk.flow_interpolate(x1, t, seed=seed, backend="triton")
        out = model(xt, t)
        return fk.flow_matching_loss(out, x1, t, seed=seed, backend="triton", reduction="mean")

    eager = step(x1, t, seed)
    eager.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(x1, t, seed)
    got.backward()  # AOT autograd traced the backward (scale_rows) into its own graph
    assert_close("compiled loss", got, eager, 1e-6)
    for p, g in zip(model.parameters(), eager_grads):
        assert_close("compiled grad", p.grad, g, 1e-6)
    model.zero_grad()
    compiled(x1, t, torch.tensor(12)).backward()  # a new seed must not recompile into a wrong constant
    assert not torch.equal(model.lin.weight.grad, eager_grads[0])


def _ddp_worker(rank, world, path, x1, t, x0, state):
    torch.distributed.init_process_group("gloo", init_method=f"file://{path}.init", rank=rank, world_size=world)
    model = TinyModel()
    model.load_state_dict(state)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    transport = create_transport("GVP", "noise", "likelihood", backend="triton")
    half = x1.shape[0] // world
    sl = slice(rank * half, (rank + 1) * half)
    loss = transport.training_losses(ddp, x1[sl], t=t[sl], noise=x0[sl])["loss"].mean()
    loss.backward()
    if rank == 0:
        torch.save([p.grad for p in model.parameters()], path + ".grads")
    torch.distributed.barrier()  # no rank tears gloo down while another still uses it
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_ddp_two_processes_match_single_process():
    x1, x0 = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    t = torch.rand(4) * 0.9 + 0.05
    model = TinyModel()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    transport = create_transport("GVP", "noise", "likelihood", backend="triton")
    transport.training_losses(model, x1, t=t, noise=x0)["loss"].mean().backward()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ddp")
        torch.multiprocessing.spawn(_ddp_worker, args=(2, path, x1, t, x0, state), nprocs=2)
        grads = torch.load(path + ".grads")
    for p, g in zip(model.parameters(), grads):
        assert_close("ddp grad", g, p.grad, 1e-5)
