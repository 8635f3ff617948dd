"""benchmarks/gpu_run.sh --dry-run: the GPU machine's one command, run here with its CUDA steps skipped."""
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_run.sh"


def _run(out, **env):
    return subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run"], capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, **env})


def test_dry_run_writes_the_results_and_at_most_six_files(tmp_path):
    proc = _run(tmp_path)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 6 and {"summary.txt", "bench.json", "logs.tar.gz"} <= set(files), files
    summary = (tmp_path / "summary.txt").read_text()
    for name in ("wheels", "environment", "build", "tests", "memcheck", "bench-loss", "bench-step", "bench-mc-fp16",
                 "bench-prepare"):
        assert re.search(rf"^{name} ", summary, re.M), name
    assert "build skipped (dry run)" in summary and "bench-smoke ok" in summary
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {r["impl"] for r in report["results"]} >= {"eager", "flowkernels"}
    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        assert any(n.endswith("bench-smoke.log") for n in tar.getnames())


def test_out_of_time_steps_are_skipped_not_failed(tmp_path):
    proc = _run(tmp_path, GPU_RUN_BUDGET_S="3")
    assert proc.returncode == 0, proc.stdout[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "wheels skipped: out of time" in summary and "bench-smoke skipped: out of time" in summary


def test_script_uses_python3_and_time_boxes_every_step():
    text = SCRIPT.read_text()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if re.search(r"(^|[\s;(])(?<!-m )(python|pip)\s", line)], "use python3 -m pip"
    assert "PY=python3" in text and "timeout --kill-after" in text
    steps = [line for line in code if line.startswith("step ")]
    assert len(steps) >= 8 and all(re.match(r"step [\w-]+ \d+ (CUDA|ANY) ", s) for s in steps)
    assert sum(int(s.split()[2]) for s in steps) >= 480 - 60  # the step limits fill, and the budget bounds, 8 min
    assert "GPU_RUN_BUDGET_S:-460" in text
