"""Small CUDA workloads for compute-sanitizer (memcheck, racecheck): marching cubes (incl. NaN cells and a strided
fp16 grid), the fused loss (dense and ragged) and the guided step. Exits non-zero if a result is wrong."""
import torch

import flowkernels as fk
from flowkernels.sampling import guided_step, step_coefficients

dev = "cuda"
ax = torch.linspace(-1, 1, 37, device=dev)
X, Y, Z = torch.meshgrid(ax, ax, ax, indexing="ij")
sphere = (X**2 + Y**2 + Z**2).sqrt() - 0.6
mesh = fk.marching_cubes(sphere, 0.0)
assert mesh.faces.shape[0] > 0 and mesh.faces.max() < mesh.verts.shape[0]
holes = sphere.clone()
holes[::3, 5:9] = float("nan")
mesh = fk.marching_cubes(holes, 0.0)
assert torch.isfinite(mesh.verts).all()
fk.marching_cubes(sphere.half().transpose(0, 2), 0.0)
fk.marching_cubes(torch.stack([sphere, -sphere]), 0.0)
x1 = torch.randn(5, 301, 7, device=dev)
pred = torch.randn(5, 301, 7, device=dev, dtype=torch.bfloat16, requires_grad=True)
t = torch.rand(5, device=dev)
fk.flow_matching_loss(pred, x1, t, seed=3, reduction="mean").backward()
offsets = torch.tensor([0, 100, 100, 1000, 1001, 1505], device=dev)
feats = torch.randn(1505, 8, device=dev)
p = torch.randn(1505, 8, device=dev, requires_grad=True)
fk.flow_matching_loss(p, feats, t, seed=4, convention="trellis", offsets=offsets, reduction="mean").backward()
x = torch.randn(3, 1000, device=dev)
out = torch.randn(6, 1000, device=dev, dtype=torch.float16)
model_in = torch.empty(6, 1000, device=dev, dtype=torch.float16)
guided_step(x, out[:3], out[3:], torch.tensor(step_coefficients(0.1, 3.0, -2.0), device=dev), out=x,
            model_in=model_in, backend="triton")
# guidance rescale on dense rows and on ragged rows (the step kernel reads each sample's partial sums)
guided_step(x, out[:3], out[3:], torch.tensor(step_coefficients(0.1, 3.0, -2.0, 1.0, -0.5), device=dev), out=x,
            rescale=0.7, backend="triton")
both = torch.randn(2 * 1505, 8, device=dev, dtype=torch.bfloat16)
state = torch.randn(1505, 8, device=dev)
guided_step(state, both[:1505], both[1505:], torch.tensor(step_coefficients(0.1, 3.0, -2.0, 1.0, -0.5), device=dev),
            out=state, x0=torch.empty_like(state), offsets=offsets, rescale=0.5, backend="triton")
assert torch.isfinite(state).all()
torch.cuda.synchronize()
print("sanitize targets ok")
