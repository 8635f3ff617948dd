// Python bindings of the CPU flow kernels. A tensor arrives as (data pointer, dtype code, batch stride) — (0, 0, 0)
// when absent — and a layout as (batch, elements per sample or per row, rows, offsets pointer, threads).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <tuple>

#include "flow_api.h"
#include "flow_noise.h"
#include "flow_parallel.h"

namespace py = pybind11;

namespace fk {
namespace {

using ArrTuple = std::tuple<uintptr_t, int, int64_t>;
using LayoutTuple = std::tuple<int64_t, int64_t, int64_t, uintptr_t, int>;

FlowArr arr(const ArrTuple& a, const char* name) {
  const int code = std::get<1>(a);
  if (code < 0 || code > int(DType::kBFloat16))
    throw std::invalid_argument(std::string(name) + ": unsupported dtype code " + std::to_string(code));
  return FlowArr{std::get<0>(a), DType(code), std::get<2>(a)};
}

FlowLayout layout(const LayoutTuple& l) {
  FlowLayout lay;
  std::tie(lay.batch, lay.M, lay.n_rows, lay.offsets, lay.num_threads) = l;
  if (lay.batch < 0 || lay.M < 0 || lay.n_rows < 0) throw std::invalid_argument("flow kernels: negative sizes");
  return lay;
}

FlowScheme scheme(int scheme_code, int prediction, int weighting, double sigma_min) {
  return FlowScheme{scheme_code, prediction, weighting, sigma_min};
}

}  // namespace

void bind_flow(py::module_& m) {
  m.def(
      "flow_interpolate_cpu",
      [](LayoutTuple l, int sch, int pred, double sigma_min, ArrTuple x1, ArrTuple noise, ArrTuple t, uint64_t seed,
         ArrTuple xt, ArrTuple target) {
        const FlowLayout lay = layout(l);
        const FlowArr a[] = {arr(x1, "x1"), arr(noise, "noise"), arr(t, "t"), arr(xt, "xt"), arr(target, "target")};
        py::gil_scoped_release release;
        flow_interpolate_cpu(lay, scheme(sch, pred, 0, sigma_min), a[0], a[1], a[2], seed, a[3], a[4]);
      });
  m.def(
      "flow_loss_cpu",
      [](LayoutTuple l, int sch, int pred, int weighting, double sigma_min, ArrTuple p, ArrTuple x1, ArrTuple noise,
         ArrTuple t, ArrTuple weight, uint64_t seed, uintptr_t loss, ArrTuple grad, double grad_factor,
         int reduction, uintptr_t reduced) {
        const FlowLayout lay = layout(l);
        const FlowArr a[] = {arr(p, "pred"), arr(x1, "x1"), arr(noise, "noise"), arr(t, "t"), arr(weight, "weight"),
                             arr(grad, "grad")};
        if (reduction < 0 || reduction > int(LossReduction::kSum) || (reduction != 0 && reduced == 0))
          throw std::invalid_argument("reduction: unsupported code " + std::to_string(reduction) +
                                      " or no output for the reduced loss");
        py::gil_scoped_release release;
        flow_loss_cpu(lay, scheme(sch, pred, weighting, sigma_min), a[0], a[1], a[2], a[3], a[4], seed, loss, a[5],
                      grad_factor, LossReduction(reduction), reduced);
      });
  m.def("scale_rows_cpu", [](LayoutTuple l, ArrTuple grad, ArrTuple scale, ArrTuple out) {
    const FlowLayout lay = layout(l);
    const FlowArr g = arr(grad, "grad"), s = arr(scale, "scale"), o = arr(out, "out");
    py::gil_scoped_release release;
    scale_rows_cpu(lay, g, s, o);
  });
  m.def(
      "guided_step_cpu",
      [](LayoutTuple l, ArrTuple x, ArrTuple c, ArrTuple u, ArrTuple h, uintptr_t coef, ArrTuple slope, ArrTuple out,
         ArrTuple model_in, int n_model_in, ArrTuple x0, ArrTuple v_out) {
        const FlowLayout lay = layout(l);
        GuidedStepArgs g;
        g.x = arr(x, "x"), g.c = arr(c, "c"), g.u = arr(u, "u"), g.h = arr(h, "h"), g.rescale_slope = arr(slope, "rescale_slope");
        g.out = arr(out, "out"), g.model_in = arr(model_in, "model_in"), g.x0 = arr(x0, "x0");
        g.v_out = arr(v_out, "v_out"), g.coef = coef, g.n_model_in = n_model_in;
        py::gil_scoped_release release;
        guided_step_cpu(lay, g);
      });
  m.def("rescale_stats_cpu", [](LayoutTuple l, ArrTuple x, ArrTuple c, ArrTuple u, uintptr_t coef, uintptr_t sums) {
    const FlowLayout lay = layout(l);
    const FlowArr xa = arr(x, "x"), ca = arr(c, "c"), ua = arr(u, "u");
    py::gil_scoped_release release;
    rescale_stats_cpu(lay, xa, ca, ua, coef, sums);
  });
  m.def(
      "flow_threading",
      [] {
        py::dict d;
#if defined(FK_FLOW_OPENMP)
        d["openmp_built"] = true;
        d["openmp_runtimes"] = count_openmp_runtimes();
#else
        d["openmp_built"] = false;
        d["openmp_runtimes"] = 0;
#endif
        d["uses_openmp"] = uses_openmp();
        d["elems_per_thread"] = elems_per_thread();
        d["solo_calls_left"] = thread_backoff().solo_left.load();
        return d;
      },
      "how the CPU flow kernels run their threads: OpenMP (the runtime torch uses) or their own pool");
  m.def(
      "set_flow_openmp",
      [](bool on) {
        thread_backoff().solo_left.store(0);  // a fresh start for the measurement or test that switches
        thread_backoff().next_solo.store(kSoloCalls);
        return set_uses_openmp(on);
      },
      py::arg("on"),
        "run the CPU flow kernels' threads on OpenMP (when available; the default) or on their own pool (tests, "
        "measurements); returns whether OpenMP is used");
  m.def(
      "philox_normals_at",
      [](int level, uint64_t seed, int64_t first, int64_t n, uintptr_t out) {
        py::gil_scoped_release release;
        return fill_normals_at(level, seed, first, n, reinterpret_cast<float*>(out));
      },
      py::arg("level"), py::arg("seed"), py::arg("first"), py::arg("n"), py::arg("out"),
      "the seeded normals through one compiled version of the noise loop (0 baseline, 1 x86-64-v3, 2 x86-64-v4), "
      "on the calling thread; False when this build or CPU has no such version");
  m.def(
      "philox_normals",
      [](uint64_t seed, int64_t first, int64_t n, uintptr_t out, int num_threads) {
        py::gil_scoped_release release;
        draw_normals_cpu(seed, first, n, reinterpret_cast<float*>(out), num_threads);
      },
      py::arg("seed"), py::arg("first"), py::arg("n"), py::arg("out"), py::arg("num_threads") = 1,
      "float32 normals of elements [first, first + n) of the seeded stream, into out, on up to num_threads threads");
}

}  // namespace fk
