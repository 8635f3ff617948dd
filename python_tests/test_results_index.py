"""The index of saved bench runs (benchmarks/results/README.md) lists every JSON file there, as it is."""
import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _index_module():
    spec = importlib.util.spec_from_file_location("results_index", ROOT / "benchmarks" / "results_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_readme_is_current():
    index = _index_module()
    results = ROOT / "benchmarks" / "results"
    readme = (results / "README.md").read_text()
    assert index.index_table(results) in readme, "run: python benchmarks/results_index.py"
    for path in results.glob("*.json"):
        assert f"]({path.name})" in readme


def test_index_row_of_a_gpu_run(tmp_path):
    index = _index_module()
    report = {"created": "2026-12-02T10:00:00+00:00", "copy_bandwidth_GBps": 4012.5,
              "environment": {"device": "NVIDIA H200", "driver": "580.65", "torch": "2.11.0", "triton": "3.6.0",
                              "commit": "0123456789abcdef+dirty", "load_average_1_5_15min": [0.1, 0.2, 0.3]},
              "results": [{"op": "mc"}, {"op": "loss"}, {"op": "mc"}]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    text = index.update(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| [r.json]"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["2026-12-02 10:00", "NVIDIA H200", "580.65", "2.11.0 / 3.6.0",
                         "0123456 (uncommitted changes)", "loss, mc", "0.1 / 0.2 / 0.3", "4012.5"]
