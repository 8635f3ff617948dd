"""`flowkernels demo`: train a tiny flow-matching model on SDF grids of simple shapes, sample, mesh, export.

Runs on the CPU by default (well under 3 minutes on 2 cores), on CUDA with --device cuda.
"""
from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F


def random_shapes(batch: int, res: int, generator=None, device="cpu") -> torch.Tensor:
    """[B, res, res, res] signed distances (negative inside, clipped to +-0.5) of random spheres, boxes, tori."""
    ax = torch.linspace(-1, 1, res, device=device)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    out = []
    for _ in range(batch):
        kind = int(torch.randint(0, 3, (), generator=generator))
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
    """A small 3D conv velocity model v(x_t, t)."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.inp = torch.nn.Conv3d(2, width, 3, padding=1)
        self.mid = torch.nn.ModuleList(torch.nn.Conv3d(width, width, 3, padding=1) for _ in range(2))
        self.out = torch.nn.Conv3d(width, 1, 3, padding=1)

    def forward(self, x, t):
        h = torch.cat([x[:, None], t.view(-1, 1, 1, 1, 1).expand_as(x[:, None]).to(x.dtype)], 1)
        h = F.silu(self.inp(h))
        for layer in self.mid:
            h = h + F.silu(layer(h))
        return self.out(h)[:, 0]


def _time(fn, repeats=5):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(steps=150, batch=16, res=16, samples=4, sample_steps=20, device="cpu", out_dir="demo_out", seed=0):
    from .compat.sit import create_transport
    from .marching_cubes import marching_cubes
    from .reference import flow_matching as ref

    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    data = random_shapes(256, res, gen).to(device) * 2.0  # scale to unit-ish variance
    model = TinyFlowNet().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    transport = create_transport("Linear", "velocity")
    print(f"[demo] training a {sum(p.numel() for p in model.parameters())}-parameter flow model on "
          f"{res}^3 SDF grids, {steps} steps of batch {batch} on {device}")
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x1 = data[torch.randint(0, len(data), (batch,), generator=gen)]
        loss = transport.training_losses(model, x1)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, steps // 5) == 0 or step == 1:
            print(f"  step {step:4d}  loss {loss.item():.4f}")
    train_s = time.perf_counter() - start

    # Euler sampling, SiT convention: t goes 0 (noise) -> 1 (data)
    start = time.perf_counter()
    x = torch.randn(samples, res, res, res, device=device, generator=torch.Generator(device).manual_seed(seed))
    ts = torch.linspace(0, 1, sample_steps + 1, device=device)
    with torch.no_grad():
        for t0, t1 in zip(ts[:-1], ts[1:]):
            x = x + (t1 - t0) * model(x, t0.expand(samples))
    sample_s = time.perf_counter() - start

    # mesh each sample (upsampled 3x for a smoother surface) and write files
    start = time.perf_counter()
    fine = F.interpolate(x[:, None] / 2.0, scale_factor=3, mode="trilinear", align_corners=True)[:, 0]
    meshes = marching_cubes(fine, 0.0, bounds=1.0)
    mesh_s = time.perf_counter() - start
    written = _write_outputs(meshes, out_dir)

    # where the time goes: fused loss path vs the eager reference, on the same batch
    x1 = data[:batch]
    t = torch.rand(batch, device=device)
    noise = torch.randn_like(x1)
    pred = torch.randn_like(x1, requires_grad=True)

    def eager_loss():
        xt, ut = ref.sit_plan("linear", t, noise, x1)
        ref.mean_flat((pred - ut) ** 2).mean().backward()

    def fused_loss():
        from .flow_matching import flow_interpolate, flow_matching_loss
        flow_interpolate(x1, t, noise)
        flow_matching_loss(pred, x1, t, noise, reduction="mean").backward()

    eager_ms, fused_ms = _time(eager_loss) * 1e3, _time(fused_loss) * 1e3
    print(f"[demo] train {train_s:.1f} s, sample {sample_s:.2f} s ({sample_steps} Euler steps), "
          f"mesh {mesh_s * 1e3:.1f} ms for {samples} grids of {fine.shape[-1]}^3")
    print(f"[demo] loss path (interpolate + loss + backward, batch {batch}x{res}^3): flowkernels "
          f"{fused_ms:.2f} ms vs eager reference {eager_ms:.2f} ms")
    try:
        from skimage.measure import marching_cubes as sk_mc
        grid = fine[0].cpu().numpy()
        sk_ms = _time(lambda: sk_mc(grid, 0.0)) * 1e3
        fk_ms = _time(lambda: marching_cubes(fine[0], 0.0)) * 1e3
        print(f"[demo] marching cubes {fine.shape[-1]}^3: flowkernels {fk_ms:.2f} ms vs scikit-image {sk_ms:.2f} ms")
    except ImportError:
        print("[demo] scikit-image not installed: meshing comparison skipped")
    for path in written:
        print(f"[demo] wrote {path}")
    return meshes


def _write_outputs(meshes, out_dir):
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
            ax.set_title(f"sample {i}: {len(f)} faces", fontsize=8)
        path = os.path.join(out_dir, "preview.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    except ImportError:
        print("[demo] matplotlib not installed: preview.png skipped")
    return written


def add_parser(sub):
    p = sub.add_parser("demo", help="train, sample and mesh a tiny 3D flow-matching model")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--res", type=int, default=16)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--out", default="demo_out")
    p.set_defaults(fn=lambda a: (run(a.steps, a.batch, a.res, a.samples, a.sample_steps, a.device, a.out), 0)[1])


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


if __name__ == "__main__":
    import sys
    from .cli import main
    sys.exit(main(["demo", *sys.argv[1:]]))
