"""Timing, the copy-bandwidth floor, tables and the results JSON of `flowkernels bench`."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import torch

from .registry import Case

SCHEMA = "flowkernels-bench/1"


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _time_call(fn, device: str) -> float:
    """One call's time in ms: a CUDA event pair on the GPU, perf_counter on CPU."""
    if device == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _warm(fn, device: str) -> float:
    """Warm-up calls; the fastest timed one's time in seconds, which sets how many calls are timed. One timed call
    for peers that take 0.1 s or more, else three: a single call that a busy machine stalls (tens of ms on a 2-core
    machine under load) would leave a sub-millisecond case with 5 timed calls instead of its 200."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
        if best >= 0.1:
            break
    return max(best, 1e-6)


def _reps(once: float, min_time: float, max_reps: int) -> int:
    return int(max(3 if once > 1.0 else 5, min(max_reps, min_time / once)))  # peers that take seconds: 3 calls


def time_fn(fn, device: str, min_time: float = 0.2, max_reps: int = 200) -> list[float]:
    """Per-call times in ms after warm-up."""
    reps = _reps(_warm(fn, device), min_time, max_reps)
    return [_time_call(fn, device) for _ in range(reps)]


def time_interleaved(fns: dict, device: str, min_time: float = 0.2, max_reps: int = 200, rounds: int = 10,
                     min_reps: int = 0):
    """Per-call times in ms of several implementations of one case, measured in alternation: each round calls every
    implementation a few times, until each has its calls. A machine whose speed drifts during a case (other
    tenants, clocks) then slows every implementation alike, so the ratios stay fair. min_reps (when min_time > 0):
    at least that many calls each, in at least that many rounds. Returns (times by name, errors by name): an
    implementation that raises is dropped from the rounds, the others go on."""
    times, errors, reps = {}, {}, {}
    min_reps = min_reps if min_time > 0 else 0
    rounds = max(rounds, min_reps)
    for name, fn in fns.items():
        try:
            reps[name] = max(min_reps, _reps(_warm(fn, device), min_time, max_reps))
            times[name] = []
        except Exception as exc:  # reported by the caller, never hidden
            errors[name] = exc
    while True:
        todo = [n for n in times if n not in errors and len(times[n]) < reps[n]]
        if not todo:
            break
        for name in todo:
            try:
                for _ in range(min(-(-reps[name] // rounds), reps[name] - len(times[name]))):
                    times[name].append(_time_call(fns[name], device))
            except Exception as exc:
                errors[name] = exc
    return {n: t for n, t in times.items() if n not in errors}, errors


def copy_bandwidth(device: str) -> float:
    """Measured device copy bandwidth in GB/s (read + write bytes over time), the floor for memory-bound ops."""
    n = (256 << 20) // 4 if device == "cuda" else (32 << 20) // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = statistics.median(time_fn(lambda: dst.copy_(src), device, min_time=0.3))
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if hasattr(os, "getloadavg"):  # at the end of the run: other work on a shared machine skews every timing
        env["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    import flowkernels
    env["flowkernels"] = flowkernels.__version__
    env["commit"] = _git_commit()
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, cuda=torch.version.cuda, sm_count=props.multi_processor_count,
                   memory_GiB=round(props.total_memory / 2**30, 1), driver=_driver())
    else:
        env["device"] = "cpu"
    return env


def _git_commit():
    """HEAD, with "+dirty" when tracked files differ from it (the run measured uncommitted code)."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        git = lambda *a: subprocess.run(["git", *a], cwd=here, capture_output=True, text=True, timeout=10).stdout
        head = git("rev-parse", "HEAD").strip()
        return (head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _driver():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(fn, device: str, output_size=None) -> dict:
    """One more call, measured for memory: the peak growth over the memory in use before it, in MiB, and the
    output size when the case knows how to read it.

    CUDA: torch's allocator peak (memory other libraries allocate themselves, e.g. warp's, is not seen: None).
    CPU (Linux): the process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) over its
    resident set before the call, after returning freed heap memory to the OS so reuse does not hide growth.
    Approximate to a page or so; None where /proc is not available."""
    out = {"peak_MiB": None}
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        out["peak_MiB"] = peak / 2**20 if peak > 0 else None
    else:
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _rss_kib("VmRSS")
            result = fn()
            out["peak_MiB"] = max(_rss_kib("VmHWM") - before, 0) / 1024
        except OSError:
            result = fn()
    if output_size is not None:
        out["vertices"], out["triangles"] = output_size(result)
    return out


def run_cases(cases: list[Case], device: str, progress: bool = True, min_time: float = 0.2, on_case=None) -> dict:
    """Time every case; `on_case(report)` gets the report so far after each case (to save it as it grows, so a
    run stopped by a time limit keeps every finished case)."""
    from tqdm.auto import tqdm

    floor = copy_bandwidth(device)
    results, notes = [], []
    for case in tqdm(cases, desc="bench", disable=not progress):
        try:
            built = case.build(device)
        except Exception as exc:  # a case that cannot be set up is reported, not hidden
            notes.append(f"{case.op}/{case.size}: could not be set up: {type(exc).__name__}: {exc}")
            continue
        for peer, why in built.skipped.items():
            notes.append(f"{case.op}/{case.size}: {peer} skipped ({why})")
        rows = []
        timed, failed = ({}, {}) if built.single_call else time_interleaved(
            built.impls, device, min_time=min_time, min_reps=case.min_reps)
        for impl, fn in built.impls.items():
            try:
                if impl in failed:
                    raise failed[impl]
                if built.single_call:
                    start = time.perf_counter()
                    memory = peak_memory(fn, device, built.output_size)
                    times = [(time.perf_counter() - start) * 1e3]
                else:
                    times = timed[impl]
                    memory = peak_memory(fn, device, built.output_size)
            except Exception as exc:
                notes.append(f"{case.op}/{case.size}: {impl} failed: {type(exc).__name__}: {exc}")
                continue
            # inclusive: the deciles of the measured calls, never extrapolated past the fastest or slowest one
            q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [times[0]] * 9
            row = {"op": case.op, "size": case.size, "impl": impl, "median_ms": statistics.median(times),
                   "p10_ms": q[0], "p90_ms": q[-1], "reps": len(times), "times_ms": times, "info": built.info,
                   **memory}
            if built.min_bytes:
                gbps = built.min_bytes / (row["median_ms"] * 1e-3) / 1e9
                row.update(min_bytes=built.min_bytes, achieved_GBps=gbps, fraction_of_floor=gbps / floor)
            rows.append(row)
        for baseline in (case.baseline,) if isinstance(case.baseline, str) else case.baseline:
            base = next((r for r in rows if r["impl"] == baseline), None)
            for r in rows:
                r["speedup_vs_" + baseline] = base["median_ms"] / r["median_ms"] if base else None
        results += rows
        if on_case is not None:
            on_case(_report(device, floor, results, notes))
    return _report(device, floor, results, notes)


def _report(device, floor, results, notes) -> dict:
    return {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "environment": environment(device), "copy_bandwidth_GBps": floor, "results": list(results),
            "notes": list(notes)}


def format_tables(report: dict) -> str:
    lines = [f"device: {report['environment'].get('device')}  torch {report['environment']['torch']}  "
             f"triton {report['environment'].get('triton')}  commit {str(report['environment'].get('commit'))[:10]}",
             f"copy bandwidth (floor for memory-bound ops): {report['copy_bandwidth_GBps']:.1f} GB/s"]
    ops = []
    for r in report["results"]:
        if r["op"] not in ops:
            ops.append(r["op"])
    for op in ops:
        rows = [r for r in report["results"] if r["op"] == op]
        bases = [k[len("speedup_vs_"):] for k in rows[0] if k.startswith("speedup_vs_")]
        mesh = any("triangles" in r for r in rows)
        lines += ["", f"== {op} ==", f"{'size':<22}{'impl':<20}{'median ms':>11}{'p10-p90 ms':>20}"
                  + "".join(f"{'vs ' + b[:14]:>18}" for b in bases)
                  + (f"{'peak MiB':>10}{'triangles':>11}" if mesh else f"{'GB/s':>9}{'% floor':>9}")]
        for r in rows:
            sp = "".join(f"{(f'{v:.2f}x' if v else '-'):>18}" for v in (r.get('speedup_vs_' + b) for b in bases))
            if mesh:
                peak = f"{r['peak_MiB']:10.1f}" if r.get("peak_MiB") is not None else f"{'-':>10}"
                extra = peak + f"{r.get('triangles', '-'):>11}"
            else:
                extra = f"{r['achieved_GBps']:9.1f}{100 * r['fraction_of_floor']:8.0f}%" if "achieved_GBps" in r else ""
            lines.append(f"{r['size']:<22}{r['impl']:<20}{r['median_ms']:11.3f}"
                         f"{r['p10_ms']:>9.3f} - {r['p90_ms']:<8.3f}{sp}{extra}")
            stages = r.get("info", {}).get("stages_s", {}).get(r["impl"])
            if stages:  # seconds per stage of a pipeline
                lines.append(f"{'':<22}  stages (s): " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    if report["notes"]:
        lines += ["", "notes:"] + [f"  - {n}" for n in report["notes"]]
    return "\n".join(lines)


def load_json(path: str):
    """A results file written earlier (None when there is none or it is of another schema)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        old = json.load(f)
    return old if old.get("schema") == SCHEMA else None


def write_json(report: dict, path: str, base: dict = None) -> str:
    """Write the report, after the results and notes of `base` (an earlier run's report, whose environment is
    kept) when given. Written to a temporary file and renamed, so the file on disk is always whole."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if base is not None:
        report = dict(base, results=base["results"] + report["results"], notes=base["notes"] + report["notes"])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, path)
    return path
