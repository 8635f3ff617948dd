"""The seeded-loss and TRELLIS.2-rescale benchmark cases: both implementations do the same work, and the rows
record launches per step (the fused rescale step is two kernels; TRELLIS.2's eager step is dozens of ops)."""
import torch

from flowkernels.bench import kernel_cases, registry
from helpers import assert_close


def test_rescale_case_same_work_and_launch_counts():
    built = kernel_cases._rescale_case(2, 50, 300, 8)("cpu")
    eager, fused = built.impls["eager"](), built.impls["flowkernels"]()
    assert_close("rescaled step", fused, eager, 1e-5)
    launches = built.info["launches_per_step"]
    print(launches)
    assert launches["flowkernels"] == 2 and launches["eager"] >= 15


def test_seeded_loss_case_runs_and_counts():
    built = kernel_cases._seeded_loss_case((2, 64, 8))("cpu")
    for fn in built.impls.values():
        fn()
    assert set(built.info["launches_per_step"]) == {"eager", "flowkernels"}
    assert all(n > 0 for n in built.info["launches_per_step"].values())


def test_cases_are_registered():
    cuda = {(c.op, c.size) for c in registry.cases("cuda")}
    assert {("loss_seeded", "hunyuan"), ("trellis2_rescale", "shape-slat-B4"), ("mc", "sphere-1024-fp16"),
            ("mc", "gyroid-512-fp16")} <= cuda
    assert {c.op for c in registry.cases("cpu")} >= {"loss_seeded", "trellis2_rescale"}
