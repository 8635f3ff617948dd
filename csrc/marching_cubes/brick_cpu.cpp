// CPU method "bricks": the CUDA driver's algorithm (brick.h) run block by block on CPU threads, each warp
// emulated by loops over its 32 lanes: a ballot is a loop that sets one bit per lane, a shuffle reads the
// neighbouring lane's array entry, shared memory is a local array. It exists so that machines with no GPU check
// the CUDA driver's logic (classification words, scans, offsets, edge -> id resolution) against the other CPU
// methods, bit for bit; it is not meant to be fast.
#include <algorithm>

#include "marching_cubes/brick.h"
#include "mc_dispatch.h"
#include "mc_parallel.h"

namespace fk {
namespace brick {
namespace {

// The CPU drivers' pool, with the chunk's per-thread state unused.
template <typename Fn>
void parallel_chunks(int64_t n, int64_t grain, int num_threads, Fn&& fn) {
  parallel::parallel_chunks(n, grain, num_threads, [&](int64_t lo, int64_t hi, int) { fn(lo, hi); });
}

const CaseTables kHostTables{tables::kTriCount, &tables::kTriEdges[0][0], tables::kEdgeCorner, tables::kEdgeAxis};

// __ballot_sync over a warp whose lanes hold pred(lane).
template <typename Pred>
uint32_t ballot(Pred&& pred) {
  uint32_t word = 0;
  for (int lane = 0; lane < kLanes; ++lane) word |= uint32_t(bool(pred(lane))) << lane;
  return word;
}

// Pass 1 for slabs [lo, hi): one slab per thread at a time, so slab_bad[i] has one writer. One walk crosses the
// rows and slabs of the chunk, as a GPU warp's crosses those of its scan block.
template <typename T>
void classify_slabs(const Volume<T>& vol, const SegGrid& sg, const Scratch& sc, int64_t lo, int64_t hi) {
  for (int64_t i = lo; i < hi; ++i) sc.slab_bad[i] = 0;
  const int64_t g0 = sg.index(lo, 0, 0), g1 = sg.index(hi, 0, 0);
  if (g0 >= g1) return;
  SegmentWalk<T> w(vol, sg, g0);
  for (int64_t g = g0; g < g1; ++g) {
    const uint32_t points = w.points();
    bool inside[kLanes], finite[kLanes];
    for (int lane = 0; lane < kLanes; ++lane) {
      const bool in_row = points >> lane & 1u;
      classify_value(w.value(lane * vol.sz, in_row), vol.level, in_row, inside[lane], finite[lane]);
    }
    sc.inside[g] = ballot([&](int l) { return inside[l]; });
    sc.finite[g] = ballot([&](int l) { return finite[l]; });
    if (sc.finite[g] != points) sc.slab_bad[w.i] = 1;
    if (g + 1 < g1) w.advance(vol, sg);
  }
}

// The 4 ballots of the lanes' triangle-count bits.
void tri_ballots(const int ntri[kLanes], uint32_t bits[kTriBits]) {
  for (int b = 0; b < kTriBits; ++b) bits[b] = ballot([&](int l) { return ntri[l] >> b & 1; });
}

// Pass 2 for scan block b (32 segments, one warp): lane l tests segment l for mixed cells, then the warp counts
// each busy segment with a lane per point; lane l keeps segment l's counts for the scan.
template <typename T>
void count_block(const Volume<T>& vol, const Planes& p, const Scratch& sc, int64_t b) {
  const SegGrid& sg = p.grid;
  const int64_t first = b * kSegsPerBlock;
  const uint32_t busy = ballot([&](int lane) {
    if (first + lane >= sg.count()) return false;
    const SegIndex x = sg.decode(first + lane);
    uint32_t corner[8];
    return segment_corners(p, x.i, x.j, x.s, corner) != 0u;
  });
  uint64_t seg_counts[kLanes] = {};
  for (uint32_t work = busy; work; work &= work - 1) {
    const int ls = lowest_lane(work);
    const SegIndex x = sg.decode(first + ls);
    uint32_t v[3];
    owned_edges(p, x.i, x.j, x.s, v);
    const SegmentCells cells = segment_cells(p, x.i, x.j, x.s);
    int ntri[kLanes];
    bool centre[kLanes];
    for (int lane = 0; lane < kLanes; ++lane) {
      const int config = lane_case(cells, lane);
      const int variant = lane_variant(vol, cells, config, x.i, x.j, x.s, lane);
      ntri[lane] = variant >= 0 ? variant_tri_count(variant) : kHostTables.tri_count[config];
      centre[lane] = variant >= 0 && variant_centre(variant);
    }
    uint32_t tri_bits[kTriBits];
    tri_ballots(ntri, tri_bits);
    const uint32_t centres = ballot([&](int l) { return centre[l]; });
    seg_counts[ls] = pack_counts(vertex_total(v), tri_total(tri_bits), popc(centres));
  }
  // The scan, lane l = segment l. __shfl_up_sync(v, d) hands lanes below d their own value; going down from lane
  // 31 reads each lower lane before it is overwritten, as the simultaneous shuffle does.
  uint64_t inclusive[kLanes];
  std::copy(seg_counts, seg_counts + kLanes, inclusive);
  for (int d = 1; d < kLanes; d <<= 1)
    for (int lane = kLanes - 1; lane >= 0; --lane)
      inclusive[lane] = scan_step(inclusive[lane], inclusive[lane >= d ? lane - d : lane], lane, d);
  const uint32_t active = ballot([&](int l) { return seg_counts[l] != 0; });
  for (int lane = 0; lane < kLanes; ++lane) {
    if (first + lane < sg.count()) store_segment_offsets(sc, first + lane, inclusive[lane] - seg_counts[lane]);
    if (seg_counts[lane]) sc.active_slots[first + active_slot(active, lane)] = uint8_t(lane);
  }
  sc.block_totals[b] = block_total(inclusive[kLanes - 1], active);
}

// __shfl_up_sync(value, -d) / __shfl_down_sync(value, d) over a warp whose lanes hold vals[lane]: the value of
// lane + d, or the lane's own where there is no such lane (CUDA's rule, kept independent of brick.h's z_in_warp
// so that a wrong lane test there shows).
template <typename R>
R shfl(const R* vals, int lane, int d) {
  const int src = lane + d;
  return src >= 0 && src < kLanes ? vals[src] : vals[lane];
}

// The warp's runs of row (i, j) at segment s: every lane loads its own value, the neighbours come by "shuffle".
template <typename T, typename R = typename Volume<T>::R>
void z_runs(const Volume<T>& vol, int64_t i, int64_t j, int64_t s, ZRun<R> runs[kLanes]) {
  R c[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) {
    const int64_t k = 32 * s + lane;
    c[lane] = row_value(vol, point_offset(vol.sx, vol.sy, vol.sz, i, j, k), k);
  }
  for (int lane = 0; lane < kLanes; ++lane) {
    const int64_t k = 32 * s + lane, at = point_offset(vol.sx, vol.sy, vol.sz, i, j, k);
    runs[lane] = {z_neighbour(vol, at, k, -1, shfl(c, lane, -1), lane), c[lane],
                  z_neighbour(vol, at, k, 1, shfl(c, lane, 1), lane)};
  }
}

// The vertex kernel's work for one segment: the axes its edge words use, one at a time, as the warp does.
template <typename T>
void emit_segment_vertices(const Volume<T>& vol, const EmitTarget& out, const uint32_t v[3], int64_t vbase,
                           const SegIndex& x) {
  using R = typename Volume<T>::R;
  ZRun<R> pr[kLanes], qr[kLanes];
  R c[kLanes];
  z_runs(vol, x.i, x.j, x.s, pr);
  for (int axis = 0; axis < 3; ++axis) {
    if (!v[axis]) continue;
    if (axis == 2) {
      for (int lane = 0; lane < kLanes; ++lane) c[lane] = pr[lane].c;
      for (int lane = 0; lane < kLanes; ++lane) {
        const int64_t k = 32 * x.s + lane, at = point_offset(vol.sx, vol.sy, vol.sz, x.i, x.j, k);
        qr[lane] = {pr[lane].c, pr[lane].hi, z_neighbour(vol, at, k, 2, shfl(c, lane, 2), lane)};
      }
    } else {
      z_runs(vol, x.i + (axis == 0), x.j + (axis == 1), x.s, qr);
    }
    for (int lane = 0; lane < kLanes; ++lane) {
      const int64_t off = point_offset(vol.sx, vol.sy, vol.sz, x.i, x.j, 32 * x.s + lane);
      emit_lane_vertex(vol, out, v, vbase, x.i, x.j, x.s, off, lane, axis, pr[lane], qr[lane]);
    }
  }
}

// Pass 3 for active segment a: one emulated warp.
template <typename T>
void emit_segment(const Volume<T>& vol, const Planes& p, const Scratch& sc, const EmitTarget& out, int64_t a) {
  const SegGrid& sg = p.grid;
  const int64_t g = sc.active_list[a];
  const SegIndex x = sg.decode(g);
  const int64_t vbase = segment_vertex_base(sc, g);
  uint32_t v[3];
  owned_edges(p, x.i, x.j, x.s, v);
  emit_segment_vertices(vol, out, v, vbase, x);
  const SegmentCells cells = segment_cells(p, x.i, x.j, x.s);
  if (!cells.emitting) return;
  EdgeIdTable table;
  TableSource sources[2 * kTableRows];
  for (int q = 0; q < 2 * kTableRows; ++q) sources[q] = edge_table_source(p, sc, x.i, x.j, x.s, vbase, q);
  for (int r = 0; r < kTableRows; ++r)
    for (int lane = 0; lane < kLanes; ++lane) edge_table_entry(table, r, sources[r], sources[r + kTableRows], lane);
  int config[kLanes], variant[kLanes], ntri[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) {
    config[lane] = lane_case(cells, lane);
    variant[lane] = lane_variant(vol, cells, config[lane], x.i, x.j, x.s, lane);
    ntri[lane] = variant[lane] >= 0 ? variant_tri_count(variant[lane]) : kHostTables.tri_count[config[lane]];
  }
  uint32_t tri_bits[kTriBits];
  tri_ballots(ntri, tri_bits);
  const uint32_t centres = ballot([&](int l) { return variant[l] >= 0 && variant_centre(variant[l]); });
  const int64_t tbase = segment_tri_base(sc, g);
  for (int lane = 0; lane < kLanes; ++lane)
    emit_lane_faces(table, kHostTables, out, config[lane], variant[lane], ntri[lane], vbase,
                    tbase + tri_prefix(tri_bits, lane), lane_centre_id(out, sc, g, centres, lane), lane);
  // The centre vertices (their own kernel on the GPU).
  if (!centres) return;
  for (int lane = 0; lane < kLanes; ++lane)
    if (centres >> lane & 1u)
      emit_lane_centre(vol, out, x.i, x.j, x.s, lane, lane_centre_id(out, sc, g, centres, lane));
}

}  // namespace

}  // namespace brick

int64_t mc_brick_scratch_bytes(const int64_t shape[3], bool cuda) {
  const brick::SegGrid sg = brick::make_seg_grid(shape[0], shape[1], shape[2]);
  brick::check_brick_grid(sg);
  const int64_t temp = cuda ? mc_brick_scan_temp_bytes_cuda(sg.blocks()) : 0;
  return int64_t(brick::make_layout(sg, size_t(temp)).bytes);
}

void mc_brick_count_cpu(const GridDesc& grid, uintptr_t scratch, uintptr_t totals, int num_threads) {
  using namespace brick;
  const SegGrid sg = make_seg_grid(grid.shape[0], grid.shape[1], grid.shape[2]);
  check_brick_grid(sg);
  const Scratch sc = carve(reinterpret_cast<void*>(scratch), make_layout(sg, 0));
  dispatch_dtype(grid.dtype, [&](auto tag) {
    const auto vol = make_volume<decltype(tag)>(grid);
    // Chunks of 3 slabs, so that a walk crosses slab ends as a GPU warp's does.
    parallel_chunks(sg.nx, 3, num_threads, [&](int64_t lo, int64_t hi) { classify_slabs(vol, sg, sc, lo, hi); });
  });
  const Planes p = planes_of(sg, sc);
  const int64_t blocks = sg.blocks();
  parallel_chunks(sg.count(), 4096, num_threads, [&](int64_t lo, int64_t hi) {
    for (int64_t g = lo; g < hi; ++g) {
      const SegIndex x = sg.decode(g);
      if (p.needs_valid_word(x.i, x.j, x.s)) sc.valid[g] = p.compute_valid_cells(x.i, x.j, x.s);
    }
  });
  dispatch_dtype(grid.dtype, [&](auto tag) {
    const auto vol = make_volume<decltype(tag)>(grid);
    parallel_chunks(blocks, 64, num_threads, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) count_block(vol, p, sc, b);
    });
  });
  // The device-wide exclusive scan of block totals (CUB on the GPU).
  sc.block_totals[blocks] = Totals{0, 0, 0, 0};
  Totals run{0, 0, 0, 0};
  for (int64_t b = 0; b <= blocks; ++b) {
    sc.block_bases[b] = run;
    run = run + sc.block_totals[b];
  }
  *reinterpret_cast<Totals*>(totals) = sc.block_bases[blocks];
  // Compaction, one emulated thread per slot; blocks backwards (a GPU runs them in any order).
  for (int64_t b = blocks - 1; b >= 0; --b)
    for (int slot = 0; slot < kSegsPerBlock; ++slot) compact_slot(sc, b, slot);
}

void mc_brick_emit_cpu(const GridDesc& grid, const EmitDesc& desc, uintptr_t scratch, int64_t n_active,
                       int num_threads) {
  using namespace brick;
  const SegGrid sg = make_seg_grid(grid.shape[0], grid.shape[1], grid.shape[2]);
  check_brick_grid(sg);
  const Scratch sc = carve(reinterpret_cast<void*>(scratch), make_layout(sg, 0));
  const Planes p = planes_of(sg, sc);
  const EmitTarget out = make_target(desc);
  dispatch_dtype(grid.dtype, [&](auto tag) {
    const auto vol = make_volume<decltype(tag)>(grid);
    parallel_chunks(n_active, 256, num_threads, [&](int64_t lo, int64_t hi) {
      for (int64_t a = lo; a < hi; ++a) emit_segment(vol, p, sc, out, a);
    });
  });
}

}  // namespace fk
