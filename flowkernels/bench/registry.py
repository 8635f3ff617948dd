"""The benchmark registry: every op, size and implementation measured by `flowkernels bench` and by the
pytest-benchmark suite in benchmarks/ (both import this, so they measure the same thing).

Adding a benchmark is one declaration next to its builder:

    register(Case("my_op", "size-name", build=_my_case(shape), devices=("cpu", "cuda"),
                  implementations=("eager", "flowkernels")))

A case is built lazily (`Case.build(device)`), returns one zero-argument callable per implementation (all doing the
same work on the same random inputs) and states the minimum bytes the op must move when it is memory-bound.
Peers that are not installed are listed in `skipped` with the reason, never silently dropped.
`cases(device, ops, sizes)` selects from the registrations; nothing in it knows about a particular op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch



@dataclass
class Built:
    impls: dict                    # name -> zero-argument callable
    min_bytes: Optional[int] = None
    skipped: dict = field(default_factory=dict)  # peer -> reason
    info: dict = field(default_factory=dict)
    output_size: Optional[Callable] = None  # result -> (vertices, triangles), recorded per implementation
    single_call: bool = False      # one timed call (also measured for memory): for peers that take minutes


@dataclass
class Case:
    op: str
    size: str
    build: Callable[[str], Built]   # device -> Built
    baseline: str | tuple = "eager"  # ratios are reported against this implementation (or each of these)
    devices: tuple = ("cpu", "cuda")  # where the case runs
    implementations: tuple = ("eager", "flowkernels")  # every name `build` may return (peers may be skipped)
    on_request: bool = False         # only when `--sizes` selects it (e.g. sizes whose CPU peers take minutes)
    min_reps: int = 0                # at least this many timed calls per implementation, one per round (cases
                                     # whose difference is small against a shared machine's drift)


REGISTRY: list[Case] = []


def register(case: Case) -> Case:
    """Add a case to the registry (op and size name unique per device)."""
    for other in REGISTRY:
        if (other.op, other.size) == (case.op, case.size) and set(other.devices) & set(case.devices):
            raise ValueError(f"benchmark {case.op}/{case.size} is registered twice for {other.devices}")
    REGISTRY.append(case)
    return case


def registered_ops() -> tuple:
    """Op names in registration order."""
    return tuple(dict.fromkeys(c.op for c in REGISTRY))


def cases(device: str, ops=None, sizes=None) -> list[Case]:
    """The registered cases for `device` ("cuda" or "cpu") and `ops` (default: all), in registration order.
    sizes: substrings of size names to keep; also admits the cases registered with on_request=True."""
    dev = "cuda" if device == "cuda" else "cpu"
    known = registered_ops()
    ops = known if ops is None else tuple(ops)
    unknown = [op for op in ops if op not in known]
    if unknown:
        raise ValueError(f"ops: unknown {unknown}; choose from {list(known)}")
    out = [c for c in REGISTRY if c.op in ops and dev in c.devices and (sizes or not c.on_request)]
    if sizes:
        out = [c for c in out if any(s in c.size for s in sizes)]
    return out


# --- loss: interpolate + loss + backward ----------------------------------------------------------------------------
LOSS_SIZES = {"cuda": {"hunyuan": (16, 4096, 64), "trellis_ss": (32, 8, 16, 16, 16), "bandwidth": (64, 1 << 20)},
              "cpu": {"hunyuan_small": (4, 1024, 64), "trellis_ss_small": (8, 8, 16, 16, 16),
                      "hunyuan": (16, 4096, 64)}}


def _loss_case(shape):
    def build(device):
        import flowkernels as fk
        from flowkernels.reference import flow_matching as ref
        x1 = torch.randn(shape, device=device)
        t = torch.rand(shape[0], device=device)
        noise = torch.randn_like(x1)
        pred = torch.randn(shape, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        pred.requires_grad_(True)

        def eager():
            xt, ut = ref.sit_plan("linear", t, noise, x1)
            ref.mean_flat((pred.float() - ut) ** 2).mean().backward()

        def fused():
            fk.flow_interpolate(x1, t, noise)
            fk.flow_matching_loss(pred, x1, t, noise, reduction="mean").backward()

        impls = {"eager": eager, "compiled": torch.compile(eager), "flowkernels": fused}
        # read x1, noise (x_t) and pred, x1, noise (loss); write x_t and the gradient
        return Built(impls, x1.numel() * (4 * 5 + 2 * pred.element_size()), info={"shape": list(shape)})
    return build


for _device, _sizes in LOSS_SIZES.items():
    for _name, _shape in _sizes.items():
        register(Case("loss", _name, _loss_case(_shape), devices=(_device,),
                      implementations=("eager", "compiled", "flowkernels")))


# --- sampler: one guided Euler step without the model ---------------------------------------------------------------
SAMPLER_SIZES = {"cuda": {"hunyuan": (1, 4096, 64), "trellis_ss": (1, 8, 16, 16, 16), "large": (64, 1 << 20)},
                 "cpu": {"hunyuan": (1, 4096, 64), "trellis_ss": (1, 8, 16, 16, 16)}}


def _sampler_case(shape, graphs):
    def build(device):
        # the step as the samplers run it (sample_euler and the drop-ins check their arguments once per run, not
        # per step; the public guided_step adds its per-call checks)
        from flowkernels.sampling import step_coefficients
        from flowkernels.sampling import unchecked_guided_step as guided_step
        dtype = torch.float16 if device == "cuda" else torch.float32
        B = shape[0]
        w, dt = 5.0, 0.02
        model_out = torch.randn((2 * B,) + shape[1:], device=device, dtype=dtype)  # [cond; uncond]
        state = {"latents": torch.randn(shape, device=device, dtype=dtype)}
        x32 = torch.randn(shape, device=device)
        model_in = torch.empty((2 * B,) + shape[1:], device=device, dtype=dtype)
        coef = torch.tensor(step_coefficients(dt, w, 1.0 - w), device=device)

        def eager():  # the Hunyuan3D loop's per-step glue: cat for CFG, chunk, combine, fp32 update, cast back
            x_in = torch.cat([state["latents"]] * 2)
            c, u = model_out.chunk(2)
            v = u + w * (c - u)
            state["latents"] = (state["latents"].to(torch.float32) + dt * v).to(v.dtype)
            return x_in

        def fused():
            guided_step(x32, model_out[:B], model_out[B:], coef, out=x32, model_in=model_in)

        impls = {"eager": eager, "flowkernels": fused}
        if graphs and device == "cuda":
            impls = {name + "+graph": _graphed(fn) for name, fn in impls.items()}
        el = x32.numel()
        # read the fp32 state and both halves of the output; write the state and the [x; x] model input
        return Built(impls, el * (4 + 2 * dtype.itemsize + 4 + 2 * dtype.itemsize), info={"shape": list(shape)})
    return build


def _graphed(fn):
    """fn captured in a CUDA graph after a warm-up on a side stream (torch's recommended recipe)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


for _device, _sizes in SAMPLER_SIZES.items():
    for _name, _shape in _sizes.items():
        register(Case("sampler", _name, _sampler_case(_shape, graphs=False), devices=(_device,)))
for _name, _shape in SAMPLER_SIZES["cuda"].items():  # CUDA-graph replay of both, on CUDA only
    register(Case("sampler", _name + "+graphs", _sampler_case(_shape, graphs=True), baseline="eager+graph",
                  devices=("cuda",), implementations=("eager+graph", "flowkernels+graph")))


# --- TRELLIS sparse trainer loss with time bins ---------------------------------------------------------------------
def _trellis_case(rows_lo, rows_hi, B=8, C=8, stand_in="matmul"):
    def build(device):
        from flowkernels.compat.trellis import training_losses
        from flowkernels.reference import trellis as ref
        gen = torch.Generator().manual_seed(0)
        rows = torch.randint(rows_lo, rows_hi + 1, (B,), generator=gen)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)]).to(device)
        N = int(rows.sum())
        feats = torch.randn(N, C, device=device)
        noise = torch.randn(N, C, device=device)
        t = torch.rand(B, device=device)
        weight = torch.randn(*((C, C) if stand_in == "matmul" else (C,)), device=device, requires_grad=True)
        # both sides get TRELLIS sparse tensors (the reference's stand-in for sp.SparseTensor), as its trainer does
        layout = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        sparse_feats, sparse_noise = ref.SparseTensorLike(feats, layout), ref.SparseTensorLike(noise, layout)

        def denoiser(x, t_, cond):  # a stand-in with one trained parameter: the benchmark is about the loss machinery
            return x.replace(x.feats @ weight if stand_in == "matmul" else x.feats * weight)

        def original():
            terms, _ = ref.sparse_training_losses(denoiser, feats, offsets, t, noise)
            terms["loss"].backward()

        def fused():
            terms, _ = training_losses(denoiser, sparse_feats, t=t, noise=sparse_noise)
            terms["loss"].backward()
            return terms

        return Built({"original": original, "flowkernels": fused}, info={"rows": N, "B": B, "C": C})
    return build


# rows per sample: TRELLIS sparse-structure latents on CUDA, a tenth of that on CPU
register(Case("trellis_loss", "B8-30k-60k-rows", _trellis_case(30000, 60000), baseline="original", devices=("cuda",),
              implementations=("original", "flowkernels")))
register(Case("trellis_loss", "B8-3k-6k-rows", _trellis_case(3000, 6000), baseline="original", devices=("cpu",),
              implementations=("original", "flowkernels")))
# the same with a per-channel scale for the denoiser: on CPU the [C, C] matmul of a 36k x 8 batch (forward and weight
# gradient) costs more than either side's loss machinery, this case shows the machinery itself
register(Case("trellis_loss", "B8-3k-6k-rows-scale", _trellis_case(3000, 6000, stand_in="scale"),
              baseline="original", devices=("cpu",), implementations=("original", "flowkernels")))


# --- marching cubes -------------------------------------------------------------------------------------------------
MC_SIZES = {"cuda": (128, 256, 512, 1024), "cpu": (128, 256)}
# Run only when asked for by --sizes (e.g. `--sizes 512`): the CPU peers take minutes there.
MC_EXTRA_SIZES = {"cuda": (), "cpu": (512,)}
MC_SHAPES = ("sphere", "gyroid", "bunny")
# Past this size the peers that take seconds per call are left out on CUDA runs (their CPU time says nothing new).
MC_SLOW_PEER_LIMIT = {"cuda": 256, "cpu": 512}


def sdf_grid(shape: str, n: int) -> np.ndarray:
    """float32 [n, n, n] fields whose 0 level set is the surface: a sphere, a gyroid (many handles, dense
    crossings), or an offset surface of the scanned Stanford bunny (real data; see `bunny_grid`)."""
    if shape == "bunny":
        return bunny_grid(n)
    if shape == "sphere":  # broadcast rather than meshgrid: one n^3 array, not three (1024^3 is 4 GiB each)
        x = np.linspace(-1, 1, n, dtype=np.float32)
        return np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2) - np.float32(0.6)
    x = np.linspace(0, 4 * np.pi, n, dtype=np.float32)
    s, c = np.sin(x), np.cos(x)
    return (s[:, None, None] * c[None, :, None] + s[None, :, None] * c[None, None, :]
            + s[None, None, :] * c[:, None, None])


def bunny_grid(n: int, base: int = 256) -> np.ndarray:
    """Distance to the scanned Stanford bunny (the scan that ships in the pymeshfix wheel) minus 1.5 voxels: the
    offset surface of a real scan, with its holes and fine detail. The scan is not watertight, so the field is an
    unsigned distance (exact Euclidean distance transform of surface samples at up to `base`^3, trilinearly
    resampled above that, since the transform at 512^3 takes a minute)."""
    import os

    import pymeshfix
    import trimesh
    from scipy import ndimage
    path = os.path.join(os.path.dirname(pymeshfix.__file__), "examples", "StanfordBunny.ply")
    mesh = trimesh.load(path)
    m = min(n, base)
    lo, hi = mesh.bounds
    center, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.08
    pitch = 2 * half / (m - 1)
    points, _ = trimesh.sample.sample_surface(mesh, int(4 * mesh.area / pitch**2), seed=0)
    idx = np.clip(np.rint((points - (center - half)) / pitch).astype(np.int64), 0, m - 1)
    empty = np.ones((m, m, m), dtype=bool)
    empty[idx[:, 0], idx[:, 1], idx[:, 2]] = False
    dist = torch.from_numpy(ndimage.distance_transform_edt(empty).astype(np.float32))
    if m < n:
        dist = torch.nn.functional.interpolate(dist[None, None], size=(n, n, n), mode="trilinear",
                                               align_corners=True)[0, 0] * ((n - 1) / (m - 1))
    return (dist - 1.5).numpy()


def _mesh_size(result):
    """(vertices, triangles) of any implementation's result."""
    if hasattr(result, "verts") and hasattr(result, "faces"):
        return int(result.verts.shape[0]), int(result.faces.shape[0])
    if hasattr(result, "GetNumberOfPoints"):  # vtkPolyData
        return int(result.GetNumberOfPoints()), int(result.GetNumberOfCells())
    if hasattr(result, "indices"):  # warp: flat index array
        return int(result.verts.shape[0]), int(result.indices.shape[0] // 3)
    return int(result[0].shape[0]), int(result[1].shape[0])  # (verts, faces, ...) tuples


def _mc_case(shape, n, dtype=torch.float32):
    def build(device):
        import flowkernels as fk
        grid = sdf_grid(shape, n)
        tgrid = torch.from_numpy(grid).to(device=device, dtype=dtype)
        impls, skipped = {"flowkernels": lambda: fk.marching_cubes(tgrid, 0.0)}, {}
        slow_ok = n <= MC_SLOW_PEER_LIMIT[device] and dtype == torch.float32
        if slow_ok:
            try:
                from skimage.measure import marching_cubes
                impls["skimage-lewiner"] = lambda: marching_cubes(grid, 0.0, method="lewiner")
                impls["skimage-lorensen"] = lambda: marching_cubes(grid, 0.0, method="lorensen")
            except ImportError:
                skipped["skimage"] = "scikit-image is not installed"
            try:
                import mcubes
                impls["pymcubes"] = lambda: mcubes.marching_cubes(grid, 0.0)
            except ImportError:
                skipped["pymcubes"] = "PyMCubes is not installed"
            try:
                impls["vtk-flying-edges"] = _vtk_flying_edges(grid)
            except ImportError:
                skipped["vtk-flying-edges"] = "vtk is not installed"
        else:
            skipped["cpu peers"] = f"not run at {n}^3 {str(dtype).replace('torch.', '')} on {device}"
        if dtype == torch.float32 and (device == "cuda" or n <= 256):  # warp's CPU path takes seconds at 256^3
            try:
                impls["warp"] = _warp_mc(tgrid)
            except ImportError:
                skipped["warp"] = "warp-lang is not installed"
            except Exception as exc:  # an installed warp whose API differs: say so rather than fail the run
                skipped["warp"] = f"warp-lang marching cubes failed to set up: {type(exc).__name__}: {exc}"
        return Built(impls, skipped=skipped, info={"grid": n, "shape": shape, "dtype": str(dtype)},
                     output_size=_mesh_size)
    return build


def _vtk_flying_edges(grid):
    """VTK's vtkFlyingEdges3D with its threaded SMP backend on all cores (the fastest CPU marching cubes we know)."""
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonCore import vtkSMPTools
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D
    if vtkSMPTools.GetBackend() == "Sequential":  # PyPI wheels default to it; STDThread is always built in
        vtkSMPTools.SetBackend("STDThread")
    vtkSMPTools.Initialize(0)  # 0: all cores
    image = vtkImageData()
    image.SetDimensions(grid.shape[2], grid.shape[1], grid.shape[0])  # VTK is x-fastest: C order reversed
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(grid).ravel(), deep=False))
    flying_edges = vtkFlyingEdges3D()
    flying_edges.SetInputData(image)
    flying_edges.SetValue(0, 0.0)
    flying_edges.ComputeNormalsOff()
    flying_edges.ComputeGradientsOff()
    flying_edges.ComputeScalarsOff()

    def run():
        flying_edges.Modified()  # force a re-execution
        flying_edges.Update()
        return flying_edges.GetOutput()
    run.keep_alive = image  # numpy_to_vtk(deep=False) needs the array alive
    return run


def _warp_mc(tgrid):
    import warp as wp
    wp.config.quiet = True
    wp.init()
    if not hasattr(wp, "MarchingCubes"):
        raise ImportError("this warp-lang has no MarchingCubes")
    device = "cuda:0" if tgrid.is_cuda else "cpu"
    field = wp.from_torch(tgrid.contiguous()) if tgrid.is_cuda else wp.array(tgrid.numpy(), device="cpu")
    n = tgrid.shape
    try:  # warp >= 1.8: the device comes from the field
        mc = wp.MarchingCubes(*n)
    except TypeError:
        mc = wp.MarchingCubes(*n, max_verts=0, max_tris=0, device=device)

    def run():
        mc.surface(field, 0.0)
        return mc
    return run


MC_IMPLEMENTATIONS = ("flowkernels", "skimage-lewiner", "skimage-lorensen", "pymcubes", "vtk-flying-edges", "warp")
for _device in ("cpu", "cuda"):
    for _n in MC_SIZES[_device] + MC_EXTRA_SIZES[_device]:
        for _shape in MC_SHAPES:
            if _n < 1024 or _device == "cpu":
                register(Case("mc", f"{_shape}-{_n}", _mc_case(_shape, _n), baseline=("skimage-lewiner",
                              "vtk-flying-edges"), devices=(_device,), implementations=MC_IMPLEMENTATIONS,
                              on_request=_n in MC_EXTRA_SIZES[_device]))
# the 1024^3 target on CUDA: fp16, within 8 GB of scratch
register(Case("mc", "sphere-1024-fp16", _mc_case("sphere", 1024, torch.float16), baseline="warp", devices=("cuda",),
              implementations=MC_IMPLEMENTATIONS))


# --- end to end: a small DiT training step and a 50-step guided sampling run ----------------------------------------
E2E_SIZES = {"cuda": dict(B=16, tokens=4096, channels=64, width=256, blocks=4),
             "cpu": dict(B=2, tokens=256, channels=64, width=128, blocks=2)}


def _e2e_case(kind):
    def build(device):
        from flowkernels.compat.sit import create_transport
        from flowkernels.reference import samplers as ref_samplers
        from flowkernels.reference.sit_transport import create_original_transport
        from flowkernels.sampling import Guidance, hunyuan_timesteps, sample_euler
        cfg = E2E_SIZES[device]
        model = _TinyDiT(cfg["channels"], cfg["width"], cfg["blocks"]).to(device)
        x1 = torch.randn(cfg["B"], cfg["tokens"], cfg["channels"], device=device)
        transport = create_transport("Linear", "velocity")
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else _null()
        if kind == "train":
            original = create_original_transport("Linear", "velocity")

            def eager():  # SiT's / Hunyuan3D-2.1's Transport, its own calls (reference.sit_transport)
                with amp:
                    original.training_losses(model, x1)["loss"].mean().backward()

            def fused():
                with amp:
                    transport.training_losses(model, x1)["loss"].mean().backward()
            return Built({"eager": eager, "flowkernels": fused}, info=cfg)

        noise = x1[:2]

        @torch.no_grad()
        def run_model(x, t, cond=None, guidance=None):
            with amp:
                return model(x, t).to(x.dtype)

        def eager():
            ref_samplers.hunyuan_sample(run_model, noise, None, 50, 5.0)

        def fused():
            with torch.no_grad():
                sample_euler(lambda x, t: run_model(x, t), noise, hunyuan_timesteps(50), guidance=Guidance(5.0),
                             convention="sit")
        return Built({"eager": eager, "flowkernels": fused}, info=dict(cfg, steps=50, B=2))
    return build


# A train step is ~16 ms of model on CPU, and the flow part differs by about 0.1 ms between the two sides: 300 calls
# each, one per round in alternation, so that drift of a shared machine moves both medians alike (the default 0.2 s
# of calls gave 7 per side, and ratios of 0.90-1.06 between runs; 40 a side still 0.99-1.03).
register(Case("e2e", "train", _e2e_case("train"), min_reps=300))
register(Case("e2e", "sample50", _e2e_case("sample50"), min_reps=5))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _TinyDiT(torch.nn.Module):
    def __init__(self, channels, width, blocks):
        super().__init__()
        self.inp = torch.nn.Linear(channels, width)
        self.t = torch.nn.Linear(1, width)
        # dropout 0, as in DiT / SiT blocks (torch's default of 0.1 spent a third of the CPU step drawing masks)
        layer = torch.nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.out = torch.nn.Linear(width, channels)

    def forward(self, x, t):
        h = self.inp(x) + self.t(t.view(-1, 1, 1).to(x.dtype))
        return self.out(self.blocks(h))


# --- reconstruction metrics: nearest neighbours both ways (declared in metrics_cases.py) ------------------------------
from . import metrics_cases  # noqa: E402,F401  (importing it registers the "metrics" cases)
# --- the seeded loss step, the TRELLIS.2 rescale step, fp16 marching cubes (declared in kernel_cases.py) ----------
from . import kernel_cases  # noqa: E402,F401  (registers the seeded-loss, TRELLIS.2-rescale and fp16 mc cases)
# --- training-data preparation: Hunyuan3D's watertight_and_sample (declared in prepare_cases.py) --------------------
from . import prepare_cases  # noqa: E402,F401  (importing it registers the "prepare" cases)

OPS = registered_ops()  # every op above, in registration order
