// Multithreaded CPU driver. The default method classifies the grid into bit planes (mc_bits.h) and counts and
// emits from them; the row-walk method runs mc_core.h's per-row code on CPU threads, so tests can check on any
// machine that both give the same mesh (the third method, bricks, lives in marching_cubes/brick_cpu.cpp).
#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "mc_bits.h"
#include "mc_dispatch.h"
#include "mc_parallel.h"

namespace fk {
namespace {

using parallel::parallel_chunks;
using parallel::resolve_threads;

// fn(i, j, state) for every row (i, j) of the grid, in chunks of rows large enough that handing one out costs
// nothing next to the work in it.
template <typename State, typename T, typename Fn>
void for_each_row(const Volume<T>& vol, int num_threads, Fn&& fn) {
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(vol.nz, 1));
  parallel_chunks<State>(vol.nx * vol.ny, grain, num_threads, [&](int64_t lo, int64_t hi, State& state) {
    for (int64_t r = lo; r < hi; ++r) fn(r / vol.ny, r % vol.ny, state);
  });
}

// Classify slab i (every row (i, j)) into the bit planes, with its finite / sides flags.
template <typename T>
void classify_slab(const Volume<T>& vol, const BitScratch& s, int64_t i) {
  bool slice_finite = true;
  for (int64_t j = 0; j < vol.ny; ++j) {
    const int64_t row = i * vol.ny + j;
    uint64_t* inside = s.inside + row * s.stride;
    const bool finite = classify_row(vol, i, j, inside, s.finite + row * s.stride);
    inside[s.stride - 1] = 0;
    if (!finite) s.finite[row * s.stride + s.stride - 1] = 0;
    s.row_finite[row] = finite;
    s.row_sides[row] = row_sides_of(inside, vol.nz);
    slice_finite &= finite;
  }
  s.slice_finite[i] = slice_finite;
}

template <typename T>
void count_slab(const Volume<T>& vol, const BitPlanes& bp, int64_t i, int64_t* counts, int64_t* spans) {
  for (int64_t j = 0; j < bp.ny; ++j) store_row(count_row_bits(vol, bp, i, j), i * bp.ny + j, counts, spans);
}

// Pass 1: classify the grid and count every row. Counting slab i needs slabs i - 1 .. i + 1 classified. Each
// thread takes blocks of slabs and counts a slab right after classifying the next one, while its bits are in
// L1 and the grid is still streaming in: the counting hides behind classification, which is bound by memory
// bandwidth. A block's first and last slabs border other blocks, so they are counted after every slab is
// classified. Grids too thin along x for a few blocks per thread classify all slabs, then count all rows.
template <typename T>
void classify_and_count(const Volume<T>& vol, const BitScratch& s, int64_t* counts, int64_t* spans,
                        int num_threads) {
  const int64_t words = words_per_row(vol.nz);
  std::fill(s.zero_row, s.zero_row + s.stride, uint64_t(0));
  std::fill(s.ones_row, s.ones_row + s.stride, uint64_t(0));
  for (int64_t w = 0; w < words; ++w) s.ones_row[w] = low_bits(vol.nz - 64 * w);
  const BitPlanes bp(s, vol.nx, vol.ny, vol.nz);
  const int64_t threads = resolve_threads(num_threads), block = std::min<int64_t>(16, vol.nx / (4 * threads));
  if (block < 4) {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(vol.ny * vol.nz, 1));  // >= 32k points
    parallel_chunks(vol.nx, grain, num_threads, [&](int64_t lo, int64_t hi, int) {
      for (int64_t i = lo; i < hi; ++i) classify_slab(vol, s, i);
    });
    for_each_row<int>(vol, num_threads, [&](int64_t i, int64_t j, int) {
      store_row(count_row_bits(vol, bp, i, j), i * vol.ny + j, counts, spans);
    });
    return;
  }
  const int64_t blocks = (vol.nx + block - 1) / block;
  parallel_chunks(blocks, 1, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t first = b * block, end = std::min(vol.nx, first + block);
      for (int64_t i = first; i < end; ++i) {
        classify_slab(vol, s, i);
        if (i - 1 > first) count_slab(vol, bp, i - 1, counts, spans);
      }
    }
  });
  parallel_chunks(blocks, 1, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t first = b * block, last = std::min(vol.nx, first + block) - 1;
      count_slab(vol, bp, first, counts, spans);
      if (last > first) count_slab(vol, bp, last, counts, spans);
    }
  });
}

void check_method(int method) {
  if (method != kMethodBitPlanes && method != kMethodRowWalk)
    throw std::invalid_argument("marching cubes CPU method code " + std::to_string(method) + " is not supported");
}

}  // namespace

void set_fail_thread_start(int nth) { parallel::fail_thread_start.store(nth); }

std::array<int64_t, 3> mc_offsets_cpu(uintptr_t counts_ptr, uintptr_t offsets_ptr, int64_t rows) {
  const auto* counts = reinterpret_cast<const int64_t*>(counts_ptr);
  auto* offsets = reinterpret_cast<int64_t*>(offsets_ptr);
  int64_t verts = 0, tris = 0, centres = 0;
  for (int64_t r = 0; r < rows; ++r) {
    offsets[3 * r] = verts;
    offsets[3 * r + 1] = tris;
    offsets[3 * r + 2] = centres;
    verts += counts[3 * r];
    tris += counts[3 * r + 1];
    centres += counts[3 * r + 2];
  }
  return {verts, tris, centres};
}

int64_t mc_scratch_words_cpu(const GridDesc& grid, int method) {
  check_method(method);
  return method == kMethodBitPlanes ? bit_scratch_words(grid.shape[0], grid.shape[1], grid.shape[2]) : 0;
}

void mc_count_cpu(const GridDesc& grid, uintptr_t counts_ptr, uintptr_t spans_ptr, uintptr_t scratch_ptr,
                  int method, int num_threads) {
  auto* counts = reinterpret_cast<int64_t*>(counts_ptr);
  auto* spans = reinterpret_cast<int64_t*>(spans_ptr);
  auto* scratch = reinterpret_cast<uint64_t*>(scratch_ptr);
  check_method(method);
  dispatch_dtype(grid.dtype, [&](auto tag) {
    auto vol = make_volume<decltype(tag)>(grid);
    if (method == kMethodRowWalk) {
      for_each_row<int>(vol, num_threads, [&](int64_t i, int64_t j, int) {
        store_row(count_row(vol, i, j), i * vol.ny + j, counts, spans);
      });
      return;
    }
    classify_and_count(vol, BitScratch(scratch, vol.nx, vol.ny, vol.nz), counts, spans, num_threads);
  });
}

void mc_emit_cpu(const GridDesc& grid, const EmitDesc& desc, uintptr_t scratch_ptr, int method, int num_threads) {
  EmitTarget out = make_target(desc);
  check_method(method);
  dispatch_dtype(grid.dtype, [&](auto tag) {
    auto vol = make_volume<decltype(tag)>(grid);
    if (method == kMethodRowWalk) {
      for_each_row<int>(vol, num_threads, [&](int64_t i, int64_t j, int) { emit_row(vol, out, i, j); });
      return;
    }
    // The planes are the ones the count pass classified: the caller hands back the same scratch.
    const BitPlanes bp(BitScratch(reinterpret_cast<uint64_t*>(scratch_ptr), vol.nx, vol.ny, vol.nz), vol.nx, vol.ny,
                       vol.nz);
    for_each_row<std::array<RowVertexIds, 4>>(vol, num_threads, [&](int64_t i, int64_t j, auto& ids) {
      emit_row_bits(vol, bp, out, i, j, ids.data());
    });
  });
}

}  // namespace fk
