// Native CPU flow-matching training kernels: fused interpolate, loss + gradient, and the backward row scale.
// The same arithmetic as the Triton kernels and the torch path (flowkernels/ops/flow_interpolate.py,
// flow_loss.py): per-sample coefficients in double, element math in float (double for float64 data), in the
// torch path's order of operations. Each work item runs over its elements in tiles that fit L1: inputs are
// converted into compute-type buffers, the math runs over the buffers (plain loops the compiler vectorizes),
// and results are converted on the way out.
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "flow_api.h"
#include "flow_coefficients.h"
#include "flow_dtype.h"
#include "flow_noise.h"
#include "flow_parallel.h"

namespace fk {
namespace {

constexpr int64_t kTile = 512;
constexpr int kLanes = 16;  // independent partial sums of a tile: lets the squared-residual sum vectorize

// The noise of elements [first, first + n) of a sample: the given tensor, or the seeded stream at flat index
// `flat_first` (the element's index in a contiguous buffer of the whole batch, as the Triton kernels key it).
template <typename R>
FK_TILE_INLINE const R* noise_tile(const FlowArr& noise, int64_t first, int64_t flat_first, uint64_t seed, int64_t n, R* buf) {
  if (noise.given()) return view_tile(noise, first, n, buf);
  if constexpr (std::is_same_v<R, float>) {
    fill_normals(seed, flat_first, n, buf);
  } else {
    float drawn[kTile];
    fill_normals(seed, flat_first, n, drawn);
    for (int64_t i = 0; i < n; ++i) buf[i] = R(drawn[i]);
  }
  return buf;
}

// Sum of squares of r[0:n], in R lanes, returned in double.
template <typename R>
FK_TILE_INLINE double sum_squares(const R* r, int64_t n) {
  R acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += r[i + l] * r[i + l];
  for (; i < n; ++i) acc[0] += r[i] * r[i];
  double s = 0.0;
  for (int l = 0; l < kLanes; ++l) s += double(acc[l]);
  return s;
}

struct InterpolateArgs {
  FlowArr x1, noise, t, xt, target;
  uint64_t seed;
};

template <typename R>
FK_FLOW_CLONES void interpolate_item(const FlowLayout& lay, const FlowScheme& sch, const InterpolateArgs& a, const WorkItem& it) {
  const int64_t b = it.sample;
  const SampleExtent ext = sample_extent(lay, b);
  const FlowCoefficients c = flow_coefficients(load_scalar(a.t, b), sch);
  const R ca = R(c.a), cb = R(c.b), tD = R(-c.cD / c.p), tN = R(-c.cN / c.p);
  const int64_t x1_start = sample_start(lay, a.x1, b, ext), noise_start = sample_start(lay, a.noise, b, ext);
  R d_buf[kTile], nz_buf[kTile], out[kTile];
  for (int64_t lo = it.lo; lo < it.hi; lo += kTile) {
    const int64_t n = std::min(kTile, it.hi - lo);
    const R* d = view_tile(a.x1, x1_start + lo, n, d_buf);
    const R* nz = noise_tile(a.noise, noise_start + lo, ext.base + lo, a.seed, n, nz_buf);
    R* xt = out_tile(a.xt, ext.base + lo, out);
    for (int64_t i = 0; i < n; ++i) xt[i] = ca * d[i] + cb * nz[i];
    finish_tile(a.xt, ext.base + lo, n, xt);
    if (a.target.given()) {
      R* target = out_tile(a.target, ext.base + lo, out);
      for (int64_t i = 0; i < n; ++i) target[i] = tD * d[i] + tN * nz[i];
      finish_tile(a.target, ext.base + lo, n, target);
    }
  }
}

struct LossArgs {
  FlowArr pred, x1, noise, t, weight, grad;
  uint64_t seed;
  double grad_factor;
};

// Per-sample (weight w, normaliser) of the loss: w includes the per-sample weight and is NaN for t outside [0, 1].
struct LossScale {
  FlowCoefficients c;
  double w, norm;
};

inline LossScale loss_scale(const FlowLayout& lay, const FlowScheme& sch, const LossArgs& a, int64_t b) {
  const double t = load_scalar(a.t, b);
  LossScale s{flow_coefficients(t, sch), 0.0, lay.offsets ? 1.0 : 1.0 / double(lay.M)};
  s.w = s.c.w;
  if (a.weight.given()) s.w *= load_scalar(a.weight, b);
  if (!(t >= 0.0 && t <= 1.0)) s.w = std::numeric_limits<double>::quiet_NaN();
  return s;
}

// The item's sum of squared residuals; writes the gradient of the sample's loss when asked for.
template <typename R>
FK_FLOW_CLONES double loss_item(const FlowLayout& lay, const FlowScheme& sch, const LossArgs& a, const WorkItem& it) {
  const int64_t b = it.sample;
  const SampleExtent ext = sample_extent(lay, b);
  const LossScale s = loss_scale(lay, sch, a, b);
  const R p = R(s.c.p), cD = R(s.c.cD), cN = R(s.c.cN), grad_scale = R(2.0 * s.norm * s.w * s.c.p * a.grad_factor);
  const int64_t pred_start = sample_start(lay, a.pred, b, ext), x1_start = sample_start(lay, a.x1, b, ext),
                noise_start = sample_start(lay, a.noise, b, ext);
  R o_buf[kTile], d_buf[kTile], nz_buf[kTile], r[kTile];
  double sum = 0.0;
  for (int64_t lo = it.lo; lo < it.hi; lo += kTile) {
    const int64_t n = std::min(kTile, it.hi - lo);
    const R* o = view_tile(a.pred, pred_start + lo, n, o_buf);
    const R* d = view_tile(a.x1, x1_start + lo, n, d_buf);
    const R* nz = noise_tile(a.noise, noise_start + lo, ext.base + lo, a.seed, n, nz_buf);
    for (int64_t i = 0; i < n; ++i) r[i] = p * o[i] + cD * d[i] + cN * nz[i];
    sum += sum_squares(r, n);
    if (a.grad.given()) {
      R* g = out_tile(a.grad, ext.base + lo, o_buf);
      for (int64_t i = 0; i < n; ++i) g[i] = grad_scale * r[i];
      finish_tile(a.grad, ext.base + lo, n, g);
    }
  }
  return sum;
}

template <typename R>
FK_FLOW_CLONES void scale_item(const FlowLayout& lay, const FlowArr& grad, const FlowArr& scale, const FlowArr& out,
                const WorkItem& it) {
  const SampleExtent ext = sample_extent(lay, it.sample);
  const R s = R(float(load_scalar(scale, it.sample)));  // the scale rounds to float first, as the torch path
  const int64_t start = sample_start(lay, grad, it.sample, ext);
  R g_buf[kTile], scaled[kTile];
  for (int64_t lo = it.lo; lo < it.hi; lo += kTile) {
    const int64_t n = std::min(kTile, it.hi - lo);
    const R* g = view_tile(grad, start + lo, n, g_buf);
    R* o = out_tile(out, ext.base + lo, scaled);
    for (int64_t i = 0; i < n; ++i) o[i] = g[i] * s;
    finish_tile(out, ext.base + lo, n, o);
  }
}

// fn(R{}) with R = double for float64 data, float otherwise.
template <typename Fn>
void with_compute_type(DType data, Fn&& fn) {
  if (data == DType::kFloat64) fn(double{});
  else fn(float{});
}

}  // namespace

void flow_interpolate_cpu(const FlowLayout& lay, const FlowScheme& sch, FlowArr x1, FlowArr noise, FlowArr t,
                          uint64_t seed, FlowArr xt, FlowArr target) {
  int64_t total = 0;
  const std::vector<WorkItem> items = work_items(lay, &total);
  const InterpolateArgs args{x1, noise, t, xt, target, seed};
  with_compute_type(x1.dtype, [&](auto tag) {
    using R = decltype(tag);
    run_items(int64_t(items.size()), total, lay.num_threads,
              [&](int64_t i) { interpolate_item<R>(lay, sch, args, items[i]); });
  });
}

void flow_loss_cpu(const FlowLayout& lay, const FlowScheme& sch, FlowArr pred, FlowArr x1, FlowArr noise, FlowArr t,
                   FlowArr weight, uint64_t seed, uintptr_t loss_ptr, FlowArr grad, double grad_factor,
                   LossReduction reduction, uintptr_t reduced_ptr) {
  int64_t total = 0;
  const std::vector<WorkItem> items = work_items(lay, &total);
  const LossArgs args{pred, x1, noise, t, weight, grad, seed, grad_factor};
  std::vector<double> partial(items.size(), 0.0);
  with_compute_type(pred.dtype, [&](auto tag) {
    using R = decltype(tag);
    run_items(int64_t(items.size()), total, lay.num_threads,
              [&](int64_t i) { partial[i] = loss_item<R>(lay, sch, args, items[i]); });
  });
  // Items of a sample are consecutive: sum them in order, so the result does not depend on thread timing.
  std::vector<double> sums(lay.batch, 0.0);
  for (size_t i = 0; i < items.size(); ++i) sums[items[i].sample] += partial[i];
  float* loss = reinterpret_cast<float*>(loss_ptr);
  double sum_of_values = 0.0, sum_of_means = 0.0;
  for (int64_t b = 0; b < lay.batch; ++b) {
    const LossScale s = loss_scale(lay, sch, args, b);
    const double value = s.w * s.norm * sums[b];  // the sample's mean (dense) or sum (ragged)
    // a ragged sample with no rows gets 0 / 0 = NaN, as the mean of nothing
    const double mean = lay.offsets ? value / double(sample_extent(lay, b).count) : value;
    sum_of_values += value;
    sum_of_means += mean;
    loss[b] = float(reduction == LossReduction::kNone ? value : mean);
  }
  if (reduction == LossReduction::kNone) return;
  // the reduced loss from the unrounded per-sample values, rounded once: the mean over samples (dense), over all
  // elements (ragged: samples weigh by their rows), or the sum of the means
  const double elements = double(lay.n_rows) * double(lay.M);
  const double reduced = reduction == LossReduction::kSum ? sum_of_means
                         : lay.offsets ? sum_of_values / elements : sum_of_values / double(lay.batch);
  *reinterpret_cast<float*>(reduced_ptr) = float(reduced);
}

void scale_rows_cpu(const FlowLayout& lay, FlowArr grad, FlowArr scale, FlowArr out) {
  int64_t total = 0;
  const std::vector<WorkItem> items = work_items(lay, &total);
  with_compute_type(grad.dtype, [&](auto tag) {
    using R = decltype(tag);
    run_items(int64_t(items.size()), total, lay.num_threads,
              [&](int64_t i) { scale_item<R>(lay, grad, scale, out, items[i]); });
  });
}

void draw_normals_cpu(uint64_t seed, int64_t first, int64_t n, float* out, int num_threads) {
  // Pieces of 2^13 elements (a multiple of the 256 normals of a block of Philox calls): the stream depends only on
  // the element index, so the bits do not depend on how the range is cut or which thread draws a piece. A normal
  // costs about 8 elements of the memory-bound kernels (Philox and Box-Muller, ~1.8 ns, against ~0.25 ns), so
  // threads join from an 8x smaller range.
  constexpr int64_t kPiece = 1 << 13, kCostPerNormal = 8;
  const int64_t pieces = (n + kPiece - 1) / kPiece;
  run_items(pieces, n * kCostPerNormal, num_threads, [&](int64_t i) {
    const int64_t lo = i * kPiece;
    fill_normals(seed, first + lo, std::min(kPiece, n - lo), out + lo);
  });
}

}  // namespace fk
