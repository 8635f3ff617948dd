"""How the native CPU flow kernels use threads: on the OpenMP runtime torch itself uses (one runtime in the
process), or on their own pool; results equal bit for bit whatever the thread count and whichever of the two."""
import sys

import pytest
import torch

import flowkernels as fk
from flowkernels._native import load as native
from flowkernels.ops import native_cpu
from flowkernels.sampling import guided_step, step_coefficients

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU kernels: runs where CI runs, on CPU")

# 5 x 3 x 31337 = 470055 elements: three items per thread at most, and 2 (3) threads join from 2 (3) x 2^17
SHAPE = (5, 3, 31337)


def _loaded_openmp_runtimes():
    """Distinct files of OpenMP runtimes mapped into this process (GNU, LLVM, Intel)."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "/" in line}
    return sorted(p for p in paths if p.rsplit("/", 1)[-1].startswith(("libgomp", "libomp.", "libiomp5")))


_ONE_RUNTIME_PROBE = """
import json, torch, flowkernels as fk
from flowkernels.ops import native_cpu
x = torch.randn(2, 3, 70001)
fk.flow_interpolate(x, torch.rand(2), torch.randn_like(x))   # the first native call decides the thread source
with open("/proc/self/maps") as f:
    paths = sorted({l.split()[-1] for l in f if "/" in l})
runtimes = [p for p in paths if p.rsplit("/", 1)[-1].startswith(("libgomp", "libomp.", "libiomp5"))]
print(json.dumps({"runtimes": runtimes, "info": fk._native.load().flow_threading()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_one_openmp_runtime_shared_with_torch():
    """In a process with torch and flowkernels alone (a fresh interpreter: the test process has loaded other
    wheels' renamed libgomp copies, which rightly make the kernels fall back to their own pool), the extension's
    libgomp.so.1 is torch's: one file, and the kernels run on it."""
    import json
    import subprocess

    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("this torch does not run its CPU ops on OpenMP")
    if not native().flow_threading()["openmp_built"]:
        pytest.skip("the extension was built without OpenMP (FLOWKERNELS_OPENMP=OFF or no compiler support)")
    out = subprocess.run([sys.executable, "-c", _ONE_RUNTIME_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    print("OpenMP runtimes:", probe)
    assert len(probe["runtimes"]) == 1, f"more than one OpenMP runtime loaded: {probe['runtimes']}"
    assert probe["info"]["openmp_runtimes"] == 1 and probe["info"]["uses_openmp"]


def _thread_modes():
    modes = [False]
    if native().flow_threading()["openmp_runtimes"] == 1 and native().flow_threading()["openmp_built"]:
        modes.append(True)
    return modes


def _run_all(dtype, ragged):
    """Every native flow kernel on fixed inputs: a list of result tensors."""
    gen = torch.Generator().manual_seed(7)
    if ragged:
        rows = torch.tensor([0, 90001, 5, 70000, 1])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
        shape, kw = (int(rows.sum()), 3), dict(offsets=offsets, convention="trellis")
        B = rows.numel()
    else:
        offsets, shape, kw, B = None, SHAPE, {}, SHAPE[0]
    x1 = torch.randn(shape, generator=gen).to(dtype)
    noise = torch.randn(shape, generator=gen).to(dtype)
    pred = torch.randn(shape, generator=gen).to(dtype).requires_grad_(True)
    t = torch.rand(B, generator=gen) * 0.9 + 0.05
    out = [fk.flow_interpolate(x1, t, noise, return_target=True, **kw)[1],
           fk.flow_interpolate(x1, t, seed=12345, **kw)]
    loss = fk.flow_matching_loss(pred, x1, t, seed=12345, reduction="mean", **kw)
    loss.backward()
    out += [loss.detach(), pred.grad.clone()]
    pred.grad = None
    per_sample = fk.flow_matching_loss(pred, x1, t, noise, weighting=None, **kw)
    per_sample.sum().backward()
    out += [per_sample.detach(), pred.grad.clone()]
    c, u, h = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
    x = torch.randn(shape, generator=gen)
    coef = torch.tensor(step_coefficients(-0.05, 3.0, -2.0, 1 - 1e-5, -0.7, 0.02))
    nxt, x0, v = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    model_in = torch.empty((2 * shape[0],) + shape[1:], dtype=dtype)
    guided_step(x, c, u, coef, out=nxt, h=h.float(), model_in=model_in, x0=x0, v_out=v, offsets=offsets,
                rescale=0.7)
    out += [nxt, model_in, x0, v, native_cpu.philox_normals(99, (1 << 19) + 3, first=2**33 + 1)]
    return out


@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_results_do_not_depend_on_threads(dtype, ragged):
    threads = torch.get_num_threads()
    want = None
    try:
        for openmp in _thread_modes():
            assert native().set_flow_openmp(openmp) == openmp
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                native().set_flow_openmp(openmp)  # clears the back-off of a loaded machine: threads join again
                got = _run_all(dtype, ragged)
                if want is None:
                    want = got
                    continue
                for i, (a, b) in enumerate(zip(got, want)):
                    assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), \
                        f"result {i} differs with {n} threads, {'OpenMP' if openmp else 'own pool'}"
    finally:
        torch.set_num_threads(threads)
        native().set_flow_openmp(True)


def test_inside_a_torch_parallel_region_and_between_torch_ops():
    """Kernel calls interleaved with torch's own parallel ops (the sampling loop's pattern), from a second Python
    thread too: no hang, the same bits."""
    import threading
    x = torch.randn(SHAPE)
    c, u = torch.randn(SHAPE), torch.randn(SHAPE)
    coef = torch.tensor(step_coefficients(0.02, 5.0, -4.0))
    want = torch.empty_like(x)
    guided_step(x, c, u, coef, out=want)
    results = []

    def loop():
        out = torch.empty_like(x)
        for _ in range(20):
            (c * 2).add_(u)  # a torch parallel op, then ours on the same (hot) threads
            guided_step(x, c, u, coef, out=out)
            results.append(torch.equal(out, want))

    th = threading.Thread(target=loop)
    th.start()
    loop()
    th.join(timeout=120)
    assert not th.is_alive() and len(results) == 40 and all(results)


FORK_SCRIPT = r"""
import os, numpy as np, torch
import flowkernels as fk
from flowkernels._native import load
x1 = torch.randn(8, 1 << 17); t = torch.rand(8); n = torch.randn_like(x1)
want = fk.flow_interpolate(x1, t, n).numpy().copy()   # 2 threads in the parent: OpenMP's pool is started
want2 = fk.flow_interpolate(x1, t, seed=3).numpy().copy()
pid = os.fork()
if pid == 0:  # no torch parallel op here: those wait forever in a child of an OpenMP parent
    info = load().flow_threading()
    ok = np.array_equal(fk.flow_interpolate(x1, t, n).numpy(), want)
    ok = ok and np.array_equal(fk.flow_interpolate(x1, t, seed=3).numpy(), want2)
    os._exit(0 if ok and not info["uses_openmp"] else 3)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_forked_child_runs_the_kernels_on_its_own_pool():
    """GNU libgomp's threads do not survive fork(): a forked child's kernels use the extension's own pool (2
    threads, the same bits) instead of waiting forever for the parent's OpenMP workers."""
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", FORK_SCRIPT], env=env, timeout=120, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
