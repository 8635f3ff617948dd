"""The native CPU flow kernels (csrc/flow/): against the float64 references, against the torch path, and the noise
stream against the Triton kernels run by the interpreter, bit for bit."""
import pytest
import torch
import triton
import triton.language as tl

import flowkernels as fk
from flowkernels import flow_algebra as fa
from flowkernels.ops import native_cpu
from flowkernels.ops.philox_normal import normal_quads
from flowkernels.sampling import guidance_rescale_factor, guided_step, step_coefficients
from helpers import DTYPES, assert_2x_rule, assert_close
from test_flow_loss import CASE_IDS, CASES, DTYPE_MIX, kernel_kwargs, loss_and_grad, make_inputs, reference_loss

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU kernels: runs where CI runs, on CPU")


@triton.jit
def _normals_kernel(out_ptr, seed, first, QUADS: tl.constexpr):
    n = normal_quads(seed, first, QUADS)
    offs = tl.arange(0, QUADS)[:, None] * 4 + tl.arange(0, 4)[None, :]
    tl.store(out_ptr + offs, n)


def _triton_normals(seed, first, quads):
    out = torch.full((4 * quads,), float("nan"))
    _normals_kernel[(1,)](out, seed, first, QUADS=quads)
    return out


def _bits_equal(a, b):
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


# element offsets: the start, around 2^31 and 2^32 elements (where int32 offsets would wrap), and far beyond
FIRSTS = [0, 2**31 - 512, 2**32 - 256, 3 * 2**33 + 4096, 2**46 + 8]


def test_noise_stream_matches_triton_bit_for_bit():
    gen = torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
    seeds = [0, 1, 2**32 - 1, 2**32, 2**63 - 1] + torch.randint(0, 2**62, (7,), generator=gen).tolist()
    for i, seed in enumerate(seeds):
        first = FIRSTS[i % len(FIRSTS)] + 4 * int(torch.randint(0, 1024, (), generator=gen))
        want = _triton_normals(seed, first, 512)
        got = native_cpu.philox_normals(seed, (4 * 512,), first)
        assert _bits_equal(got, want), f"seed {seed}, first {first}: {(got != want).sum()} of 2048 differ"
        # any start and length, as the CPU kernels draw them per tile
        lo, n = 1 + i % 3, 1000 + i
        assert _bits_equal(native_cpu.philox_normals(seed, (n,), first + lo), want[lo:lo + n])


def test_every_compiled_noise_version_draws_the_same_bits():
    """The noise loop is compiled per instruction set (baseline, AVX2 + FMA, AVX-512) and the CPU's best one runs:
    each version this machine can run gives the Triton stream's bits, whole blocks and ragged ends alike."""
    gen = torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
    ran = []
    for level, name in native_cpu.NOISE_LEVELS.items():
        for i in range(3):
            seed = int(torch.randint(0, 2**62, (), generator=gen))
            first = FIRSTS[(i + level) % len(FIRSTS)] + 4 * int(torch.randint(0, 1024, (), generator=gen))
            want = _triton_normals(seed, first, 512)
            lo, n = 1 + i, 4 * 512 - 1 - 2 * i  # off the 4-element quads at both ends
            got = native_cpu.philox_normals_at(level, seed, n, first + lo)
            if got is None:
                break
            assert _bits_equal(got, want[lo:lo + n]), f"{name}: seed {seed}, first {first + lo}"
        else:
            ran.append(name)
    assert "baseline" in ran  # every build has it; the others where the CPU has the instructions
    assert torch.equal(native_cpu.philox_normals(5, (999,), 3), native_cpu.philox_normals_at(max(
        level for level, name in native_cpu.NOISE_LEVELS.items() if name in ran), 5, 999, 3))
    print("noise versions checked:", ran)


def test_noise_is_standard_normal():
    x = native_cpu.philox_normals(torch.randint(0, 2**62, ()).item(), (1 << 20,)).double()
    assert abs(x.mean().item()) < 0.006 and abs(x.var().item() - 1) < 0.009  # 6 standard errors
    beyond = (x.abs() > 3).double().mean().item()  # P(|N| > 3) = 0.0027
    assert abs(beyond - 0.0027) < 0.0004
    assert x.abs().max().item() < 6.57  # the stream's largest radius is sqrt(62 ln 2)


@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
def test_seeded_ops_match_triton(ragged):
    seed = torch.randint(0, 2**62, ()).item()
    if ragged:
        rows = torch.tensor([3, 0, 7, 1, 5])  # row size 3: samples start at flat indices off the 4-element quads
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
        x1, kw = torch.randn(int(rows.sum()), 3), dict(offsets=offsets, convention="trellis")
    else:
        x1, kw = torch.randn(3, 5, 67), {}
    B = 5 if ragged else 3
    t, pred = torch.rand(B) * 0.9 + 0.05, torch.randn_like(x1)
    got = fk.flow_interpolate(x1, t, seed=seed, return_target=True, backend="native", **kw)
    want = fk.flow_interpolate(x1, t, seed=seed, return_target=True, backend="triton", **kw)
    assert _bits_equal(got[0], want[0]) and _bits_equal(got[1], want[1])
    kw["reduction"] = "mean" if ragged else "none"  # ragged "none" and "sum": NaN for the sample without rows
    assert_close("seeded loss", fk.flow_matching_loss(pred, x1, t, seed=seed, backend="native", **kw),
                 fk.flow_matching_loss(pred, x1, t, seed=seed, backend="triton", **kw), 1e-6)
    del kw["reduction"]
    # the torch path draws the same stream
    assert _bits_equal(fk.flow_interpolate(x1, t, seed=seed, backend="torch", **kw), got[0])


@pytest.mark.parametrize("dtypes", list(DTYPE_MIX), ids=list(DTYPE_MIX))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_loss_matches_reference(case, dtypes):
    pred_dtype, data_dtype = DTYPE_MIX[dtypes]
    pred, x1, noise, t = make_inputs((5, 37, 11), pred_dtype, data_dtype)
    weight = torch.rand(5) + 0.5
    do = torch.randn(5)
    loss, grad = loss_and_grad(lambda p: fk.flow_matching_loss(p, x1, t, noise, weight=weight, backend="native",
                                                               **kernel_kwargs(case)), pred, do)
    ref64 = loss_and_grad(lambda p: reference_loss(case, p.double(), x1.double(), noise.double(), t.double())
                          * weight.double(), pred, do)
    ref32 = loss_and_grad(lambda p: reference_loss(case, p.float(), x1.float(), noise.float(), t.float()) * weight,
                          pred, do)
    assert loss.dtype == torch.float32 and grad.dtype == pred_dtype
    assert_2x_rule("loss", loss, ref32[0], ref64[0])
    floor = 2.0**-22 if pred_dtype == torch.float32 else 2 * torch.finfo(pred_dtype).eps
    assert_2x_rule("grad", grad, ref32[1], ref64[1], floor=floor)


@pytest.mark.parametrize("case", [c for c in CASES if c[3] is None], ids=[i for c, i in zip(CASES, CASE_IDS)
                                                                          if c[3] is None])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_matches_torch_path(case, dtype):
    """Same arithmetic in the same order as the torch path: equal up to the sum's order."""
    pred, x1, noise, t = make_inputs((4, 3, 29), DTYPES[dtype], DTYPES[dtype])
    prediction = case[2] if case[2] in ("velocity", "data") else "velocity"
    kw = dict(convention=case[0], path=case[1], prediction=prediction)
    native = fk.flow_interpolate(x1, t, noise, return_target=True, backend="native", **kw)
    torch_path = fk.flow_interpolate(x1, t, noise, return_target=True, backend="torch", **kw)
    for name, a, b in zip(("x_t", "target"), native, torch_path):
        assert a.dtype == b.dtype == x1.dtype
        assert_close(name, a, b, 2.0**-23 if dtype == "fp32" else torch.finfo(a.dtype).eps)
    do = torch.randn(4)
    got = loss_and_grad(lambda p: fk.flow_matching_loss(p, x1, t, noise, backend="native", **kernel_kwargs(case)),
                        pred, do)
    want = loss_and_grad(lambda p: fk.flow_matching_loss(p, x1, t, noise, backend="torch", **kernel_kwargs(case)),
                         pred, do)
    assert_close("loss", got[0], want[0], 1e-6)
    assert_close("grad", got[1], want[1], 2.0**-23 if dtype == "fp32" else torch.finfo(pred.dtype).eps)


def test_ragged_matches_reference_and_threads_agree():
    # several 2^15-element items, an empty sample, > 2 x 2^19 elements (the size from which a second thread joins)
    rows = torch.tensor([300, 0, 7000, 1, 140000])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
    N, C = int(rows.sum()), 8
    pred, x1, noise = torch.randn(N, C), torch.randn(N, C), torch.randn(N, C)
    t = torch.rand(5)
    per_row = torch.repeat_interleave(t, rows).view(-1, 1).double()
    resid = pred.double() - ((1 - 1e-5) * noise.double() - x1.double())
    sums = torch.zeros(5, dtype=torch.float64).index_add_(0, torch.repeat_interleave(torch.arange(5), rows),
                                                         resid.square().sum(1))
    want = sums / (rows.double() * C)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(fk.flow_matching_loss(pred, x1, t, noise, offsets=offsets, convention="trellis",
                                                 backend="native"))
    finally:
        torch.set_num_threads(threads)
    keep = rows > 0  # a sample without rows has a NaN mean
    assert torch.equal(results[0][keep], results[1][keep]) and results[0][~keep].isnan().all()
    assert_close("ragged loss", results[0][keep], want[keep], 1e-6)
    xt = fk.flow_interpolate(x1, t, noise, offsets=offsets, convention="trellis", backend="native")
    assert_close("ragged x_t", xt, (1 - per_row) * x1.double() + (1e-5 + (1 - 1e-5) * per_row) * noise.double(),
                 1e-7)


def test_concurrent_callers_share_the_thread_pool():
    """Two Python threads calling large kernels at once (they release the GIL): one gets the worker pool, the other
    runs alone; both results equal the sequential ones, bit for bit."""
    import threading
    shape = (4, 160, 2048)  # 1.3M elements: the pool's size
    inputs = [make_inputs(shape, torch.float32, torch.float32) for _ in range(2)]
    want = [fk.flow_matching_loss(p, x1, t, n) for p, x1, n, t in inputs]
    got = [[], []]

    def worker(i):
        p, x1, n, t = inputs[i]
        for _ in range(5):
            got[i].append(fk.flow_matching_loss(p, x1, t, n))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in range(2):
        assert len(got[i]) == 5 and all(torch.equal(g, want[i]) for g in got[i])


def test_outputs_are_fully_written():
    poison = torch.full((6 * 3 * 4001,), float("nan"))
    del poison
    pred, x1, noise, t = make_inputs((6, 3, 4001), torch.float16, torch.float16)
    leaf = pred.requires_grad_(True)
    loss = fk.flow_matching_loss(leaf, x1, t, noise, backend="native")
    loss.sum().backward()
    xt, target = fk.flow_interpolate(x1, t, seed=3, return_target=True, backend="native")
    assert all(torch.isfinite(z).all() for z in (leaf.grad, loss, xt, target))


def _all_bit_patterns(dtype):
    return torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_16bit_conversions_match_torch(dtype):
    """Every 16-bit pattern read, and float32 values of every kind (subnormal, halfway, overflowing) written,
    through the guided step with dt = 0 (out = x + 0, so -0 comes out as +0) against torch's own conversions."""
    coef = torch.tensor(step_coefficients(0.0, 0.0, 0.0), dtype=torch.float32)
    x16 = _all_bit_patterns(dtype).view(1, -1)
    out = torch.empty(x16.shape)
    guided_step(x16, torch.zeros_like(x16), None, coef, out=out, backend="native")
    want = x16.float()
    assert torch.equal(out.isnan(), want.isnan()) and torch.equal(out[~want.isnan()], want[~want.isnan()])
    base = torch.randn(1 << 16) * torch.logspace(-9, 6, 1 << 16)  # down into fp16 subnormals, past fp16's max
    halfway = (_all_bit_patterns(dtype).float() + _all_bit_patterns(dtype).float().roll(1)) / 2
    specials = torch.tensor([0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65519.99, 65520.0,
                             2.0**-24, 2.0**-25, 3 * 2.0**-26, 1e-45])
    x32 = torch.cat([base, halfway[torch.isfinite(halfway)], specials]).view(1, -1)
    out16 = torch.empty(x32.shape, dtype=dtype)
    guided_step(x32, torch.zeros_like(x32), None, coef, out=out16, backend="native")
    want16 = x32.to(dtype)
    assert torch.equal(out16.isnan(), want16.isnan())
    assert torch.equal(out16[~want16.isnan()].view(torch.int16), want16[~want16.isnan()].view(torch.int16))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("formula,rescale,heun", [("cfg", 0.0, False), ("trellis", 0.0, True),
                                                  ("trellis2", 0.7, False)])
def test_guided_step_matches_torch_path_exactly(dtype, formula, rescale, heun):
    B, shape = 3, (3, 7, 53)
    x = torch.randn(shape)
    model_out = torch.randn((2 * B,) + shape[1:]).to(DTYPES[dtype])  # [cond; uncond], halves read in place
    a_c, a_u = fa.guidance_weights(formula, 4.0)
    coef = torch.tensor(step_coefficients(-0.02, a_c, a_u, 0.9, -0.35, 0.01 if heun else 0.0), dtype=torch.float32)
    h = torch.randn(shape) if heun else None
    outs = {}
    for backend in ("native", "torch"):
        k = guidance_rescale_factor(x, model_out[:B], model_out[B:], coef, rescale, backend=backend) \
            if rescale else None
        bufs = dict(out=torch.full(shape, float("nan")), model_in=torch.full((2 * B,) + shape[1:], float("nan")).to(
            DTYPES[dtype]), x0=torch.full(shape, float("nan")), v_out=torch.full(shape, float("nan")))
        guided_step(x, model_out[:B], model_out[B:], coef, rescale=rescale, h=h, backend=backend, **bufs)
        outs[backend] = (k,) + tuple(bufs.values())
    for name, a, b in zip(("k", "out", "model_in", "x0", "v"), outs["native"], outs["torch"]):
        if a is not None:
            assert torch.equal(a, b), name
    assert torch.isfinite(outs["native"][1]).all()


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("rescale,heun", [(0.0, False), (0.7, True)], ids=["plain", "rescale-heun"])
def test_ragged_guided_step_matches_torch_path(dtype, rescale, heun):
    """Sparse latents on the native step: k per sample from each sample's rows (an empty sample too), the kernel
    walking each sample's rows; the torch path's values up to the order of the float64 sums behind k."""
    rows = torch.tensor([37, 0, 5, 300])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
    N, C = int(rows.sum()), 6
    x = torch.randn(N, C)
    model_out = torch.randn(2 * N, C).to(DTYPES[dtype])  # [cond; uncond] rows
    coef = torch.tensor(step_coefficients(-0.05, 5.0, -4.0, 1 - 1e-5, -0.6, 0.01 if heun else 0.0),
                        dtype=torch.float32)
    h = torch.randn(N, C) if heun else None
    outs = {}
    for backend in ("native", "torch"):
        k = guidance_rescale_factor(x, model_out[:N], model_out[N:], coef, rescale, offsets=offsets,
                                    backend=backend) if rescale else None
        bufs = dict(out=torch.full((N, C), float("nan")), model_in=torch.full((2 * N, C), float("nan")).to(
            DTYPES[dtype]), x0=torch.full((N, C), float("nan")), v_out=torch.full((N, C), float("nan")))
        guided_step(x, model_out[:N], model_out[N:], coef, rescale=rescale, h=h, offsets=offsets, backend=backend,
                    **bufs)
        outs[backend] = (k,) + tuple(bufs.values())
    for name, a, b in zip(("k", "out", "model_in", "x0", "v"), outs["native"], outs["torch"]):
        if a is None:
            continue
        if name == "k":  # the empty sample's k is 0/0 on both paths
            keep = rows > 0
            assert a[~keep].isnan().all() and b[~keep].isnan().all()
            a, b = a[keep], b[keep]
        assert torch.isfinite(a).all(), name
        assert_close(name, a, b, 2.0**-23 if a.dtype == torch.float32 else torch.finfo(a.dtype).eps)


def test_native_backend_rejects_other_devices():
    x = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="backend='native'"):
        fk.flow_interpolate(x, torch.empty(2, device="meta"), seed=1, backend="native")
