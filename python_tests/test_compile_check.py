"""The compile check (Triton specializations compiled for sm_90/sm_80 without a GPU, nvcc for the CUDA sources)
and the launch properties it exists to hold: one compiled variant per configuration, vector loads, no zeros pass
in the loss backward, two launches per rescaled guided step."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import flowkernels as fk
from flowkernels import compile_cases as cc
from flowkernels import compile_check
from flowkernels.ops import _plan
from flowkernels.ops.flow_interpolate import interpolate_plan
from flowkernels.ops.flow_loss import loss_plan
from flowkernels.ops.guided_step import step_plan
from flowkernels.sampling import guided_step, step_coefficients

T = _plan.COMPILE_TARGET


def _gpu_env():
    """The compile check runs without the interpreter (the tests' process has TRITON_INTERPRET=1 on CPU)."""
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_representative_specializations_compile_clean(tmp_path):
    """`flowkernels compile-check`: every hot configuration compiles for sm_90 and sm_80 with no spills, within
    its register budget, with 128-bit loads where the rows allow them; the table and the JSON say so."""
    out = tmp_path / "cc.json"
    proc = subprocess.run([sys.executable, "-m", "flowkernels", "compile-check", "--arch", "90,80", "--no-cuda",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, env=_gpu_env())
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "regs" in proc.stdout and "v128 ld" in proc.stdout
    rows = json.loads(out.read_text())
    assert len(rows) == 2 * len(cc.representative_cases())
    assert all(r["ok"] and r["registers"] and r["spill_stores"] == 0 for r in rows)
    # TRELLIS's 8-channel sparse rows get 128-bit loads through the divisibility hint
    ragged = [r for r in rows if "ragged-aligned" in r["config"] and r["config"].startswith("pred=fp32")]
    assert ragged and all(r["v128_loads"] > 0 for r in ragged)


DETECTOR = """
import contextlib, io
from flowkernels import compile_cases as cc, compile_check
case = cc.step_case("fp32", "cond", align="odd")
case.wide_loads = True  # odd rows: no 128-bit loads are possible, so the check must fail it
res = compile_check.compile_case(case, 90)
print(res.ok, res.problems)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        compile_check.main(["--arch", "ninety"])
    except SystemExit as exc:
        print("exit", exc.code, err.getvalue().count(chr(10)), err.getvalue())
"""


def test_check_flags_missing_vector_loads_and_spills():
    """The detectors fail when they should: odd rows flagged as wide have no 128-bit loads; a ptxas log with
    spills or local memory fails."""
    proc = subprocess.run([sys.executable, "-c", DETECTOR], capture_output=True, text=True, timeout=600,
                          env=_gpu_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("False") and "128-bit" in proc.stdout
    # a bad argument: one line naming it, exit code 2, no traceback
    assert "exit 2 1 flowkernels compile-check: error: --arch=" in proc.stdout
    assert "Traceback" not in proc.stdout
    log = ("ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90'\n"
           "ptxas info    : Function properties for _Z1kPf\n"
           "    8 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 0 barriers, 8 bytes cumulative stack size\n"
           "ptxas info    : Compiling entry function '_Z2okPf' for 'sm_90'\n"
           "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 0 barriers, 1024 bytes smem\n")
    bad, good = compile_check.parse_ptxas(log, "x.cu", 90)
    assert not bad.ok and bad.registers == 255 and bad.spill_stores == 8
    assert good.ok and good.registers == 40 and good.shared == 1024


def test_occupancy_from_registers_block_size_and_shared_memory():
    """The per-SM arithmetic (registers allocated 256 per warp, warps in fours, 1 KiB of shared memory reserved
    per block), at the limits that decide it."""
    occ = compile_check.occupancy
    assert occ(64, 256, 0, 90) == 0.5              # 2048 registers a warp: 32 warps, 4 blocks of 8
    assert occ(65, 256, 0, 90) == 0.375            # 2304 a warp: 28 warps, 3 blocks
    assert occ(72, 256, 0, 90) == 0.375
    assert occ(32, 256, 0, 90) == 1.0
    assert occ(48, 128, 6200, 90) == 0.625         # 42 warps -> 40 by the warp granularity, 10 blocks of 4
    assert occ(32, 256, 60000, 90) == 0.375        # shared memory: 3 blocks of 59 KiB in 228 KiB
    assert occ(32, 256, 60000, 80) == 0.25         # 2 in sm_80's 164 KiB
    assert occ(16, 32, 0, 90) == 0.5               # the 32-block limit: 32 one-warp blocks
    assert occ(64, 256, 0, 75) is None             # an architecture without a table: unchecked


def test_cuda_check_fails_below_half_occupancy():
    """A CUDA kernel whose registers, block size or shared memory leave the SM less than half full fails the
    check, as does one of ours that declares no block size; a library kernel without one is only reported."""
    def log(name, regs, smem=0):
        return (f"ptxas info    : Compiling entry function '{name}' for 'sm_90'\n"
                "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
                f"ptxas info    : Used {regs} registers, used 1 barriers, {smem} bytes smem, 400 bytes cmem[0]\n")
    ptx = ("\n.visible .entry _ZN2fk1aEv(\n)\n.maxntid 256, 1, 1\n.minnctapersm 4\n{\n ret;\n}\n"
           ".visible .entry _ZN2fk1bEv(\n)\n.maxntid 256, 1, 1\n{\n ret;\n}\n"
           ".visible .entry _ZN2fk1cEv(\n.param .u64 p\n)\n.maxntid 128, 1, 1\n{\n ret;\n}\n"
           ".visible .entry _ZN2fk1dEv(\n)\n{\n ret;\n}\n"
           ".visible .entry _ZN3cub1eEv(\n)\n{\n ret;\n}\n")
    sizes = compile_check.ptx_block_sizes(ptx)
    assert sizes == {"_ZN2fk1aEv": 256, "_ZN2fk1bEv": 256, "_ZN2fk1cEv": 128}
    text = (log("_ZN2fk1aEv", 64) + log("_ZN2fk1bEv", 65) + log("_ZN2fk1cEv", 40, smem=90000)
            + log("_ZN2fk1dEv", 16) + log("_ZN3cub1eEv", 16))
    a, b, c, d, e = compile_check.parse_ptxas(text, "x.cu", 90, sizes)
    assert a.ok and a.occupancy == 0.5 and a.threads == 256
    assert not b.ok and b.occupancy == 0.375 and "occupancy 37.5% < 50%" in b.problems[0]
    assert not c.ok and c.occupancy == 0.125 and "90000 B smem" in c.problems[0]
    assert not d.ok and "__launch_bounds__" in d.problems[0]
    assert e.ok and e.occupancy is None
    table = compile_check.format_table([a, b])
    assert "50.0%" in table and "37.5%" in table


@pytest.mark.skipif(compile_check.find_nvcc() is None, reason="nvcc not installed")
def test_cuda_sources_compile_for_sm90_without_spills():
    sources = compile_check.cuda_sources()
    assert sources, "CMakeLists.txt lists no .cu file"
    results = compile_check.compile_cuda(90)
    print(compile_check.format_table(results))
    assert results and all(r.registers is not None for r in results), [r.problems for r in results]
    assert all(r.spill_stores == 0 and r.spill_loads == 0 for r in results)
    assert all(r.ok for r in results), [(r.kernel, r.problems) for r in results if not r.ok]
    ours = [r for r in results if r.threads is not None and "brick" in r.kernel]
    assert ours and all(r.occupancy >= compile_check.MIN_CUDA_OCCUPANCY for r in ours)
    # the distance grid and the point queries' linear BVH (build and query kernels)
    for source, kernels in {"udf_cuda.cu": ("count_kernel", "scatter_kernel", "fill_kernel"),
                            "lbvh_cuda.cu": ("keys_kernel", "internal_kernel", "leaf_kernel", "query_kernel")}.items():
        rows = {r.kernel: r for r in results if r.config == source}
        assert set(kernels) <= set(rows), (source, sorted(rows))
        assert all(rows[k].occupancy >= compile_check.MIN_CUDA_OCCUPANCY for k in kernels), source


def _dense(B, M):
    return torch.empty(B, M), torch.empty(B, M), torch.empty(B)


def test_one_compiled_variant_per_configuration():
    """Seeds and batch shapes change the runtime integers only: 6 seeds x 3 batch shapes give one variant per
    configuration of each kernel (Triton's own binder computes the keys a GPU launch caches by)."""
    seeds = [0, 1, 16, 12345, 2**31 + 7, 2**40 + 3]
    keys = {"loss-seeded": set(), "loss-ragged": set(), "interpolate": set(), "step": set()}
    for seed in seeds:
        for B in (1, 5, 64):
            pred, x1, t = _dense(B, 4096)
            keys["loss-seeded"].add(compile_check.variant_key(
                loss_plan(pred, x1, None, t, None, seed, None, 0, 0, 0, 0.0, torch.empty(B, 4096), target=T)))
            rows = torch.randint(1, 500, (B,))
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])
            N = int(offsets[-1])
            feats = torch.empty(N, 8)
            keys["loss-ragged"].add(compile_check.variant_key(
                loss_plan(feats, feats, None, t, None, seed, offsets, 3, 0, 0, 1e-5, torch.empty(N, 8), target=T)))
            keys["interpolate"].add(compile_check.variant_key(
                interpolate_plan(x1, None, t, seed, None, 0, 0, 0.0, pred, torch.empty(0), launch_target=T)))
            coef = torch.tensor(step_coefficients(dt=-0.1))
            both = torch.empty(2 * B, 4096, dtype=torch.float16)
            keys["step"].add(compile_check.variant_key(
                step_plan(x1, both[:B], both[B:], coef, x1, model_in=torch.empty(2 * B, 4096), target=T)))
    counts = {name: len(k) for name, k in keys.items()}
    print("compiled variants over 6 seeds x 3 batch shapes:", counts)
    assert all(n == 1 for n in counts.values()), counts


class _Ops(TorchDispatchMode):
    """Records the aten ops run while active, except inside Triton launches (the interpreter's own work)."""

    def __init__(self):
        super().__init__()
        self.ops, self.paused = [], False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            self.ops.append((str(func.overloadpacket), tuple(out.shape) if isinstance(out, torch.Tensor) else ()))
        return out


def _count_launches(monkeypatch, mode):
    launches = []
    original = _plan.LaunchPlan.launch

    def counted(plan):
        launches.append(plan.name)
        mode.paused = True
        try:
            return original(plan)
        finally:
            mode.paused = False
    monkeypatch.setattr(_plan.LaunchPlan, "launch", counted)
    return launches


NOT_LAUNCHES = {"aten.empty", "aten.empty_strided", "aten.view", "aten.slice", "aten.detach", "aten.alias",
                "aten._to_copy", "aten.lift_fresh", "aten.expand", "aten.select", "aten.as_strided"}


def test_rescaled_guided_step_is_two_launches(monkeypatch):
    """A TRELLIS.2 rescaled step: the statistics kernel and the step kernel, no torch compute ops in between
    (k is formed inside the step kernel), dense and ragged."""
    B, M = 3, 3000
    coef = torch.tensor(step_coefficients(dt=-0.1, a_c=3.0, a_u=-2.0, x0_a=1.0, x0_b=-0.7))
    x, c, u = torch.randn(B, M), torch.randn(B, M), torch.randn(B, M)
    offsets = torch.tensor([0, 100, 100, 1000])
    for kw, shape in ((dict(), (B, M)), (dict(offsets=offsets), (1000, 7))):
        xs, cs, us = (z.reshape(-1)[: shape[0] * shape[1]].reshape(shape) for z in (x, c, u))
        with _Ops() as mode:
            launches = _count_launches(monkeypatch, mode)
            guided_step(xs, cs, us, coef, out=torch.empty(shape), rescale=0.7, backend="triton", **kw)
        compute = [op for op, _ in mode.ops if op not in NOT_LAUNCHES]
        print(kw.keys(), "launches:", launches, "torch compute ops:", compute)
        assert launches == ["_rescale_stats_kernel", "_guided_step_kernel"]
        assert compute == []
        monkeypatch.undo()


@pytest.mark.parametrize("backend", ["triton", "torch", "native"])
def test_loss_backward_writes_no_zeros_gradient(backend):
    """The loss op's stored gradient output is non-differentiable: backward must not fill a zeros tensor of
    pred's size for it (set_materialize_grads(False)). The gradient is still d loss / d pred (SiT linear,
    velocity target x1 - noise), against float64."""
    B, M = 4, 999
    pred = torch.randn(B, M, requires_grad=True)
    x1, noise = torch.randn(B, M), torch.randn(B, M)
    loss = fk.flow_matching_loss(pred, x1, torch.rand(B), noise, reduction="mean", backend=backend)
    with _Ops() as mode:
        loss.backward()
    print("backward ops:", mode.ops)
    zeros = [op for op, shape in mode.ops if shape == (B, M) and ("zero" in op or "fill" in op)]
    assert zeros == []
    expected = 2 * (pred.double() - (x1.double() - noise.double())) / (B * M)
    assert torch.allclose(pred.grad.double(), expected, rtol=1e-5, atol=1e-9)