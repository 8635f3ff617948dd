// Native CPU guided Euler / Heun step (flowkernels/ops/guided_step.py has the formulas and the coefficient row):
//   v = a_c c + a_u u  (rescaled: v <- k v + m x0_a x, k = 1 + x0_b m),  out = x + dt v (+ dt_h h),
// with the next model input (one or two copies), the data prediction x0 and v itself written in the same pass.
// c and u are read through their batch strides, so the two halves of one [cond; uncond] output are used in place.
#include <vector>

#include "flow_api.h"
#include "flow_dtype.h"
#include "flow_parallel.h"

namespace fk {
namespace {

constexpr int64_t kTile = 512;
enum CoefIndex { kDt = 0, kAc = 1, kAu = 2, kX0a = 3, kX0b = 4, kDtH = 5 };

template <typename R>
FK_FLOW_CLONES void step_item(const FlowLayout& lay, const GuidedStepArgs& a, const WorkItem& it) {
  const float* coef = reinterpret_cast<const float*>(a.coef);
  const R dt = coef[kDt], a_c = coef[kAc], a_u = coef[kAu], x0_a = coef[kX0a], x0_b = coef[kX0b],
          dt_h = coef[kDtH];
  const int64_t b = it.sample;
  const SampleExtent ext = sample_extent(lay, b);  // ragged: k, c, u per sample, rows offsets[b]:offsets[b + 1]
  const int64_t base = ext.base, model_in_copy = lay.n_rows * lay.M;
  const int64_t x_start = sample_start(lay, a.x, b, ext), c_start = sample_start(lay, a.c, b, ext),
                u_start = sample_start(lay, a.u, b, ext);
  const bool rescale = a.rescale_slope.given();
  const R slope = rescale ? R(float(load_scalar(a.rescale_slope, b))) : R(0);
  const R k = R(1) + x0_b * slope, k_x = slope * x0_a;
  R x_buf[kTile], c_buf[kTile], u_buf[kTile], h_buf[kTile], v[kTile], w[kTile];
  for (int64_t lo = it.lo; lo < it.hi; lo += kTile) {
    const int64_t n = std::min(kTile, it.hi - lo);
    const R* x = view_tile(a.x, x_start + lo, n, x_buf);
    const R* c = view_tile(a.c, c_start + lo, n, c_buf);
    if (a.u.given()) {
      const R* u = view_tile(a.u, u_start + lo, n, u_buf);
      for (int64_t i = 0; i < n; ++i) v[i] = a_c * c[i] + a_u * u[i];
    } else {
      for (int64_t i = 0; i < n; ++i) v[i] = a_c * c[i];
    }
    if (rescale)
      for (int64_t i = 0; i < n; ++i) v[i] = k * v[i] + k_x * x[i];
    if (a.x0.given()) {  // before `out` is written: out may be x itself
      for (int64_t i = 0; i < n; ++i) w[i] = x0_a * x[i] + x0_b * v[i];
      store_tile(a.x0, base + lo, n, w);
    }
    R* o = out_tile(a.out, base + lo, w);  // may be x itself: each element is read before it is written
    if (a.h.given()) {
      const R* h = view_tile(a.h, base + lo, n, h_buf);
      for (int64_t i = 0; i < n; ++i) o[i] = (x[i] + dt * v[i]) + dt_h * h[i];
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = x[i] + dt * v[i];
    }
    finish_tile(a.out, base + lo, n, o);
    for (int copy = 0; copy < a.n_model_in; ++copy) store_tile(a.model_in, copy * model_in_copy + base + lo, n, o);
    if (a.v_out.given()) store_tile(a.v_out, base + lo, n, v);
  }
}

// The five rescale sums over the item (flow_api.h), in double as the torch path.
constexpr int kStats = 5;
void stats_item(const FlowLayout& lay, const FlowArr& x, const FlowArr& c, const FlowArr& u, const float* coef,
                const WorkItem& it, double* out) {
  const double a_c = coef[kAc], a_u = coef[kAu], x0_a = coef[kX0a], x0_b = coef[kX0b];
  const int64_t b = it.sample;
  const SampleExtent ext = sample_extent(lay, b);
  const int64_t x_start = sample_start(lay, x, b, ext), c_start = sample_start(lay, c, b, ext),
                u_start = sample_start(lay, u, b, ext);
  double xs[kTile], cs[kTile], us[kTile];
  double s_g = 0, s_gg = 0, s_d = 0, s_dd = 0, s_gd = 0;
  for (int64_t lo = it.lo; lo < it.hi; lo += kTile) {
    const int64_t n = std::min(kTile, it.hi - lo);
    load_tile(x, x_start + lo, n, xs);
    load_tile(c, c_start + lo, n, cs);
    load_tile(u, u_start + lo, n, us);
    for (int64_t i = 0; i < n; ++i) {
      const double v = a_c * cs[i] + a_u * us[i];
      const double g = x0_a * xs[i] + x0_b * v, d = cs[i] - v;
      s_g += g, s_gg += g * g, s_d += d, s_dd += d * d, s_gd += g * d;
    }
  }
  out[0] = s_g, out[1] = s_gg, out[2] = s_d, out[3] = s_dd, out[4] = s_gd;
}

}  // namespace

void guided_step_cpu(const FlowLayout& lay, const GuidedStepArgs& args) {
  int64_t total = 0;
  const std::vector<WorkItem> items = work_items(lay, &total);
  auto run = [&](auto tag) {
    using R = decltype(tag);
    run_items(int64_t(items.size()), total, lay.num_threads, [&](int64_t i) { step_item<R>(lay, args, items[i]); });
  };
  if (args.x.dtype == DType::kFloat64) run(double{});
  else run(float{});
}

void rescale_stats_cpu(const FlowLayout& lay, FlowArr x, FlowArr c, FlowArr u, uintptr_t coef, uintptr_t sums_ptr) {
  int64_t total = 0;
  const std::vector<WorkItem> items = work_items(lay, &total);
  std::vector<double> partial(kStats * items.size());
  const float* coef_row = reinterpret_cast<const float*>(coef);
  run_items(int64_t(items.size()), total, lay.num_threads,
            [&](int64_t i) { stats_item(lay, x, c, u, coef_row, items[i], &partial[kStats * i]); });
  double* sums = reinterpret_cast<double*>(sums_ptr);
  std::fill(sums, sums + kStats * lay.batch, 0.0);
  for (size_t i = 0; i < items.size(); ++i)
    for (int s = 0; s < kStats; ++s) sums[kStats * items[i].sample + s] += partial[kStats * i + s];
}

}  // namespace fk
