// Work splitting of the CPU flow kernels: each sample is cut into items of at most kItemElems elements, and the
// items are handed out to threads dynamically (ragged samples differ widely in size). Small calls stay on the
// calling thread: starting a thread costs about as much as processing tens of thousands of elements.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "flow_api.h"

namespace fk {

constexpr int64_t kItemElems = 1 << 15;        // elements per work item
constexpr int64_t kElemsPerThread = 1 << 18;   // fewer elements than this per thread: use fewer threads

// Sample b of a layout: its first element in a contiguous buffer and its element count. Ragged offsets are
// clamped into [0, n_rows] and made non-decreasing, so bad offsets give wrong sums, never out-of-bounds accesses.
struct SampleExtent {
  int64_t base, count;
};

inline SampleExtent sample_extent(const FlowLayout& lay, int64_t b) {
  if (!lay.offsets) return {b * lay.M, lay.M};
  const int64_t* off = reinterpret_cast<const int64_t*>(lay.offsets);
  const int64_t r0 = std::min(std::max<int64_t>(off[b], 0), lay.n_rows);
  const int64_t r1 = std::min(std::max<int64_t>(off[b + 1], r0), lay.n_rows);
  return {r0 * lay.M, (r1 - r0) * lay.M};
}

// Where sample b's elements start in a per-sample tensor: its batch stride (dense) or its flat base (ragged).
inline int64_t sample_start(const FlowLayout& lay, const FlowArr& a, int64_t b, const SampleExtent& e) {
  return lay.offsets ? e.base : b * a.stride;
}

struct WorkItem {
  int64_t sample, lo, hi;  // elements [lo, hi) of the sample
};

inline std::vector<WorkItem> work_items(const FlowLayout& lay, int64_t* total = nullptr) {
  std::vector<WorkItem> items;
  int64_t sum = 0;
  for (int64_t b = 0; b < lay.batch; ++b) {
    const int64_t n = sample_extent(lay, b).count;
    sum += n;
    for (int64_t lo = 0; lo < n; lo += kItemElems) items.push_back({b, lo, std::min(n, lo + kItemElems)});
  }
  if (total) *total = sum;
  return items;
}

// fn(item index) for every item, on up to num_threads threads (0: all cores).
template <typename Fn>
void run_items(int64_t n_items, int64_t total_elems, int num_threads, Fn&& fn) {
  if (n_items <= 0) return;
  const int64_t cores = num_threads > 0 ? num_threads : int64_t(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t threads = std::max<int64_t>(1, std::min({cores, n_items, total_elems / kElemsPerThread}));
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n_items;) fn(i);
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
}

}  // namespace fk
