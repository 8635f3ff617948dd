// The CPU drivers' thread pool: dynamic chunks over std::threads, errors joined and rethrown (mc_cpu.cpp for the
// bit-plane and row-walk methods, marching_cubes/brick_cpu.cpp for the brick method, distance/udf_cpu.cpp).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace fk {
namespace parallel {

inline int resolve_threads(int num_threads) {
  return num_threads > 0 ? num_threads : int(std::max(1u, std::thread::hardware_concurrency()));
}

// Test hook (set_fail_thread_start): the n-th worker thread a parallel run starts fails to start, as when the
// system refuses a thread after others started. 0: off.
inline std::atomic<int> fail_thread_start{0};

// Runs fn(begin, end, state) over [0, n) in chunks of `grain` tasks handed out dynamically: rows differ widely in
// work (a sphere's surface crosses some rows and misses others), so static blocks would leave a core idle.
// `State` is per-thread scratch, built once per thread rather than once per chunk (the emit pass's numbering
// buffers). A thread that fails to start, or a chunk that throws, stops the hand-out; the threads already running
// are joined before the error reaches the caller, so the process stays usable (a std::thread destroyed while
// joinable, or an exception leaving a thread, would call std::terminate).
template <typename State = int, typename Fn>
void parallel_chunks(int64_t n, int64_t grain, int num_threads, Fn&& fn) {
  if (n <= 0) return;
  const int64_t threads = std::min<int64_t>(resolve_threads(num_threads), (n + grain - 1) / grain);
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto fail = [&](std::exception_ptr e) {
    next.store(n);  // no more chunks for anyone
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!error) error = e;
  };
  auto work = [&]() noexcept {
    try {
      State state{};
      for (int64_t lo; (lo = next.fetch_add(grain)) < n;) fn(lo, std::min(n, lo + grain), state);
    } catch (...) {
      fail(std::current_exception());
    }
  };
  std::vector<std::thread> pool;
  bool start_failed = false;
  try {
    pool.reserve(size_t(threads - 1));
    for (int64_t t = 1; t < threads; ++t) {
      if (t == fail_thread_start.load())
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "test hook");
      pool.emplace_back(work);
    }
  } catch (const std::exception& e) {
    start_failed = true;
    fail(std::make_exception_ptr(std::runtime_error(
        "flowkernels could not start worker thread " + std::to_string(pool.size() + 1) + " of " +
        std::to_string(threads - 1) + " (" + e.what() + "); lower num_threads / FLOWKERNELS_NUM_THREADS")));
  }
  if (!start_failed) work();  // (a worker's error is read only after the joins, which order it before)
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace parallel
}  // namespace fk
