"""pytest-benchmark over the same registry as `flowkernels bench` (flowkernels/bench/registry.py).

Run: python -m pytest benchmarks -q --benchmark-json OUT.json   (or `flowkernels bench --json OUT.json`)
Each case × implementation is one benchmark in group "<op>-<size>"; memory-bound cases record the minimum bytes
they must move and the achieved GB/s over them.
"""
import pytest
import torch

from flowkernels.bench.registry import cases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = cases(DEVICE)
_BUILT = {}


def _built(case):
    key = (case.op, case.size)
    if key not in _BUILT:
        _BUILT.clear()  # keep one case's inputs alive at a time
        _BUILT[key] = case.build(DEVICE)
    return _BUILT[key]


def _params():
    for case in CASES:
        for impl in case.implementations:
            yield pytest.param(case, impl, id=f"{case.op}-{case.size}-{impl}")


@pytest.mark.parametrize("case,impl", list(_params()))
def test_bench(benchmark, case, impl):
    built = _built(case)
    if impl not in built.impls:
        pytest.skip(built.skipped.get(impl, f"{impl} is not available here"))
    fn = built.impls[impl]

    def once():
        fn()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{case.op}-{case.size}"
    benchmark.extra_info.update(device=DEVICE, **{k: v for k, v in built.info.items()})
    benchmark(once)
    if built.min_bytes and benchmark.stats is not None:  # stats is None under --benchmark-disable
        benchmark.extra_info["min_bytes"] = built.min_bytes
        benchmark.extra_info["achieved_GBps"] = built.min_bytes / benchmark.stats.stats.median / 1e9
