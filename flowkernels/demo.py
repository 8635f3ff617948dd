"""`flowkernels demo`: train a tiny flow-matching model on SDF grids of simple shapes, sample, mesh, export.

Runs on the CPU by default (well under 3 minutes on 2 cores), on CUDA with --device cuda.
"""
from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F


def random_shapes(batch: int, res: int, generator=None, device="cpu", kinds=None) -> torch.Tensor:
    """[B, res, res, res] signed distances (negative inside, clipped to +-0.5) of random spheres, boxes, tori
    (kinds[i] in 0, 1, 2 picks the shape; random when not given)."""
    ax = torch.linspace(-1, 1, res, device=device)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    out = []
    for i in range(batch):
        kind = int(torch.randint(0, 3, (), generator=generator)) if kinds is None else int(kinds[i])
        c = (torch.rand(3, generator=generator) - 0.5) * 0.4
        px, py, pz = x - float(c[0]), y - float(c[1]), z - float(c[2])
        size = 0.35 + 0.25 * float(torch.rand((), generator=generator))
        if kind == 0:
            sdf = torch.sqrt(px**2 + py**2 + pz**2) - size
        elif kind == 1:
            q = torch.stack([px.abs(), py.abs(), pz.abs()]) - size * 0.8
            sdf = q.clamp_min(0).norm(dim=0) + q.max(dim=0).values.clamp_max(0)
        else:
            ring = torch.sqrt(px**2 + py**2) - size
            sdf = torch.sqrt(ring**2 + pz**2) - size * 0.4
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


def _time(fn, repeats=5):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


KINDS = ("sphere", "box", "torus")


def run(steps=800, batch=16, res=16, samples=6, sample_steps=24, device="cpu", out_dir="demo_out", seed=0,
        guidance_scale=2.0, verbose=True):
    """Train, sample (guided Euler on the fused step), mesh and export; print where the time went."""
    from .compat.hunyuan3d import FlowMatchingSampler
    from .compat.sit import create_transport
    from .marching_cubes import marching_cubes

    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    n_data = 384
    kinds = torch.arange(n_data) % len(KINDS)
    data = random_shapes(n_data, res, gen, kinds=kinds).to(device) * 2.0  # scale to unit-ish variance
    kinds = kinds.to(device)
    model = TinyFlowNet(n_classes=len(KINDS)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    transport = create_transport("Linear", "velocity")
    print(f"[demo] training a {sum(p.numel() for p in model.parameters())}-parameter class-conditional flow model "
          f"on {res}^3 SDF grids of {'/'.join(KINDS)}, {steps} steps of batch {batch} on {device}")
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n_data, (batch,), generator=gen).to(device)
        label = torch.where(torch.rand(batch, device=device) < 0.15, len(KINDS), kinds[idx])  # label dropout
        loss = transport.training_losses(model, data[idx], {"label": label})["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if verbose and (step % max(1, steps // 5) == 0 or step == 1):
            print(f"  step {step:4d}  loss {loss.item():.4f}")
    train_s = time.perf_counter() - start

    # guided sampling with Hunyuan3D's conventions: t 0 (noise) -> 1 (data), [cond; uncond] batch, v_u + w (v_c - v_u)
    model.eval()
    labels = torch.arange(samples, device=device) % len(KINDS)
    cond = torch.cat([labels, torch.full_like(labels, len(KINDS))])
    noise = torch.randn(samples, res, res, res, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    sampler = FlowMatchingSampler()
    start = time.perf_counter()
    x = sampler.sample(model, noise, cond, num_inference_steps=sample_steps, guidance_scale=guidance_scale,
                       enable_pbar=False)
    sample_s = time.perf_counter() - start

    # mesh each sample (upsampled 3x for a smoother surface) and write files
    start = time.perf_counter()
    fine = F.interpolate(x[:, None] / 2.0, scale_factor=3, mode="trilinear", align_corners=True)[:, 0]
    meshes = marching_cubes(fine, 0.0, bounds=1.0)
    mesh_s = time.perf_counter() - start
    written = _write_outputs(meshes, out_dir, [KINDS[int(k)] for k in labels])
    print(f"[demo] train {train_s:.1f} s, sample {sample_s:.2f} s ({sample_steps} guided Euler steps, "
          f"w={guidance_scale}), mesh {mesh_s * 1e3:.1f} ms for {samples} grids of {fine.shape[-1]}^3")
    _report_speed(data[:batch], fine[0], device, sample_steps)
    for path in written:
        print(f"[demo] wrote {path}")
    return meshes


def _report_speed(x1, grid, device, sample_steps):
    """Where the time goes, flowkernels against the reference paths, on this machine (one run, medians of 5)."""
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

    eager_ms, fused_ms = _time(eager_loss) * 1e3, _time(fused_loss) * 1e3
    print(f"[demo] loss step (interpolate + loss + backward, {tuple(x1.shape)}): flowkernels {fused_ms:.2f} ms vs "
          f"eager SiT reference {eager_ms:.2f} ms")
    # sampling overhead: the loop without the model (a model that returns a precomputed [cond; uncond] output)
    out = torch.randn((2,) + tuple(x1.shape), device=device).flatten(0, 1)
    free_model = lambda x, tt, cond=None, guidance=None: out[: x.shape[0]]  # noqa: E731
    eager_ms = _time(lambda: ref_samplers.hunyuan_sample(free_model, x1, None, sample_steps, 2.0)) * 1e3
    fused_ms = _time(lambda: sample_euler(lambda x, tt: out[: x.shape[0]], x1, hunyuan_timesteps(sample_steps),
                                          guidance=Guidance(2.0), convention="sit")) * 1e3
    print(f"[demo] sampling overhead without the model ({sample_steps} CFG steps): flowkernels "
          f"{fused_ms / sample_steps:.3f} ms/step vs eager Hunyuan3D loop {eager_ms / sample_steps:.3f} ms/step")
    try:
        from skimage.measure import marching_cubes as sk_mc
        grid_np = grid.cpu().numpy()
        sk_ms = _time(lambda: sk_mc(grid_np, 0.0)) * 1e3
        fk_ms = _time(lambda: marching_cubes(grid, 0.0)) * 1e3
        print(f"[demo] marching cubes {grid.shape[-1]}^3: flowkernels {fk_ms:.2f} ms vs scikit-image {sk_ms:.2f} ms")
    except ImportError:
        print("[demo] scikit-image not installed: meshing comparison skipped")


def _write_outputs(meshes, out_dir, titles):
    written = []
    try:
        from .mesh import export
        for i, mesh in enumerate(meshes):
            if len(mesh.faces):
                for ext in (".ply", ".glb"):
                    written.append(export(mesh, os.path.join(out_dir, f"sample_{i}{ext}")))
    except RuntimeError as exc:
        print(f"[demo] {exc}: mesh files skipped")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        fig = plt.figure(figsize=(3 * len(meshes), 3))
        for i, mesh in enumerate(meshes):
            ax = fig.add_subplot(1, len(meshes), i + 1, projection="3d")
            v, f = mesh.verts.cpu().numpy(), mesh.faces.cpu().numpy()
            if len(f):
                ax.add_collection3d(Poly3DCollection(v[f], facecolor="#8ab", edgecolor="#345", linewidth=0.1))
            ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
            ax.set_axis_off()
            ax.set_title(f"{titles[i]}: {len(f)} faces", fontsize=8)
        path = os.path.join(out_dir, "preview.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    except ImportError:
        print("[demo] matplotlib not installed: preview.png skipped")
    return written


def add_parser(sub):
    p = sub.add_parser("demo", help="train, sample and mesh a tiny 3D flow-matching model")
    p.add_argument("--steps", type=int, default=800, help="training steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--res", type=int, default=16, help="SDF grid resolution (must be even)")
    p.add_argument("--samples", type=int, default=6)
    p.add_argument("--sample-steps", type=int, default=24)
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--out", default="demo_out")
    p.set_defaults(fn=lambda a: (run(a.steps, a.batch, a.res, a.samples, a.sample_steps, a.device, a.out,
                                     guidance_scale=a.guidance), 0)[1])


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False

