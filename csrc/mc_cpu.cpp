// Multithreaded CPU driver: rows of the grid are split into contiguous blocks, one per thread.
#include <algorithm>
#include <thread>
#include <vector>

#include "mc_dispatch.h"

namespace fk {
namespace {

template <typename Fn>
void parallel_rows(int64_t rows, int num_threads, Fn&& fn) {
  int64_t threads = num_threads > 0 ? num_threads : std::max(1u, std::thread::hardware_concurrency());
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, rows / 16 + 1));  // tiny grids: no thread start-up
  int64_t per = (rows + threads - 1) / threads;
  auto run = [&](int64_t lo) {
    for (int64_t r = lo; r < std::min(rows, lo + per); ++r) fn(r);
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(run, t * per);
  run(0);
  for (auto& th : pool) th.join();
}

}  // namespace

void mc_count_cpu(const GridDesc& grid, uintptr_t counts_ptr, uintptr_t spans_ptr, int num_threads) {
  auto* counts = reinterpret_cast<int64_t*>(counts_ptr);
  auto* spans = reinterpret_cast<int64_t*>(spans_ptr);
  dispatch_dtype(grid.dtype, [&](auto tag) {
    auto vol = make_volume<decltype(tag)>(grid);
    parallel_rows(vol.nx * vol.ny, num_threads, [&](int64_t row) {
      store_row(count_row(vol, row / vol.ny, row % vol.ny), row, counts, spans);
    });
  });
}

void mc_emit_cpu(const GridDesc& grid, const EmitDesc& desc, int num_threads) {
  EmitTarget out = make_target(desc);
  dispatch_dtype(grid.dtype, [&](auto tag) {
    auto vol = make_volume<decltype(tag)>(grid);
    parallel_rows(vol.nx * vol.ny, num_threads, [&](int64_t row) { emit_row(vol, out, row / vol.ny, row % vol.ny); });
  });
}

}  // namespace fk
