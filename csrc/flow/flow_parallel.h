// Work splitting of the CPU flow kernels: each sample is cut into items of at most kItemElems elements, and the
// items are handed out to threads dynamically (ragged samples differ widely in size). A call under
// 2 x elems_per_thread() elements stays on the calling thread: below that, a second thread did not pay for waking it.
//
// Threads: when the extension is built with OpenMP and the process has exactly one OpenMP runtime loaded (torch's
// CPU wheels link libgomp.so.1, and so does this extension, so after `import torch` both resolve to the same
// library), the items run in an OpenMP parallel region: the same worker threads torch's own parallel ops use,
// still spinning from torch's last op, instead of a second set of threads that would compete with them for the
// cores. Otherwise (no OpenMP, e.g. Apple clang; or two runtimes, e.g. a torch built with Intel's) our own FlowPool.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "flow_api.h"

#if defined(FK_FLOW_OPENMP)
#include <link.h>
#include <omp.h>

#include <cstring>
#endif

namespace fk {

constexpr int64_t kItemElems = 1 << 15;        // elements per work item
constexpr int64_t kPoolElemsPerThread = 1 << 19;    // FlowPool: fewer elements than this per thread: fewer threads
constexpr int64_t kOpenMPElemsPerThread = 1 << 17;  // OpenMP (torch's hot threads): the same, from a lower size

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

// Worker threads kept across calls: a CPU training or sampling step makes a few calls of ~0.1 ms each, and
// starting a thread per call costs about as much as the call (torch's own ops keep their pool for the same reason).
// A caller hands a job to the idle workers and works on it itself; a worker that wakes after the caller has
// finished all items does not join, so the caller waits only for workers that are actually running an item. A
// second caller arriving while the pool is busy (another Python thread: the kernels release the GIL) runs alone.
class FlowPool {
 public:
  static FlowPool& instance() {
    // never destroyed (its threads are detached and wait forever); a forked child, which has none of the parent's
    // threads, makes its own
    static std::atomic<FlowPool*> pool{nullptr};
    static std::atomic<long> owner{0};
    const long pid = long(::getpid());
    if (owner.load() != pid) {
      static std::mutex create;
      std::lock_guard<std::mutex> lock(create);
      if (owner.load() != pid) {
        pool.store(new FlowPool());
        owner.store(pid);
      }
    }
    return *pool.load();
  }

  // Runs job() on the calling thread and on up to `extra` workers; false when the pool was busy (nothing run).
  bool run(int extra, const std::function<void()>& job) {
    {
      std::lock_guard<std::mutex> lock(m_);
      if (busy_) return false;
      busy_ = true;
      try {
        while (int(n_threads_) < extra) {
          std::thread(&FlowPool::worker, this).detach();
          ++n_threads_;
        }
      } catch (const std::system_error&) {  // no more threads: run with the ones there are
      }
      job_ = &job;
      wanted_ = extra;
      ++generation_;
    }
    wake_.notify_all();
    job();
    std::unique_lock<std::mutex> lock(m_);
    job_ = nullptr;  // late wakers stay out
    wanted_ = 0;
    done_.wait(lock, [&] { return active_ == 0; });
    busy_ = false;
    return true;
  }

 private:
  void worker() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (job_ == nullptr || wanted_ == 0) continue;
      --wanted_;
      ++active_;
      const std::function<void()>* job = job_;
      lock.unlock();
      (*job)();  // noexcept: run_items' job catches
      lock.lock();
      if (--active_ == 0) done_.notify_one();
    }
  }

  std::mutex m_;
  std::condition_variable wake_, done_;
  const std::function<void()>* job_ = nullptr;
  uint64_t generation_ = 0;
  int wanted_ = 0, active_ = 0;
  size_t n_threads_ = 0;
  bool busy_ = false;
};

#if defined(FK_FLOW_OPENMP)
// Names of the loaded OpenMP runtimes (GNU, LLVM, Intel) seen by dl_iterate_phdr.
inline int count_openmp_runtimes() {
  int count = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        const char* name = info->dlpi_name ? std::strrchr(info->dlpi_name, '/') : nullptr;
        name = name ? name + 1 : (info->dlpi_name ? info->dlpi_name : "");
        for (const char* lib : {"libgomp", "libomp.", "libiomp5"})
          if (std::strncmp(name, lib, std::strlen(lib)) == 0) ++*static_cast<int*>(data);
        return 0;
      },
      &count);
  return count;
}
#endif

// Whether OpenMP can be used: built with it, and one OpenMP runtime in the process (decided at the first call;
// the extension is loaded after torch, so torch's runtime is already there).
inline bool openmp_available() {
#if defined(FK_FLOW_OPENMP)
  static const bool one_runtime = count_openmp_runtimes() == 1;
  return one_runtime;
#else
  return false;
#endif
}

inline std::atomic<int>& openmp_mode() {  // -1: not decided yet, 0: FlowPool, 1: OpenMP
  static std::atomic<int> mode{-1};
  return mode;
}

// The process that decided to use OpenMP. GNU libgomp's threads do not survive fork(): a child that enters a
// parallel region after its parent has used one waits forever (torch's own ops too, unless the child calls
// torch.set_num_threads(1), as DataLoader workers do), so a forked child runs the kernels on FlowPool.
inline std::atomic<long>& openmp_pid() {
  static std::atomic<long> pid{0};
  return pid;
}

// Whether run_items uses OpenMP (the default when available) or FlowPool.
inline bool uses_openmp() {
  int mode = openmp_mode().load(std::memory_order_relaxed);
  if (mode < 0) {
    mode = openmp_available() ? 1 : 0;
    openmp_pid().store(long(::getpid()));
    openmp_mode().store(mode);
  }
  return mode == 1 && openmp_pid().load(std::memory_order_relaxed) == long(::getpid());
}

// Tests and measurements: OpenMP (when available) or FlowPool from the next call on; returns what is used.
inline bool set_uses_openmp(bool on) {
  openmp_pid().store(long(::getpid()));
  openmp_mode().store(on && openmp_available() ? 1 : 0);
  return uses_openmp();
}

inline int64_t elems_per_thread() { return uses_openmp() ? kOpenMPElemsPerThread : kPoolElemsPerThread; }

// Back-off on an oversubscribed machine: a fork-join call ends only when every thread that joined it is done, and
// when other processes keep the cores busy, a helper thread waits for a time slice (milliseconds) before it runs or
// finishes its item. A call whose caller waited longer than kStallNs for its helpers after running out of items
// sends the next calls to one thread: kSoloCalls of them, doubling on each further stall up to kMaxSoloCalls, back
// to kSoloCalls after a call without one. Results do not depend on the thread count, only the time does.
constexpr int64_t kStallNs = 250000;
constexpr int kSoloCalls = 64, kMaxSoloCalls = 1 << 14;

struct ThreadBackoff {
  std::atomic<int> solo_left{0};        // calls still to run on one thread
  std::atomic<int> next_solo{kSoloCalls};

  bool take_solo() {
    int left = solo_left.load(std::memory_order_relaxed);
    while (left > 0 && !solo_left.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
    }
    return left > 0;
  }
  void record(bool stalled) {
    if (!stalled) {
      next_solo.store(kSoloCalls, std::memory_order_relaxed);
      return;
    }
    const int n = next_solo.load(std::memory_order_relaxed);
    solo_left.store(n, std::memory_order_relaxed);
    next_solo.store(std::min(2 * n, kMaxSoloCalls), std::memory_order_relaxed);
  }
};

inline ThreadBackoff& thread_backoff() {
  static ThreadBackoff backoff;
  return backoff;
}

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// fn(item index) for every item, on up to num_threads threads (0: all cores). Items are taken from a shared
// counter, so which thread runs an item depends on timing; callers combine per-item results in item order.
template <typename Fn>
void run_items(int64_t n_items, int64_t total_elems, int num_threads, Fn&& fn) {
  if (n_items <= 0) return;
  const int64_t cores = num_threads > 0 ? num_threads : int64_t(std::max(1u, std::thread::hardware_concurrency()));
  int64_t threads = std::max<int64_t>(1, std::min({cores, n_items, total_elems / elems_per_thread()}));
  if (threads > 1 && thread_backoff().take_solo()) threads = 1;
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  const std::thread::id caller = std::this_thread::get_id();
  int64_t caller_done = 0;  // when the caller found no item left
  auto work = [&]() noexcept {
    try {
      for (int64_t i; (i = next.fetch_add(1)) < n_items;) fn(i);
    } catch (...) {
      next.store(n_items);
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
    if (std::this_thread::get_id() == caller) caller_done = now_ns();
  };
  if (threads <= 1) {
    work();
  } else {
    if (uses_openmp()) {
#if defined(FK_FLOW_OPENMP)
      // inside another parallel region (a caller's own OpenMP code) libgomp runs a nested region on one thread
#pragma omp parallel num_threads(int(threads))
      work();
#endif
    } else if (!FlowPool::instance().run(int(threads - 1), std::function<void()>(work))) {
      work();
    }
    thread_backoff().record(now_ns() - caller_done > kStallNs);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace fk
