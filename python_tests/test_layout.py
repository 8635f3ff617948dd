"""The package's layer rules (flowkernels/ops/README.md) and the one vocabulary of conventions."""
import ast
import pathlib
import subprocess
import sys

import pytest
import torch

import flowkernels as fk
from flowkernels import flow_algebra as fa
from helpers import DEVICE

PACKAGE = pathlib.Path(fk.__file__).parent
# leaf helpers every layer may use: argument checks and the device -> implementation choice
SHARED_LEAVES = {"flowkernels._validation"}


def _imports(path: pathlib.Path):
    """(module, imported name or None) for every flowkernels import of a file, relative imports resolved."""
    package = ".".join(("flowkernels",) + path.relative_to(PACKAGE).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            found += [(module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
    return [(m, n) for m, n in found if m.startswith("flowkernels")]


def _private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split(".")[1:])


@pytest.mark.parametrize("path", sorted((PACKAGE / "compat").glob("*.py")), ids=lambda p: p.name)
def test_compat_uses_the_public_layer_only(path):
    bad = []
    for module, name in _imports(path):
        if module.startswith("flowkernels.compat") or module in SHARED_LEAVES:
            continue  # the drop-ins' own helpers, shared leaves
        full = f"{module}.{name}" if module == "flowkernels" and name else module
        if full.startswith("flowkernels.ops") or _private(full) or (name or "").startswith("_"):
            bad.append(f"{module}:{name}")
    assert not bad, f"{path.name} imports {bad}; drop-ins may use public modules and names only"


def test_ops_import_only_ops_and_the_flow_algebra():
    for path in (PACKAGE / "ops").glob("*.py"):
        for module, name in _imports(path):
            full = f"{module}.{name}" if module == "flowkernels" else module
            # the extension loader is a leaf: the native CPU kernels (ops/native_cpu.py) call into flowkernels._C
            allowed = ("flowkernels.ops", "flowkernels.flow_algebra", "flowkernels._native")
            assert full.startswith(allowed), f"ops/{path.name} imports {full}"


@pytest.mark.parametrize("alias", sorted(fa.CONVENTIONS))
def test_every_convention_alias_is_accepted_by_training_and_sampling(alias):
    canonical = fa.CONVENTIONS[alias]
    x1 = torch.randn(3, 5, 7, device=DEVICE)
    noise = torch.randn_like(x1)
    t = torch.rand(3, device=DEVICE)
    pred = torch.randn_like(x1)
    loss = fk.flow_matching_loss(pred, x1, t, noise, convention=alias)
    assert torch.equal(loss, fk.flow_matching_loss(pred, x1, t, noise, convention=canonical))

    def model(x, tt):
        return torch.tanh(x * 0.7 + tt.view(-1, 1, 1))

    ts = [0.0, 0.4, 0.8, 1.0] if canonical == "sit" else [1.0, 0.6, 0.2, 0.0]  # noise -> data
    out = fk.sample_euler(model, noise, ts, convention=alias, guidance=fk.Guidance(2.0, rescale=0.5))
    assert torch.equal(out, fk.sample_euler(model, noise, ts, convention=canonical,
                                            guidance=fk.Guidance(2.0, rescale=0.5)))


def test_x0_coefficients_invert_the_paths():
    """x0 = A x_t + B v recovers the data for every convention, at random t and sigma_min."""
    D, N = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    for t in torch.rand(5, dtype=torch.float64).tolist():
        A, B = fa.x0_coefficients("hunyuan3d", t)
        torch.testing.assert_close(A * (t * D + (1 - t) * N) + B * (D - N), D)
        s = float(torch.rand(()) * 0.1)
        A, B = fa.x0_coefficients("trellis", t, s)
        torch.testing.assert_close(A * ((1 - t) * D + (s + (1 - s) * t) * N) + B * ((1 - s) * N - D), D)


def test_python_dash_m_flowkernels_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "flowkernels", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "mesh" in out.stdout and "demo" in out.stdout and "bench" in out.stdout


def test_code_cites_the_design_notes_not_outside_documents():
    """Conventions live in the design notes in the repository; code names no outside spec and no issue numbers."""
    import re
    root = PACKAGE.parent
    pattern = re.compile(r"SPEC(\.md| ?§)|issue #\d|\(#\d+\)")
    files = [p for d in ("flowkernels", "csrc", "python_tests", "benchmarks") for p in (root / d).rglob("*")
             if p.suffix in (".py", ".h", ".cpp", ".cu", ".sh") and "build" not in p.parts]
    hits = [f"{p.relative_to(root)}:{i + 1}" for p in files
            for i, line in enumerate(p.read_text(errors="replace").splitlines()) if pattern.search(line)
            and p.name != "test_layout.py"]
    assert not hits, f"outside citations in code: {hits}"


def test_a_failing_run_prints_the_seed_that_replays_it():
    import conftest

    lines = []

    class Reporter:
        def write_line(self, line):
            lines.append(line)

    conftest.pytest_terminal_summary(Reporter(), 0)
    assert lines == []
    conftest.pytest_terminal_summary(Reporter(), 1)
    assert lines == [f"random inputs of this run: replay with FLOWKERNELS_TEST_SEED={conftest.BASE_SEED}"]
