"""`flowkernels demo`: train a small flow-matching model on SDF grids of spheres, boxes and tori, sample it with
guidance, mesh the samples, score them (genus, distance to the training set) and report where the time went.

Runs on the CPU by default (about 3 minutes on 2 cores), on CUDA with --device cuda.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

KINDS = ("sphere", "box", "torus")
GENUS = {"sphere": 0, "box": 0, "torus": 1}  # what a correct sample's surface has


def random_shapes(batch: int, res: int, generator=None, device="cpu", kinds=None) -> torch.Tensor:
    """[B, res, res, res] signed distances (negative inside, clipped to +-0.5) of random spheres, boxes, tori
    (kinds[i] in 0, 1, 2 picks the shape; random when not given). Sizes keep every shape a few voxels thick at
    16^3, so the torus's hole and tube both survive the grid."""
    ax = torch.linspace(-1, 1, res, device=device)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    out = []
    for i in range(batch):
        kind = int(torch.randint(0, 3, (), generator=generator)) if kinds is None else int(kinds[i])
        c = (torch.rand(3, generator=generator) - 0.5) * 0.2
        px, py, pz = x - float(c[0]), y - float(c[1]), z - float(c[2])
        u = float(torch.rand((), generator=generator))
        if kind == 0:
            sdf = torch.sqrt(px**2 + py**2 + pz**2) - (0.4 + 0.2 * u)
        elif kind == 1:
            q = torch.stack([px.abs(), py.abs(), pz.abs()]) - (0.3 + 0.15 * u)
            sdf = q.clamp_min(0).norm(dim=0) + q.max(dim=0).values.clamp_max(0)
        else:
            ring = 0.5 + 0.12 * u
            sdf = torch.sqrt((torch.sqrt(px**2 + py**2) - ring) ** 2 + pz**2) - 0.4 * ring
        out.append(sdf.clamp(-0.5, 0.5))
    return torch.stack(out)


class TinyFlowNet(torch.nn.Module):
    """A small class-conditional 3D U-Net velocity model v(x_t, t, label): one full-resolution level, one at half
    resolution, FiLM conditioning on a sinusoidal time embedding plus a label embedding (label N_CLASSES = none)."""

    def __init__(self, width: int = 24, n_classes: int = 3):
        super().__init__()
        w2 = 2 * width
        self.n_classes = n_classes
        self.label = torch.nn.Embedding(n_classes + 1, 64)
        self.time = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64))
        self.film = torch.nn.Linear(64, 2 * w2)
        self.inp = torch.nn.Conv3d(1, width, 3, padding=1)
        self.down = torch.nn.Conv3d(width, w2, 3, stride=2, padding=1)
        self.mid = torch.nn.ModuleList(torch.nn.Conv3d(w2, w2, 3, padding=1) for _ in range(2))
        self.up = torch.nn.ConvTranspose3d(w2, width, 2, stride=2)
        self.out = torch.nn.Conv3d(2 * width, 1, 3, padding=1)

    def forward(self, x, t, label=None, guidance=None):
        B = x.shape[0]
        if label is None:
            label = torch.full((B,), self.n_classes, device=x.device, dtype=torch.long)
        freqs = torch.exp(torch.linspace(0, 6, 16, device=x.device))
        ang = t.float().view(-1, 1) * freqs
        emb = self.time(torch.cat([ang.sin(), ang.cos()], dim=1)) + self.label(label)
        scale, shift = self.film(F.silu(emb)).view(B, 2, -1, 1, 1, 1).unbind(1)
        h0 = F.silu(self.inp(x[:, None]))
        h = F.silu(self.down(h0)) * (1 + scale) + shift
        for layer in self.mid:
            h = h + F.silu(layer(h))
        h = F.silu(self.up(h))
        return self.out(torch.cat([h, h0], dim=1))[:, 0]


def _side_by_side(fused, original, repeats, min_run_s=2e-3):
    """(fused, original) ms per call: the median of `repeats` runs of each, the two alternating so that a busy
    machine slows both alike, after two warm-up calls each; a part faster than min_run_s is called repeatedly
    within a run, so the timer's resolution and the loop around it do not matter."""
    for _ in range(2):
        start = time.perf_counter()
        fused()
        mid = time.perf_counter()
        original()
        one_call = min(mid - start, time.perf_counter() - mid)
    calls = max(1, min(1000, int(min_run_s / max(one_call, 1e-7))))
    runs = ([], [])
    for _ in range(repeats):
        for fn, times in zip((fused, original), runs):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - start) / calls)
    return tuple(sorted(times)[len(times) // 2] * 1e3 for times in runs)


def run(steps=800, batch=16, res=16, per_class=4, sample_steps=24, device="cpu", out_dir="demo_out", seed=0,
        guidance_scale=2.0, verbose=True, speed_report=True, repeats=7):
    """Train, sample (guided Euler on the fused step), mesh, score, export; print where the time went.
    Returns the meshes, per_class samples of each class in KINDS order."""
    from .compat.hunyuan3d import FlowMatchingSampler
    from .compat.sit import create_transport
    from .marching_cubes import marching_cubes

    wall = time.perf_counter()
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    n_data = 384
    kinds = torch.arange(n_data) % len(KINDS)
    data = random_shapes(n_data, res, gen, kinds=kinds).to(device) * 2.0  # scale to unit-ish variance
    kinds = kinds.to(device)
    model = TinyFlowNet(n_classes=len(KINDS)).to(device)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.99))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    transport = create_transport("Linear", "velocity")
    print(f"[demo] training a {sum(p.numel() for p in model.parameters())}-parameter class-conditional flow model "
          f"on {res}^3 SDF grids of {'/'.join(KINDS)}, {steps} steps of batch {batch} on {device} "
          f"(loss: flowkernels.compat.sit, the fused kernels)")
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n_data, (batch,), generator=gen).to(device)
        label = torch.where(torch.rand(batch, device=device) < 0.15, len(KINDS), kinds[idx])  # label dropout
        loss = transport.training_losses(model, data[idx], {"label": label})["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(model)
        if verbose and (step % max(1, steps // 5) == 0 or step == 1):
            print(f"  step {step:4d}  loss {loss.item():.4f}")
    train_s = time.perf_counter() - start

    # guided sampling with Hunyuan3D's conventions: t 0 (noise) -> 1 (data), [cond; uncond] batch, v_u + w (v_c - v_u)
    net = ema.module.eval()
    labels = torch.arange(len(KINDS), device=device).repeat_interleave(per_class)
    cond = torch.cat([labels, torch.full_like(labels, len(KINDS))])
    noise = torch.randn(len(labels), res, res, res, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    start = time.perf_counter()
    x = FlowMatchingSampler().sample(net, noise, cond, num_inference_steps=sample_steps,
                                     guidance_scale=guidance_scale, enable_pbar=False)
    sample_s = time.perf_counter() - start

    # mesh each sample (upsampled 3x for a smoother surface)
    start = time.perf_counter()
    fine = F.interpolate(x[:, None] / 2.0, scale_factor=3, mode="trilinear", align_corners=True)[:, 0]
    meshes = marching_cubes(fine, 0.0, bounds=1.0)
    mesh_s = time.perf_counter() - start
    print(f"[demo] train {train_s:.1f} s, sample {sample_s:.2f} s ({len(labels)} samples, {sample_steps} guided "
          f"Euler steps, w={guidance_scale}), mesh {mesh_s * 1e3:.1f} ms for {len(labels)} grids of "
          f"{fine.shape[-1]}^3")
    names = [f"{KINDS[int(k)]}_{i % per_class}" for i, k in enumerate(labels)]
    genera = score_samples(meshes, [KINDS[int(k)] for k in labels], data[::max(1, n_data // 96)] / 2.0, res)
    if speed_report:
        _report_speed(data[:batch], fine[0], device, sample_steps, repeats)
    for path in _write_outputs(meshes, out_dir, names, genera, per_class):
        print(f"[demo] wrote {path}")
    print(f"[demo] done in {time.perf_counter() - wall:.0f} s wall on {device}")
    return meshes


def score_samples(meshes, classes, reference_grids, res):
    """Print, per class, the fraction of samples with the class's genus and the Chamfer distance (OccNet
    convention, world units of the [-1, 1] box) from each sample to its nearest training shape. Returns the
    genus of each sample (None for an empty mesh)."""
    from .marching_cubes import marching_cubes
    from .metrics import chamfer_to_nearest, genus

    fine = F.interpolate(reference_grids[:, None].float().cpu(), scale_factor=3, mode="trilinear",
                         align_corners=True)[:, 0]
    references = [m for m in marching_cubes(fine, 0.0, bounds=1.0) if len(m.faces)]
    genera, distances = [], []
    for mesh in meshes:
        if len(mesh.faces) == 0:
            genera.append(None)
            distances.append(float("nan"))
            continue
        cpu = type(mesh)(mesh.verts.cpu(), mesh.faces.cpu())
        # a sample is right only as one piece: blobs of noise also have total genus 0
        genera.append(genus(cpu) if _components(cpu) == 1 else f"{_components(cpu)} pieces")
        distances.append(chamfer_to_nearest(cpu, references, n_points=1000)[0])
    print(f"[demo] samples scored: right = one piece with the class's genus (Euler characteristic of the welded "
          f"mesh); distance = Chamfer "
          f"(OccNet) to the nearest of {len(references)} training shapes")
    print(f"  {'class':<8}{'right genus':>14}{'genera':>16}{'distance mean':>15}{'max':>8}")
    for kind in KINDS:
        rows = [i for i, c in enumerate(classes) if c == kind]
        right = sum(genera[i] == GENUS[kind] for i in rows)
        got = ",".join("-" if genera[i] is None else str(genera[i]).replace(" pieces", "p") for i in rows)
        d = torch.tensor([distances[i] for i in rows], dtype=torch.float64)
        print(f"  {kind:<8}{f'{right}/{len(rows)} ({100 * right / max(len(rows), 1):.0f}%)':>14}{got:>16}"
              f"{d.nanmean().item():>15.4f}{d.nan_to_num(float('inf')).max().item():>8.4f}")
    return genera


def _components(mesh) -> int:
    """Connected pieces of the welded mesh."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .metrics import weld
    welded = weld(mesh)
    faces = welded.faces.numpy()
    n = int(welded.verts.shape[0])
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    _, label = connected_components(coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)),
                                    directed=False)
    return int(np.unique(label[np.unique(faces)]).size)


def _report_speed(x1, grid, device, sample_steps, repeats):
    """Each fused part against the eager code it replaces, timed side by side in this run."""
    from .flow_matching import flow_interpolate, flow_matching_loss
    from .marching_cubes import marching_cubes
    from .reference import flow_matching as ref
    from .reference import samplers as ref_samplers
    from .sampling import Guidance, hunyuan_timesteps, sample_euler

    B = x1.shape[0]
    t = torch.rand(B, device=device)
    noise = torch.randn_like(x1)
    pred = torch.randn_like(x1, requires_grad=True)

    def eager_loss():
        xt, ut = ref.sit_plan("linear", t, noise, x1)
        ref.mean_flat((pred - ut) ** 2).mean().backward()

    def fused_loss():
        flow_interpolate(x1, t, noise)
        flow_matching_loss(pred, x1, t, noise, reduction="mean").backward()

    rows = [(f"loss step {tuple(x1.shape)} (interpolate + loss + backward)", "eager SiT code",
             *_side_by_side(fused_loss, eager_loss, repeats))]
    # the sampling loop without the model (a model that returns a precomputed [cond; uncond] output)
    out = torch.randn((2,) + tuple(x1.shape), device=device).flatten(0, 1)
    free_model = lambda x, tt, cond=None, guidance=None: out[: x.shape[0]]  # noqa: E731
    fused, eager = _side_by_side(
        lambda: sample_euler(lambda x, tt: out[: x.shape[0]], x1, hunyuan_timesteps(sample_steps),
                             guidance=Guidance(2.0), convention="sit"),
        lambda: ref_samplers.hunyuan_sample(free_model, x1, None, sample_steps, 2.0), repeats)
    rows.append((f"guided sampling, per step, no model ({sample_steps} steps)", "eager Hunyuan3D loop",
                 fused / sample_steps, eager / sample_steps))
    try:
        from skimage.measure import marching_cubes as sk_mc
        grid_np = grid.cpu().numpy()
        rows.append((f"marching cubes {grid.shape[-1]}^3", "scikit-image",
                     *_side_by_side(lambda: marching_cubes(grid, 0.0), lambda: sk_mc(grid_np, 0.0), repeats)))
    except ImportError:
        print("[demo] scikit-image not installed: the marching-cubes comparison is skipped")
    print(f"[demo] speed on {device} ({torch.get_num_threads()} threads), fused vs the original, median of {repeats} "
          "runs each, the two alternating (a part under 2 ms is repeated within a run; two warm-up calls first):")
    for part, original, ours, theirs in rows:
        print(f"  {part:<58} flowkernels {ours:8.2f} ms  {original:<21} {theirs:8.2f} ms  "
              f"{theirs / ours:5.2f}x")


def _write_outputs(meshes, out_dir, names, genera, per_class):
    written = []
    try:
        from .mesh import export
        for name, mesh in zip(names, meshes):
            if len(mesh.faces):
                for ext in (".glb", ".ply"):
                    written.append(export(mesh, os.path.join(out_dir, name + ext)))
    except RuntimeError as exc:
        print(f"[demo] {exc}: mesh files skipped")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    except ImportError:
        print("[demo] matplotlib not installed: preview.png skipped")
        return written
    fig = plt.figure(figsize=(3.2 * per_class, 3.4 * len(KINDS)))
    for i, (name, mesh) in enumerate(zip(names, meshes)):
        kind = name.rsplit("_", 1)[0]
        ax = fig.add_subplot(len(KINDS), per_class, i + 1, projection="3d")
        v, f = mesh.verts.cpu().numpy(), mesh.faces.cpu().numpy()
        if len(f):
            ax.add_collection3d(Poly3DCollection(v[f], facecolor="#8ab", edgecolor="#345", linewidth=0.1))
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
        ax.view_init(elev=35, azim=30)
        ax.set_axis_off()
        g = genera[i]
        if g is None or isinstance(g, str):
            verdict = "empty" if g is None else g
        else:
            verdict = f"genus {g} " + ("(right)" if g == GENUS[kind] else f"(want {GENUS[kind]})")
        ax.set_title(f"{name}: {verdict}", fontsize=11)
    fig.suptitle("flowkernels demo: one row per class", fontsize=13)
    fig.tight_layout()
    path = os.path.join(out_dir, "preview.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def add_parser(sub):
    p = sub.add_parser("demo", help="train, sample, mesh and score a small 3D flow-matching model",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=800, help="training steps")
    p.add_argument("--batch", type=int, default=16, help="training batch size")
    p.add_argument("--res", type=int, default=16, help="SDF grid resolution (even, >= 8)")
    p.add_argument("--per-class", type=int, default=4, help="samples drawn per class")
    p.add_argument("--sample-steps", type=int, default=24, help="guided Euler steps per sample")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default="demo_out", help="folder for the meshes and preview.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the model and the samples")
    p.add_argument("--no-speed-report", action="store_true", help="skip the timing of fused vs original parts")
    p.set_defaults(fn=_run_cli)


def _run_cli(args) -> int:
    import math

    from ._cli_checks import device, output_dir

    for name in ("steps", "batch", "per_class", "sample_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    if args.res < 8 or args.res % 2:
        raise ValueError(f"--res {args.res} must be even and >= 8 (the model halves the grid once)")
    if not math.isfinite(args.guidance):
        raise ValueError(f"--guidance {args.guidance} must be finite")
    if not -2**62 <= args.seed < 2**62:  # torch.manual_seed's own error does not name the option
        raise ValueError(f"--seed {args.seed} must be an integer in [-2**62, 2**62)")
    dev = device("--device", args.device)
    out = output_dir("--out", args.out)
    run(args.steps, args.batch, args.res, args.per_class, args.sample_steps, str(dev), out, args.seed,
        guidance_scale=args.guidance, speed_report=not args.no_speed_report)
    return 0
