"""Host reads of the device pipeline (flowkernels.data_device), counted on CPU tensors: every torch call that
would wait for a GPU (a value or a data-dependent size coming back) is recorded with the flowkernels function
that made it, and the pipeline may make only the reads of its output sizes. Also the host-boxed upload
(upload_mesh), the one combined read without it, and their input errors."""
import os
import sys

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from flowkernels import data, data_device, data_sampling

trimesh = pytest.importorskip("trimesh")

# Tensor methods and torch functions that return host values or need a data-dependent size on a GPU.
_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__complex__",
          "__array__", "nonzero", "argwhere", "unique", "unique_consecutive", "bincount", "masked_select", "equal",
          "allclose", "any_", "histc"}
# CPU-only branches of the sampling (numpy's sqrt and arccos: on a GPU these are torch ops, no read)
_CPU_ONLY = {"_sqrt", "_arccos"}
_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def _is_mask(x):
    return isinstance(x, torch.Tensor) and x.dtype in (torch.bool, torch.uint8)


def _kind(func, args, kwargs):
    name = getattr(func, "__name__", str(func))
    if name in _READS:
        return name
    if name == "where" and len(args) + len(kwargs) == 1:
        return "where(cond)"
    if name == "repeat_interleave" and "output_size" not in kwargs:
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        if isinstance(repeats, torch.Tensor) and repeats.numel() > 1:
            return "repeat_interleave"
    if name in ("__getitem__", "__setitem__", "index_put", "index_put_") and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        if any(_is_mask(i) for i in index):
            return name + "[mask]"
    return None


class _CountReads(TorchFunctionMode):
    """Records (file, function, kind) of every read-back call with its caller. `.to(device)` copies
    are not counted: on CPU tensors an upload looks like a download (the pipeline downloads only by .cpu())."""

    def __init__(self):
        super().__init__()
        self.reads = []
        self._host = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _kind(func, args, kwargs)
        if kind in ("numpy", "__array__") and id(args[0]) in self._host:
            kind = None  # the host copy of a counted .cpu()
        if kind is not None:
            frame = sys._getframe(1)  # the first caller outside torch
            while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_TORCH):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_name not in _CPU_ONLY:
                self.reads.append((os.path.basename(frame.f_code.co_filename), frame.f_code.co_name, kind))
        out = func(*args, **kwargs)
        if kind == "cpu":
            self._host[id(out)] = out
        return out


def _seed():
    return int(torch.randint(0, 2**31, ()).item())  # follows the per-test seed printed by conftest


def _torus():
    m = trimesh.creation.torus(0.3, 0.1, major_sections=48, minor_sections=24)
    return data.normalize_to_unit_box(m.vertices), np.asarray(m.faces)


# The marching cubes' output sizes (its brick driver, the CUDA code path), then the sharp-edge rule's:
# referenced vertices, merged vertices, the sums' group sizes.
MC_READ = ("marching_cubes.py", "_extract_bricks", "tolist")
SAMPLING_READS = [("data_sampling.py", "merge_like_trimesh", "nonzero"),
                  ("data_sampling.py", "merge_like_trimesh", "unique"),
                  ("data_sampling.py", "_sequential_sums", "tolist")]


def test_the_counter_sees_the_reads_it_must():
    x = torch.arange(6.0)
    with _CountReads() as c:
        bool(x.sum() > 0), x.tolist(), x[x > 2], torch.nonzero(x), torch.where(x > 1)
        y = x.clone()
        y[x > 1] = 0.0
        y.masked_fill_(x > 1, 0.0), torch.where(x > 1, x, 0.0), x[torch.tensor([0, 2])], x[1:3], len(x)
    assert [k for _, _, k in c.reads] == ["__bool__", "tolist", "__getitem__[mask]", "nonzero", "where(cond)",
                                          "__setitem__[mask]"]


@pytest.mark.parametrize("outer_only", [False, True])
def test_device_pipeline_reads_back_only_output_sizes(monkeypatch, outer_only):
    """The drop-in's order: upload_mesh (checked and boxed on the host), watertight with that box, sample_mesh;
    the sampling's torch form (what a GPU runs); the marching cubes' brick driver, which CUDA grids take."""
    monkeypatch.setattr(data_sampling, "USE_NATIVE", False)
    seed = _seed()
    verts, faces = _torus()
    mesh = data_device.upload_mesh(verts, faces, "cpu")
    with _CountReads() as c:
        shell = data_device.watertight(mesh.verts, mesh.faces, 28, 2.0 / 28, outer_only, box=mesh.box)
        surf, sdf = data.sample_mesh(shell, 600, seed)
    fill = [r for r in c.reads if r == ("data_device.py", "outside_region", "equal")]
    assert [r for r in c.reads if r not in fill] == [MC_READ] + SAMPLING_READS, f"seed {seed}"
    assert c.reads[:len(fill)] == fill  # the fill comes before the marching cubes
    # the flood fill's loop end, one flag per sweep round from the second on (only with outer_only)
    assert (len(fill) >= 1) if outer_only else not fill
    assert torch.isfinite(surf["random_surface"].float()).all() and len(sdf["vol_label"]) == 1200


def test_ordered_sums_read_once_unless_a_vertex_is_in_very_many_corners():
    """The sharp rule's vertex sums read their round sizes in one histogram read; a vertex in more face corners
    than its bins (a wide fan's apex) costs a second, exact count. The sums are checked against trimesh's
    normals, bit for bit, in test_data_sharp.py (the "wide fan" mesh)."""
    for sections, want in [(data_sampling.RANK_BINS - 2, 1), (data_sampling.RANK_BINS + 7, 2)]:
        cone = trimesh.creation.cone(0.4, 0.3, sections=sections)
        v, f = torch.from_numpy(np.asarray(cone.vertices)), torch.from_numpy(np.asarray(cone.faces))
        with _CountReads() as c:
            data_sampling.trimesh_normals(v, f)
        assert [r for r in c.reads if r[1] == "_sequential_sums"] == [
            ("data_sampling.py", "_sequential_sums", k) for k in ("tolist", "bincount", "tolist")[:2 * want - 1]]


def test_without_a_host_box_checks_and_box_come_back_in_one_read():
    verts, faces = _torus()
    v, f = torch.from_numpy(verts), torch.from_numpy(faces)
    with _CountReads() as c:
        shell = data_device.watertight(v, f, 24, 2.0 / 24, False)
    assert c.reads == [("data_device.py", "_checked_frame", "cpu"), MC_READ]
    mesh = data_device.upload_mesh(verts, faces, "cpu")
    boxed = data_device.watertight(mesh.verts, mesh.faces, 24, 2.0 / 24, False, box=mesh.box)
    assert torch.equal(shell.grid, boxed.grid) and torch.equal(shell.verts, boxed.verts)
    np.testing.assert_array_equal(shell.origin, boxed.origin)
    np.testing.assert_array_equal(shell.step, boxed.step)


def test_device_watertight_input_errors():
    verts, faces = _torus()
    v, f = torch.from_numpy(verts), torch.from_numpy(faces)
    bad_v = v.clone()
    bad_v[3, 1] = float("nan")
    cases = [((bad_v, f), {}, "verts holds NaN or inf"),
             ((v, f + len(v)), {}, "faces index vertices outside"),
             ((torch.zeros(0, 3), f), {}, "faces index vertices outside"),
             ((v, f[:0]), {}, "faces is empty"),
             ((v, f), {"box": np.zeros((2, 3))}, "box is given: verts and faces must come from upload_mesh"),
             ((v.float(), f), {"box": np.zeros(3)}, "box must be a finite"),
             ((v.float(), f), {"box": np.full((2, 3), np.nan)}, "box must be a finite")]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            data_device.watertight(*args, 16, 2.0 / 16, False, **kwargs)
    for args, message in [((verts * np.nan, faces), "verts holds NaN or inf"),
                          ((verts, faces - 1), r"faces index vertices outside \[0, ")]:
        with pytest.raises(ValueError, match=message):
            data_device.upload_mesh(*args, "cpu")


def test_shell_without_area_gives_nan_samples_on_the_device_path():
    """A read-free device path cannot raise for a shell of degenerate triangles (the CPU path's error): it marks
    the samples NaN, and the drop-in raises when it downloads them."""
    verts, faces = _torus()
    shell = data_device.watertight(torch.from_numpy(verts), torch.from_numpy(faces), 20, 2.0 / 20, False)
    flat = torch.tensor([[0, 0, 1], [2, 3, 3]])
    surf, _ = data.sample_mesh(shell._replace(faces=flat), 60, _seed())
    assert torch.isnan(surf["random_surface"].float()).all() and torch.isnan(surf["sharp_surface"].float()).all()
    with pytest.raises(ValueError, match="no area to sample"):
        data.sample_mesh(shell._replace(faces=flat[:0]), 60, 0)
