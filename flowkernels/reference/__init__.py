"""Plain, readable references written straight from the formulas of the conventions
(flowkernels/flow_kernels.md, flowkernels/marching_cubes.md).

They run in whatever dtype they are given: float64 for ground truth, float32 to measure what an eager PyTorch
implementation's own error is (the "2x rule"). Tests and benchmarks share this one copy.
"""
