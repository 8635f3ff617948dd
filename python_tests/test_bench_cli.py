"""`flowkernels bench`: runs the registry, prints tables, writes the results JSON and plots."""
import json
import subprocess
import sys
import time

import pytest

from flowkernels.bench import registry
from flowkernels.bench.runner import format_tables, run_cases


def test_bench_cli_writes_json_tables_and_plots(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "flowkernels.bench", "--device", "cpu", "--ops", "sampler,mc",
                          "--sizes", "trellis_ss,sphere-128", "--min-time", "0.01", "--no-progress",
                          "--json", str(out), "--plot", str(tmp_path / "plots")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "== sampler ==" in res.stdout and "== mc ==" in res.stdout and "copy bandwidth" in res.stdout
    report = json.loads(out.read_text())
    assert report["schema"] == "flowkernels-bench/1" and report["copy_bandwidth_GBps"] > 0
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] and "flowkernels" in env
    impls = {(r["op"], r["impl"]) for r in report["results"]}
    assert ("sampler", "flowkernels") in impls and ("sampler", "eager") in impls and ("mc", "flowkernels") in impls
    for r in report["results"]:
        assert r["median_ms"] > 0 and len(r["times_ms"]) == r["reps"] >= 3
        if r["op"] == "sampler":
            assert r["min_bytes"] > 0 and r["achieved_GBps"] > 0 and r["speedup_vs_eager"] > 0
    # peers that are missing are named in the notes, never dropped silently
    for peer in ("pymcubes", "vtk-flying-edges"):
        if ("mc", peer) not in impls:
            assert any(f"{peer} skipped" in n for n in report["notes"])
    mc = {r["impl"]: r for r in report["results"] if r["op"] == "mc"}
    ours = mc["flowkernels"]
    # a 128^3 sphere of radius 0.6: ~4 pi (0.6 * 63.5)^2 / 0.75 triangles per unit area; memory measured
    assert 40_000 < ours["triangles"] < 60_000 and ours["vertices"] * 2 - 4 == ours["triangles"]
    assert ours["peak_MiB"] is not None and 0 < ours["peak_MiB"] < 64
    assert ours["speedup_vs_skimage-lewiner"] > 0
    if "vtk-flying-edges" in mc:  # the same standard marching cubes surface: the same size
        assert mc["vtk-flying-edges"]["triangles"] == ours["triangles"]
    assert (tmp_path / "plots" / "bandwidth.png").exists() and (tmp_path / "plots" / "marching_cubes.png").exists()


def test_bench_cli_rejects_unknown_op():
    res = subprocess.run([sys.executable, "-m", "flowkernels.bench", "--ops", "softmax"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "--ops" in res.stderr


@pytest.mark.parametrize("op", ["loss", "trellis_loss", "e2e"])
def test_registry_cases_run_on_cpu(op):
    """Every implementation of a case does its work (the e2e sampling run is timed only in real bench runs)."""
    cases = [c for c in registry.cases("cpu", [op]) if c.size != "sample50"][:1]
    report = run_cases(cases, "cpu", progress=False, min_time=0.0)
    assert {r["impl"] for r in report["results"]} >= {"flowkernels"}
    # the pytest-benchmark suite parametrizes over the declared names: every built implementation is declared
    assert {r["impl"] for r in report["results"]} <= set(cases[0].implementations)
    assert not [n for n in report["notes"] if "failed" in n or "could not" in n], report["notes"]
    assert op in format_tables(report)


def test_registering_a_case_is_the_whole_path_to_a_new_benchmark(monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", list(registry.REGISTRY))
    calls = []

    def build(device):
        return registry.Built({"eager": lambda: calls.append("eager"), "flowkernels": lambda: calls.append("fk")})

    registry.register(registry.Case("toy", "tiny", build, devices=("cpu",)))
    assert "toy" in registry.registered_ops()
    (case,) = registry.cases("cpu", ["toy"])
    assert registry.cases("cuda", ["toy"]) == []
    report = run_cases([case], "cpu", progress=False, min_time=0.0)
    assert {r["impl"] for r in report["results"]} == {"eager", "flowkernels"} and "fk" in calls
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.Case("toy", "tiny", build, devices=("cpu",)))
    with pytest.raises(ValueError, match="unknown"):
        registry.cases("cpu", ["no-such-op"])


def test_implementations_are_timed_in_alternation_and_a_failing_one_is_dropped():
    """A case's implementations are timed in rounds, so drift during a case slows all of them alike; one that raises
    mid-run is reported and the others still get all their calls."""
    from flowkernels.bench.runner import time_interleaved

    log = []

    def impl(name, fail_at=None):
        def fn():
            log.append(name)
            if fail_at is not None and log.count(name) == fail_at:
                raise RuntimeError(f"{name} broke")
        return fn

    fns = {"a": impl("a"), "b": impl("b"), "c": impl("c", fail_at=6)}
    times, errors = time_interleaved(fns, "cpu", min_time=1e9, max_reps=40, rounds=10)
    assert set(times) == {"a", "b"} and list(errors) == ["c"] and "c broke" in str(errors["c"])
    assert len(times["a"]) == len(times["b"]) == 40 and all(t >= 0 for t in times["a"] + times["b"])
    timed = [n for n in log[12:] if n != "c"]  # after the 3 x 4 warm-up calls
    first_b, last_a = timed.index("b"), len(timed) - 1 - timed[::-1].index("a")
    assert first_b < last_a and timed[:4] == ["a"] * 4  # rounds of 4 calls each, a and b alternating
    assert log.count("c") == 6  # dropped at its first failure

    slow = []  # a stalled warm-up call does not decide the number of timed calls: the fastest of three does
    def stalls_once():
        slow.append(1)
        if len(slow) == 2:
            time.sleep(0.05)
    times, _ = time_interleaved({"s": stalls_once}, "cpu", min_time=0.01, max_reps=200)
    assert len(times["s"]) == 200


def test_min_reps_alternates_call_by_call():
    """A case with min_reps gets at least that many calls per implementation, one per round (the e2e cases, whose
    difference is small against a shared machine's drift); min_time=0 (test runs) keeps the calls few."""
    from flowkernels.bench.runner import time_interleaved

    log = []
    fns = {name: (lambda name=name: log.append(name)) for name in ("a", "b")}
    times, errors = time_interleaved(fns, "cpu", min_time=1e-9, max_reps=3, rounds=10, min_reps=12)
    assert not errors and len(times["a"]) == len(times["b"]) == 12
    assert log[8:] == ["a", "b"] * 12  # after 2 x 4 warm-up calls
    assert {c.size: c.min_reps for c in registry.cases("cpu", ["e2e"])}["train"] >= 100
    log.clear()
    times, _ = time_interleaved(fns, "cpu", min_time=0.0, max_reps=3, min_reps=12)
    assert len(times["a"]) == 5  # the floor of 5 calls of a fast function, min_reps left out
