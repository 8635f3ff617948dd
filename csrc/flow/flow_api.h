// What the native CPU flow kernels export to the Python bindings. Tensors arrive as (pointer, dtype, batch stride)
// triples validated and allocated by Python (torch); nothing here knows about torch.
#pragma once
#include <cstdint>

#include "mc_api.h"  // fk::DType

namespace fk {

// One per-sample tensor: sample b starts at ptr + b * stride elements (dense) or at ptr + offsets[b] * M
// (ragged, contiguous); within a sample the elements are contiguous. ptr == 0: not given.
struct FlowArr {
  uintptr_t ptr = 0;
  DType dtype = DType::kFloat32;
  int64_t stride = 0;
  bool given() const { return ptr != 0; }
};

// Where the samples lie: B dense samples of M elements, or (offsets != 0) B ragged samples of
// offsets[b + 1] - offsets[b] rows of M elements each out of n_rows.
struct FlowLayout {
  int64_t batch = 0, M = 0, n_rows = 0;
  uintptr_t offsets = 0;  // int64 [B + 1] or 0
  int num_threads = 0;
};

// The per-sample coefficient formulas (flowkernels/flow_algebra.py holds the codes).
struct FlowScheme {
  int scheme = 0, prediction = 0, weighting = 0;
  double sigma_min = 0.0;
};

// x_t = a D + b N and, when target is given, target = -(cD D + cN N) / p. Noise: the tensor, or the
// Philox stream of `seed` keyed by flat element index when noise is not given.
void flow_interpolate_cpu(const FlowLayout& lay, const FlowScheme& sch, FlowArr x1, FlowArr noise, FlowArr t,
                          uint64_t seed, FlowArr xt, FlowArr target);

// The loss reductions the kernel can finish itself (Python's "none", "mean", "sum").
enum class LossReduction : int { kNone = 0, kMean = 1, kSum = 2 };

// loss[b] (float32) = w_b / M * sum residual^2 (dense) or w_b * sum residual^2 (ragged), and the gradient of
// grad_factor * loss[b] w.r.t. pred when grad is given (grad_factor: the reduction's 1 / B folded in, so that a
// backward with an upstream gradient of 1 needs no pass). A t outside [0, 1] gives a NaN loss (as the GPU kernel).
// With a reduction, loss[b] is every sample's mean (ragged: the sum over its rows' elements divided by their
// count) and *reduced (float32) the mean over samples (dense) or over all elements (ragged), or the sum of the
// means, formed in double from the unrounded values: no torch op is left to finish a training step's loss.
void flow_loss_cpu(const FlowLayout& lay, const FlowScheme& sch, FlowArr pred, FlowArr x1, FlowArr noise, FlowArr t,
                   FlowArr weight, uint64_t seed, uintptr_t loss, FlowArr grad, double grad_factor = 1.0,
                   LossReduction reduction = LossReduction::kNone, uintptr_t reduced = 0);

// out[b, ...] = grad[b, ...] * scale[b], in float (double for float64 grads).
void scale_rows_cpu(const FlowLayout& lay, FlowArr grad, FlowArr scale, FlowArr out);

// The guided Euler / Heun step of flowkernels/ops/guided_step.py; coef is the float32 row of per-step scalars,
// rescale_slope the per-sample rescale slope m = (k - 1) / x0_b (float32) or not given; model_in receives
// n_model_in copies of the new state.
struct GuidedStepArgs {
  FlowArr x, c, u, h, rescale_slope, out, model_in, x0, v_out;
  uintptr_t coef = 0;
  int n_model_in = 0;
};
void guided_step_cpu(const FlowLayout& lay, const GuidedStepArgs& args);

// Per-sample float64 sums [B, 5] for the rescale slope: of x0 from the guided v (g), g^2, d = c - v, d^2 and g d.
void rescale_stats_cpu(const FlowLayout& lay, FlowArr x, FlowArr c, FlowArr u, uintptr_t coef, uintptr_t sums);

// float32 normals of elements [first, first + n) of the seeded stream into out, on up to num_threads threads.
void draw_normals_cpu(uint64_t seed, int64_t first, int64_t n, float* out, int num_threads);

}  // namespace fk
