"""flowkernels.metrics against float64 references written from each codebase's formula (flowkernels/reference/
metrics.py), against hand-computed tiny cases, on meshes (sampling, winding number, IoU, genus) and the bunny."""
import functools
import json
import os

import numpy as np
import pytest
import torch

from flowkernels import metrics
from flowkernels.metrics import _points
from flowkernels.reference import metrics as ref

CONVENTIONS = metrics.CONVENTIONS
BACKENDS = ("triton", "pykdtree", "scipy", "torch")  # triton runs under TRITON_INTERPRET=1 on the CPU


def _ragged(counts, dtype=torch.float32, scale=1.0, shift=0.0):
    return [(torch.rand(n, 3, dtype=torch.float64) * scale + shift).to(dtype) for n in counts]


def _offsets(counts):
    return torch.tensor([0] + list(counts)).cumsum(0)


def _unit_normals(n):
    v = torch.randn(n, 3, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


# --- against the float64 references: every convention, backend, layout and dtype -----------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_point_metrics_match_reference(backend):
    counts_p, counts_g = [37, 1, 150], [50, 9, 3]     # odd sizes; the middle sample has a single pred point
    P, G = _ragged(counts_p), _ragged(counts_g)
    NP, NG = [_unit_normals(n) for n in counts_p], [_unit_normals(n) for n in counts_g]
    flat_p, flat_g = torch.cat(P), torch.cat(G)
    op, og = _offsets(counts_p), _offsets(counts_g)
    # thresholds near typical nearest distances, drawn fresh, so every branch of <= / < sees hits and misses
    ts = tuple(float(t) for t in 0.05 + 0.2 * torch.rand(3))
    kw = dict(pred_offsets=op, gt_offsets=og, backend=backend)
    for conv in CONVENTIONS:
        for squared in (False, True):
            if (conv, squared) in (("pytorch3d", False), ("open3d", True)):
                continue
            got = metrics.chamfer(flat_p, flat_g, convention=conv, squared=squared, reduction="none", **kw)
            want = [ref.chamfer(p.numpy(), g.numpy(), conv, squared) for p, g in zip(P, G)]
            np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, err_msg=f"{conv} squared={squared}")
        got = metrics.f_score(flat_p, flat_g, ts, convention=conv, **kw)
        want = [[ref.f_score(p.numpy(), g.numpy(), t, conv) for t in ts] for p, g in zip(P, G)]
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9, err_msg=f"{conv} f-score {ts}")
        if conv in ("occnet", "pytorch3d"):
            got = metrics.normal_consistency(flat_p, flat_g, torch.cat(NP), torch.cat(NG), convention=conv,
                                             reduction="none", **kw)
            want = [ref.normal_consistency(p.numpy(), g.numpy(), a.numpy(), b.numpy(), conv)
                    for p, g, a, b in zip(P, G, NP, NG)]
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, err_msg=f"{conv} normals")
    got = metrics.hausdorff(flat_p, flat_g, **kw)
    np.testing.assert_allclose(got.numpy(), [ref.hausdorff(p.numpy(), g.numpy()) for p, g in zip(P, G)], rtol=1e-6)


def test_kdtree_choice():
    """pykdtree for large queries (when installed), scipy below; forcing either works."""
    big = _points.PYKDTREE_MIN_QUERIES
    assert _points.kdtree_library("kdtree", 100) == "scipy"
    assert _points.kdtree_library("kdtree", big) == "pykdtree"
    assert _points.kdtree_library("scipy", big) == "scipy" and _points.kdtree_library("pykdtree", 1) == "pykdtree"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_layouts_and_dtypes_agree(dtype):
    """Dense [B, N, 3], a list, ragged offsets, one [N, 3] set and numpy input give the same numbers; low
    precision inputs are measured as given (the reference sees the same rounded coordinates)."""
    B, N, M = 3, 41, 29
    p, g = torch.rand(B, N, 3).to(dtype), torch.rand(B, M, 3).to(dtype)
    want = np.array([ref.chamfer(p[b].double().numpy(), g[b].double().numpy(), "kaolin") for b in range(B)])
    dense = metrics.chamfer(p, g, convention="kaolin")
    listed = metrics.chamfer(list(p), list(g), convention="kaolin")
    ragged = metrics.chamfer(p.reshape(-1, 3), g.reshape(-1, 3), convention="kaolin",
                             pred_offsets=_offsets([N] * B), gt_offsets=_offsets([M] * B))
    single = torch.stack([metrics.chamfer(p[b], g[b], convention="kaolin") for b in range(B)])
    as_np = metrics.chamfer(p.float().numpy(), g.float().numpy(), convention="kaolin")
    on_triton = metrics.chamfer(p, g, convention="kaolin", backend="triton")
    assert isinstance(as_np, np.ndarray) and dense.shape == (B,) and single[0].dim() == 0
    for got in (dense, listed, ragged, single, torch.from_numpy(as_np), on_triton):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6)
    # PyTorch3D's default batch_reduction="mean"
    p3d = metrics.chamfer(p, g, convention="pytorch3d")
    assert p3d.dim() == 0
    np.testing.assert_allclose(float(p3d), np.mean(want), rtol=2e-6)


@pytest.mark.parametrize("block", [128, 32], ids=["interpreter-tile", "gpu-tile"])
def test_triton_kernel_straddling_blocks_and_empty_targets(monkeypatch, block):
    """Blocks of the interpreted kernel (128 rows, or the GPU's 32) that straddle many samples, a sample with no
    targets (inf, index -1) and exact ties (the lower index wins, as an argmin does); outputs are poisoned before
    the launch."""
    from flowkernels.ops import nearest_neighbor
    from flowkernels.ops.nearest_neighbor import nearest_both_triton
    monkeypatch.setattr(nearest_neighbor, "BLOCK_INTERPRET", block)

    def poisoned(n, device, dtype):
        return torch.full((n,), float("nan") if dtype.is_floating_point else -7, device=device, dtype=dtype)
    monkeypatch.setattr(nearest_neighbor, "_alloc", poisoned)
    counts_p, counts_g = [3, 200, 0, 1, 70, 5], [130, 2, 4, 0, 9, 1]
    P, G = torch.cat(_ragged(counts_p)), torch.cat(_ragged(counts_g))
    G[1] = G[0]  # a duplicate target: both are at the same distance from every query
    sp, ip, sg, ig = nearest_both_triton(P, _offsets(counts_p), G, _offsets(counts_g))
    op, og = _offsets(counts_p).tolist(), _offsets(counts_g).tolist()
    for b in range(len(counts_p)):
        a, c = P[op[b]:op[b + 1]].double(), G[og[b]:og[b + 1]].double()
        if len(c) == 0:
            assert torch.isinf(sp[op[b]:op[b + 1]]).all() and (ip[op[b]:op[b + 1]] == -1).all()
        elif len(a):
            d2, j = ref.nearest(a.numpy(), c.numpy())
            np.testing.assert_allclose(sp[op[b]:op[b + 1]].numpy(), d2**2, rtol=1e-6, atol=1e-7)
            assert (ip[op[b]:op[b + 1]].numpy() == j + og[b]).all()
        if len(a) == 0:
            assert torch.isinf(sg[og[b]:og[b + 1]]).all() and (ig[og[b]:og[b + 1]] == -1).all()
        elif len(c):
            d2, j = ref.nearest(c.numpy(), a.numpy())
            np.testing.assert_allclose(sg[og[b]:og[b + 1]].numpy(), d2**2, rtol=1e-6, atol=1e-7)
            assert (ig[og[b]:og[b + 1]].numpy() == j + op[b]).all()
    assert not torch.isnan(sp).any() and not torch.isnan(sg).any() and (ip != -7).all() and (ig != -7).all()


def test_bench_metrics_case_runs():
    """`flowkernels bench --ops metrics`: every implementation finds the same neighbours."""
    from flowkernels.bench import metrics_cases
    from flowkernels.bench.registry import Case
    from flowkernels.bench.runner import format_tables, run_cases
    case = metrics_cases._metrics_case(2, 300)
    built = case("cpu")
    results = {name: fn() for name, fn in built.impls.items()}
    want = results["pytorch3d-style"]
    for name, got in results.items():
        if isinstance(got, tuple):     # torch implementations: (d_pq, i_pq, d_qp, i_qp) [B, N]
            d_pq, d_qp = got[0].reshape(-1).double(), got[2].reshape(-1).double()
        else:                          # flowkernels' Matching
            d_pq, d_qp = got.sq_pred, got.sq_gt
        torch.testing.assert_close(d_pq, want[0].reshape(-1).double(), rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(d_qp, want[2].reshape(-1).double(), rtol=1e-4, atol=1e-6, msg=name)
    from flowkernels.bench.registry import cases
    assert [c.size for c in cases("cpu", ["metrics"])] == list(metrics_cases.METRICS_SIZES["cpu"])
    report = run_cases([Case("metrics", "B2-300", case)], "cpu", progress=False, min_time=0.0)
    assert {r["impl"] for r in report["results"]} >= {"flowkernels", "scipy-ckdtree", "pytorch3d-style"}
    assert "== metrics ==" in format_tables(report)


def test_triton_kernel_refuses_point_sets_beyond_its_int32_indices():
    from flowkernels.ops.nearest_neighbor import MAX_POINTS, nearest_both_plan
    big = torch.empty((MAX_POINTS, 3), device="meta")
    small = torch.zeros((4, 3))
    with pytest.raises(ValueError, match="^p has"):
        nearest_both_plan(big, torch.tensor([0, MAX_POINTS]), small, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="^q has"):
        nearest_both_plan(small, torch.tensor([0, 4]), big, torch.tensor([0, MAX_POINTS]))


def test_kernel_distances_are_differences_not_the_matmul_expansion():
    """Shapes far from the origin: |p|^2 - 2 p.q + |q|^2 in fp32 loses ~1e-7 |p|^2 (here ~1e-3 absolute, larger than
    the squared distances themselves); differences keep them to a few ulps of d^2."""
    P = (torch.rand(300, 3, dtype=torch.float64) * 0.01 + 100.0).float()
    G = (torch.rand(200, 3, dtype=torch.float64) * 0.01 + 100.0).float()
    m = metrics.nearest(P, G, backend="triton")
    d, _ = ref.nearest(P.double().numpy(), G.double().numpy())
    np.testing.assert_allclose(m.sq_pred.numpy(), d**2, rtol=1e-5, atol=1e-12)
    expanded = ((P**2).sum(-1)[:, None] - 2 * P @ G.T + (G**2).sum(-1)[None]).min(1).values.double().numpy()
    assert np.abs(expanded - d**2).max() > 100 * np.abs(m.sq_pred.numpy() - d**2).max()


def test_open3d_convention_matches_point_cloud_utils():
    """The library itself: point-cloud-utils' chamfer_distance (unsquared means summed) and hausdorff_distance."""
    import point_cloud_utils as pcu
    a = np.random.default_rng(int(torch.randint(0, 2**31, ()))).random((400, 3))
    b = np.random.default_rng(int(torch.randint(0, 2**31, ()))).random((257, 3)) * 1.1
    np.testing.assert_allclose(float(metrics.chamfer(a, b, convention="open3d")), pcu.chamfer_distance(a, b),
                               rtol=1e-9)
    np.testing.assert_allclose(float(metrics.hausdorff(a, b)), pcu.hausdorff_distance(a, b), rtol=1e-9)


# --- each convention's published definition on a case computed by hand ---------------------------------------------
def test_hand_computed_case():
    """pred {(0,0,0), (3,0,0)}, gt {(0,0,0), (0,4,0), (1,0,0)}: pred->gt distances [0, 2], gt->pred [0, 4, 1]."""
    pred = np.array([[0, 0, 0], [3, 0, 0]], np.float64)
    gt = np.array([[0, 0, 0], [0, 4, 0], [1, 0, 0]], np.float64)
    pn = np.array([[0, 0, 1], [1, 0, 0]], np.float64)
    gn = np.array([[0, 0, -1], [0, 1, 0], [0.6, 0.8, 0]], np.float64)
    acc_mean, acc_sq = (0 + 2) / 2, (0 + 4) / 2
    comp_mean, comp_sq = (0 + 4 + 1) / 3, (0 + 16 + 1) / 3
    expect_chamfer = {("occnet", False): 0.5 * (acc_mean + comp_mean), ("occnet", True): 0.5 * (acc_sq + comp_sq),
                      ("pytorch3d", True): acc_sq + comp_sq, ("kaolin", True): acc_sq + comp_sq,
                      ("kaolin", False): acc_mean + comp_mean, ("open3d", False): acc_mean + comp_mean}
    for (conv, squared), want in expect_chamfer.items():
        got = metrics.chamfer(pred, gt, convention=conv, squared=squared)
        assert abs(float(got) - want) < 1e-12, (conv, squared, float(got), want)
    # t = 1: "<=" counts the gt point at distance exactly 1, "<" does not.
    # occnet: P = 1/2, R = 2/3 -> F = 4/7. pytorch3d: P = 50 %, R = 100/3 % -> F = 40 (less ~eps).
    # kaolin: fp = 1 (pred at 2), fn = 1 (gt at 4), tp = 2 - 1 = 1 -> P = R = 1/2 -> F = 1/2 (not 4/7: mixed counts).
    # open3d: P = 1/2, R = 1/3 -> 100 * 2 PR / (P + R) = 40.
    expect_f = {"occnet": 4 / 7, "pytorch3d": 2 * 50 * (100 / 3) / (50 + 100 / 3 + 1e-8), "kaolin": 0.5 / (1 + 1e-8),
                "open3d": 40.0}
    for conv, want in expect_f.items():
        assert abs(float(metrics.f_score(pred, gt, 1.0, convention=conv)[0]) - want) < 1e-12, conv
    # normals: pred->gt pairs (p0, g0) |cos| 1 and (p1, g2) 0.6; gt->pred pairs all with p0: |cos| 1, 0, 0
    nc = metrics.normal_consistency(pred, gt, pn, gn, convention="occnet")
    assert abs(float(nc) - (0.5 * (1 + 0.6) / 2 + 0.5 * (1 + 0 + 0) / 3)) < 1e-12
    nc = metrics.normal_consistency(pred, gt, pn, gn, convention="pytorch3d")
    assert abs(float(nc) - ((1 - (1 + 0.6) / 2) + (1 - 1 / 3))) < 1e-12
    assert float(metrics.hausdorff(pred, gt)) == 4.0


# --- meshes: sampling, winding number, IoU, genus, the bunny ---------------------------------------------------------
def _box(lo, hi):
    import trimesh
    return trimesh.creation.box(bounds=np.array([lo, hi], dtype=np.float64))


def test_sample_surface_area_weighted_on_faces_and_seeded():
    # two triangles in the z=0 plane, areas 1/2 and 3/2
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [4, 0, 0], [3, 3, 0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    seed = int(torch.randint(0, 2**31, ()))
    pts, nrm = metrics.sample_surface((verts, faces), 20000, seed=seed)
    pts2, _ = metrics.sample_surface((verts, faces), 20000, seed=seed)
    assert torch.equal(pts, pts2), f"seed {seed} did not reproduce"
    assert torch.allclose(nrm, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    first = pts[:, 0] < 2
    inside_first = (pts[first, 0] >= 0) & (pts[first, 1] >= 0) & (pts[first, 0] + pts[first, 1] <= 1 + 1e-12)
    inside_second = ((pts[~first, 0] >= 3) & (pts[~first, 1] >= 0)
                     & (3 * (pts[~first, 0] - 3) + pts[~first, 1] <= 3 + 1e-12))
    assert inside_first.all() and inside_second.all()
    frac = first.double().mean().item()   # expect 1/4; binomial sd = sqrt(3/16 / 20000) ~ 0.003
    assert abs(frac - 0.25) < 0.015, f"seed {seed}: {frac}"
    # uniform within a triangle: mean position is the centroid
    assert torch.allclose(pts[first].mean(0), torch.tensor([1 / 3, 1 / 3, 0], dtype=torch.float64), atol=0.02)


def test_winding_number_and_volume_iou():
    import trimesh
    sphere = trimesh.creation.icosphere(subdivisions=1)
    q = np.random.default_rng(int(torch.randint(0, 2**31, ()))).uniform(-1.3, 1.3, (200, 3))
    got = metrics.winding_number((sphere.vertices, sphere.faces), q)
    np.testing.assert_allclose(got, ref.winding_number(sphere.vertices, sphere.faces, q), atol=2e-2)
    # two unit boxes overlapping by half along x: IoU = 0.5 / 1.5
    a, b = _box([0, 0, 0], [1, 1, 1]), _box([0.5, 0, 0], [1.5, 1, 1])
    iou = metrics.volume_iou(a, b, n_points=20000, seed=int(torch.randint(0, 2**31, ())))
    assert abs(iou - 1 / 3) < 0.02
    assert metrics.volume_iou(a, a, n_points=2000) == 1.0
    assert metrics.volume_iou(a, _box([3, 3, 3], [4, 4, 4]), n_points=2000) == 0.0


def test_genus():
    import trimesh
    from flowkernels import marching_cubes
    torus = trimesh.creation.torus(1.0, 0.3)
    assert metrics.genus(trimesh.creation.icosphere(2)) == 0
    assert metrics.genus(torus) == 1
    assert metrics.genus(trimesh.util.concatenate([torus, torus.copy().apply_translation([5, 0, 0])])) == 2
    # a triangle soup (every face with its own vertices) is welded first
    soup = (torus.vertices[torus.faces].reshape(-1, 3), np.arange(3 * len(torus.faces)).reshape(-1, 3))
    assert metrics.genus(soup) == 1
    assert metrics.genus((np.array([[0., 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]), np.array([[0, 1, 2], [0, 2, 3]]))) == 0
    x = np.linspace(-1, 1, 24)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    ring = np.sqrt(X**2 + Y**2) - 0.55
    assert metrics.genus(marching_cubes(torch.from_numpy(np.sqrt(ring**2 + Z**2) - 0.25).float(), 0.0)) == 1


def test_chamfer_to_nearest_finds_the_closest_shape():
    import trimesh
    refs = [trimesh.creation.torus(1.0, 0.3), _box([-1, -1, -1], [1, 1, 1]), trimesh.creation.icosphere(3)]
    sample = trimesh.creation.icosphere(3).apply_scale(1.03)
    dist, index = metrics.chamfer_to_nearest(sample, refs, n_points=3000)
    assert index == 2 and 0 < dist < 0.06


def test_score_samples_genus_and_nearest_training_shape():
    import trimesh
    refs = [trimesh.creation.torus(1.0, 0.3), trimesh.creation.icosphere(3), _box([-1, -1, -1], [1, 1, 1])]
    samples = [trimesh.creation.icosphere(3).apply_scale(1.02), trimesh.creation.torus(1.0, 0.32),
               (np.zeros((0, 3)), np.zeros((0, 3), np.int64))]
    scores = metrics.score_samples(samples, refs, n_points=1500)
    assert [s["genus"] for s in scores] == [0, 1, None]
    assert [s["nearest_index"] for s in scores] == [1, 0, None]
    assert 0 < scores[0]["chamfer_to_nearest"] < 0.06 and scores[2]["chamfer_to_nearest"] is None
    # the same distance as the pairwise call
    dist, index = metrics.chamfer_to_nearest(samples[1], refs, n_points=1500)
    assert index == 0 and abs(dist - scores[1]["chamfer_to_nearest"]) < 1e-6


@functools.lru_cache(maxsize=1)
def _bunny():
    """The scanned Stanford bunny that ships in the pymeshfix wheel (holes and all), centred in a unit cube as
    OccNet's thresholds assume: (verts, faces) numpy."""
    import pymeshfix
    import trimesh
    mesh = trimesh.load(os.path.join(os.path.dirname(pymeshfix.__file__), "examples", "StanfordBunny.ply"),
                        process=False)
    verts = np.asarray(mesh.vertices, np.float64)
    lo, hi = verts.min(0), verts.max(0)
    return (verts - (lo + hi) / 2) / (hi - lo).max(), np.asarray(mesh.faces, np.int64)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_bunny_evaluate_matches_reference(convention):
    """The bunny against a copy moved by 1% of its size: evaluate() on the same surface samples as the reference
    formulas."""
    bunny = _bunny()
    moved = (bunny[0] + np.array([0.01, 0.0, 0.0]), bunny[1])
    n = 1200
    out = metrics.evaluate(bunny, moved, n_points=n, convention=convention, iou_points=1000)
    p, pn = metrics.sample_surface(bunny, n, seed=0)
    g, gn = metrics.sample_surface(moved, n, seed=1)
    p, g, pn, gn = (x.numpy() for x in (p, g, pn, gn))
    squared_default = convention in ("pytorch3d", "kaolin")
    np.testing.assert_allclose(out["chamfer"], ref.chamfer(p, g, convention, squared_default), rtol=1e-6)
    np.testing.assert_allclose(out["hausdorff"], ref.hausdorff(p, g), rtol=1e-6)
    for t in metrics.DEFAULT_THRESHOLDS:
        np.testing.assert_allclose(out[f"f_score@{t:g}"], ref.f_score(p, g, t, convention), rtol=1e-9, atol=1e-9)
    if convention in ("occnet", "pytorch3d"):
        np.testing.assert_allclose(out["normal_consistency"], ref.normal_consistency(p, g, pn, gn, convention),
                                   rtol=1e-6)
    else:
        assert out["normal_consistency"] is None
    assert 0.5 < out["volume_iou"] < 1.0
    if convention == "occnet":
        assert metrics.volume_iou(bunny, bunny, n_points=1000) == 1.0


# --- bad inputs and the CLI -------------------------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    p, g = torch.rand(10, 3), torch.rand(12, 3)
    cases = [
        (lambda: metrics.chamfer(p[:, :2], g), "pred"),
        (lambda: metrics.chamfer(p, torch.full((4, 3), float("nan"))), "gt"),
        (lambda: metrics.chamfer(p, g, convention="mine"), "convention"),
        (lambda: metrics.chamfer(p, g, pred_offsets=torch.tensor([0, 4, 3, 10]), gt_offsets=torch.tensor([0, 12])),
         "pred_offsets"),
        (lambda: metrics.chamfer(p, g, pred_offsets=torch.tensor([0, 4, 10]), gt_offsets=torch.tensor([0, 12])),
         "sample"),
        (lambda: metrics.chamfer(p, g, pred_offsets=torch.tensor([0, 10, 10]), gt_offsets=torch.tensor([0, 6, 12])),
         "pred: sample 1 has no points"),
        (lambda: metrics.chamfer(p, g, convention="pytorch3d", squared=False), "squared"),
        (lambda: metrics.f_score(p, g, (0.1, -1.0)), "thresholds"),
        (lambda: metrics.normal_consistency(p, g, p, g, convention="kaolin"), "kaolin"),
        (lambda: metrics.normal_consistency(p, g, p[:5], g), "pred_normals"),
        (lambda: metrics.normal_consistency([p], [g], [p[:5]], [g]), "pred_normals"),
        (lambda: metrics.chamfer(p.long(), g), "dtype"),
        (lambda: metrics.chamfer(p, g, pred_offsets=torch.tensor([0.0, 10.0]), gt_offsets=torch.tensor([0, 12])),
         "pred_offsets"),
        (lambda: metrics.chamfer(p, g, backend="faiss"), "backend"),
        (lambda: metrics.chamfer(p, g, reduction="sum"), "reduction"),
        (lambda: metrics.sample_surface((p, torch.tensor([[0, 1, 20]])), 10), "faces"),
        (lambda: metrics.sample_surface((p, torch.tensor([[0, 1, 2]])), 0), "n_points"),
        (lambda: metrics.evaluate(p[None], g[None]), "evaluate"),
    ]
    for fn, word in cases:
        with pytest.raises((ValueError, TypeError)) as info:
            fn()
        assert word in str(info.value), (word, str(info.value))


def test_cli_eval(tmp_path, capsys):
    import trimesh
    from flowkernels.cli import main
    trimesh.creation.icosphere(2).export(tmp_path / "a.ply")
    trimesh.creation.icosphere(2).apply_scale(1.05).export(tmp_path / "b.obj")
    np.save(tmp_path / "c.npy", trimesh.creation.icosphere(2).sample(500))
    assert main(["eval", str(tmp_path / "a.ply"), str(tmp_path / "b.obj"), "--points", "2000", "--iou-points",
                 "2000", "--json", "--convention", "kaolin"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["convention"] == "kaolin" and 0 < out["chamfer"] and 0.5 < out["volume_iou"] < 1
    assert main(["eval", str(tmp_path / "a.ply"), str(tmp_path / "c.npy"), "--points", "2000"]) == 0
    text = capsys.readouterr().out
    assert "chamfer" in text and "volume_iou" in text and "n/a" in text
    for argv in (["eval", str(tmp_path / "missing.ply"), str(tmp_path / "a.ply")],
                 ["eval", str(tmp_path / "a.ply"), str(tmp_path / "a.ply"), "--points", "0"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("flowkernels eval: error:") and err.count("\n") == 1
