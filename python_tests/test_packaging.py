"""A plain install (no extras) carries its data files and runs the public API with none of the optional packages."""
import importlib.metadata
import os
import pathlib
import subprocess
import sys
import textwrap

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter without site-packages (python -S): it sees the installed copy and the packages its
# core dependencies need, nothing else, as after `pip install flowkernels` into an empty environment.
SCRIPT = textwrap.dedent('''
    import sys
    import pathlib, torch
    import flowkernels as fk
    assert pathlib.Path(fk.__file__).parent == pathlib.Path(sys.argv[1]) / "flowkernels", fk.__file__
    for optional in ("trimesh", "matplotlib", "skimage", "scipy", "hypothesis", "pytest"):
        assert optional not in sys.modules
        try:
            __import__(optional)
            raise AssertionError(f"{optional} is importable: the environment is not clean")
        except ImportError:
            pass
    x1 = torch.randn(3, 4, 5)
    t = fk.sample_time(3, sampler="logit_normal")
    pred = torch.randn(3, 4, 5, requires_grad=True)
    fk.flow_interpolate(x1, t, seed=1)
    fk.flow_matching_loss(pred, x1, t, seed=1, reduction="mean").backward()
    assert torch.isfinite(pred.grad).all()
    out = fk.sample_euler(lambda x, tt: -x, torch.randn(2, 8), [1.0, 0.5, 0.0], guidance=fk.Guidance(2.0),
                          verbose=True)
    assert torch.isfinite(out).all()
    from flowkernels.compat.trellis import FlowEulerCfgSampler
    res = FlowEulerCfgSampler(1e-5).sample(lambda x, tt, cond: x * 0 + cond, torch.randn(2, 3), torch.ones(2, 3),
                                           torch.zeros(2, 3), steps=2)  # verbose=True by default: a progress bar
    assert len(res.pred_x_0) == 2
    ax = torch.linspace(-1, 1, 17)
    grid = (ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2).sqrt() - 0.5
    mesh = fk.marching_cubes(grid, 0.0, bounds=1.0)
    assert mesh.faces.shape[0] > 0
    try:
        from flowkernels.mesh import export
        export(mesh, "x.glb")
        raise AssertionError("export without trimesh must fail with a message")
    except RuntimeError as exc:
        assert "trimesh" in str(exc)
    for doc in ("flow_kernels.md", "marching_cubes.md", "ops/README.md"):
        assert (pathlib.Path(fk.__file__).parent / doc).is_file(), doc
    print("public API ok")
''')


def _core_closure():
    """Distributions that `pip install flowkernels` brings in: the core dependencies and theirs, recursively."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(d) for d in project["dependencies"]]
    seen = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional platform package this environment does not have
        seen[key] = dist
        todo += [Requirement(r) for r in (dist.requires or [])]
    return seen


def _link_core_packages(deps: pathlib.Path):
    """A folder of links to the top-level modules (and metadata) of the core closure only."""
    deps.mkdir()
    for dist in _core_closure().values():
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or (deps / top).exists() or (deps / top).is_symlink():
                continue
            source = pathlib.Path(dist.locate_file(top))
            if source.exists():
                (deps / top).symlink_to(source)


@pytest.mark.skipif(tomllib is None, reason="reads pyproject.toml with tomllib (Python >= 3.11)")
def test_install_without_extras_runs_the_public_api(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, FLOWKERNELS_CUDA="OFF", FLOWKERNELS_BUILD_JOBS="2")
    env.pop("PYTHONPATH", None)
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", "--target", str(target), str(ROOT)],
                           capture_output=True, text=True, env=env, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    _link_core_packages(tmp_path / "deps")
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(tmp_path / "deps")])
    run = subprocess.run([sys.executable, "-S", "-c", SCRIPT, str(target)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0 and "public API ok" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.skipif(tomllib is None, reason="reads pyproject.toml with tomllib (Python >= 3.11)")
def test_package_data_globs_match_files():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, globs in config.get("package-data", {}).items():
        base = ROOT.joinpath(*package.split("."))
        for pattern in globs:
            assert list(base.glob(pattern)), f"package-data {package}: {pattern!r} matches no file"
