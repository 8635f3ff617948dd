// Native CPU guided Euler / Heun step (flowkernels/ops/guided_step.py has the formulas and the coefficient row):
//   v = a_c c + a_u u  (rescaled: v <- k v + (k - 1) (x0_a / x0_b) x),  out = x + dt v (+ dt_h h),
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
  const bool rescale = a.k.given();
  const R k = rescale ? R(float(load_scalar(a.k, b))) : R(1);
  const R k_x = (k - R(1)) * (x0_a / x0_b);
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

// Sums of x0c, x0c^2, x0g, x0g^2 over the item, in double as the torch path.
void stats_item(const FlowLayout& lay, const FlowArr& x, const FlowArr& c, const FlowArr& u, const float* coef,
                const WorkItem& it, double* out) {
  const double a_c = coef[kAc], a_u = coef[kAu], x0_a = coef[kX0a], x0_b = coef[kX0b];
  const int64_t b = it.sample;
  const SampleExtent ext = sample_extent(lay, b);
  const int64_t x_start = sample_start(lay, x, b, ext), c_start = sample_start(lay, c, b, ext),
                u_start = sample_start(lay, u, b, ext);
  double xs[kTile], cs[kTile], us[kTile];
  double s1c = 0, s2c = 0, s1g = 0, s2g = 0;
  for (int64_t lo = it.lo; lo < it.hi; lo += kTile) {
    const int64_t n = std::min(kTile, it.hi - lo);
    load_tile(x, x_start + lo, n, xs);
    load_tile(c, c_start + lo, n, cs);
    load_tile(u, u_start + lo, n, us);
    for (int64_t i = 0; i < n; ++i) {
      const double x0c = x0_a * xs[i] + x0_b * cs[i];
      const double x0g = x0_a * xs[i] + x0_b * (a_c * cs[i] + a_u * us[i]);
      s1c += x0c, s2c += x0c * x0c, s1g += x0g, s2g += x0g * x0g;
    }
  }
  out[0] = s1c, out[1] = s2c, out[2] = s1g, out[3] = s2g;
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
  std::vector<double> partial(4 * items.size());
  const float* coef_row = reinterpret_cast<const float*>(coef);
  run_items(int64_t(items.size()), total, lay.num_threads,
            [&](int64_t i) { stats_item(lay, x, c, u, coef_row, items[i], &partial[4 * i]); });
  double* sums = reinterpret_cast<double*>(sums_ptr);
  std::fill(sums, sums + 4 * lay.batch, 0.0);
  for (size_t i = 0; i < items.size(); ++i)
    for (int s = 0; s < 4; ++s) sums[4 * items[i].sample + s] += partial[4 * i + s];
}

}  // namespace fk
