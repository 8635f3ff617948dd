// CUDA driver: the brick algorithm of brick.h, one warp per 32-point segment along z. Launches are asynchronous
// on the caller's stream and nothing here synchronises: the caller reads the three totals back once, to size
// the outputs. The kernels hold only the glue a warp needs (ballots, shuffles, shared memory); every decision
// is a brick.h function that the CPU method "bricks" runs too.
#include <cuda_runtime.h>

#include <cub/device/device_scan.cuh>

#include "marching_cubes/brick.h"
#include "mc_dispatch.h"

namespace fk {
namespace brick {
namespace {

constexpr unsigned kFullWarp = 0xffffffffu;
constexpr int kThreads = kWarps * kLanes;
// 4 blocks of 256 threads per SM = 1024 of 2048 threads (50% occupancy on sm_80 / sm_90): at most 64 registers
// per thread (65536 per SM, allocated 256 per warp). Every kernel asks for that, the compile check holds it.
constexpr int kMinBlocksPerSm = 4;
constexpr int kCornerTable = 256 * 3 * FK_MAX_TRIANGLES;

// Pass 1: each warp takes a scan block, 32 consecutive segments, walked with pointer additions (SegmentWalk); a
// load of a warp is 32 consecutive values. It issues the loads of 8 segments (4 in fp64) before their ballots
// (1 KiB in flight per warp, 32 KiB per SM at 50% occupancy: about what HBM3 needs per SM to stream at full rate),
// lane q keeps segment q's two words, and the warp stores them at the end as two 128-byte runs.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    classify_kernel(Volume<T> vol, SegGrid sg, Scratch sc) {
  using R = typename Volume<T>::R;
  constexpr int kClassifyBatch = sizeof(T) == 8 ? 4 : 8;  // 1 KiB per warp in flight in fp32 and fp64
  const int lane = threadIdx.x % kLanes, warp = threadIdx.x / kLanes;
  const int64_t first = (int64_t(blockIdx.x) * kWarps + warp) * kSegsPerBlock, segments = sg.count();
  if (first >= segments) return;
  const int n = segments - first < kSegsPerBlock ? int(segments - first) : kSegsPerBlock;
  const int64_t lane_off = lane * vol.sz;
  SegmentWalk<T> w(vol, sg, first);
  uint32_t my_in = 0, my_fin = 0;
  for (int q0 = 0; q0 < n; q0 += kClassifyBatch) {
    R v[kClassifyBatch];
    uint32_t points[kClassifyBatch];
#pragma unroll
    for (int b = 0; b < kClassifyBatch; ++b) {
      points[b] = 0;
      v[b] = R(0);
      if (q0 + b < n) {
        points[b] = w.points();
        v[b] = w.value(lane_off, points[b] >> lane & 1u);
        if (q0 + b + 1 < n) w.advance(vol, sg);
      }
    }
#pragma unroll
    for (int b = 0; b < kClassifyBatch; ++b) {
      if (q0 + b >= n) break;
      bool inside, finite;
      classify_value(v[b], vol.level, bool(points[b] >> lane & 1u), inside, finite);
      const uint32_t in_word = __ballot_sync(kFullWarp, inside), fin_word = __ballot_sync(kFullWarp, finite);
      if (lane == q0 + b) {
        my_in = in_word;
        my_fin = fin_word;
      }
      // A NaN / inf: flag its slab (rare, so the index is split again here rather than kept per segment).
      if (lane == 0 && fin_word != points[b]) atomicOr(&sc.slab_bad[sg.decode(first + q0 + b).i], 1u);
    }
  }
  if (lane < n) {
    sc.inside[first + lane] = my_in;
    sc.finite[first + lane] = my_fin;
  }
}

// Pass 1b: one thread per segment (consecutive threads, consecutive words): the valid-cell words of cell rows
// that span a slab with a NaN / inf. Grids with none return at once.
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm) valid_cells_kernel(Planes p, Scratch sc) {
  const int64_t g = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (g >= p.grid.count()) return;
  const SegIndex x = p.grid.decode(g);
  if (p.needs_valid_word(x.i, x.j, x.s)) sc.valid[g] = p.compute_valid_cells(x.i, x.j, x.s);
}

// Pass 2: one warp per scan block of 32 segments. Lane l tests segment l for mixed cells (a word test: a
// segment far from the surface costs its warp 1/32 of the work); then the warp counts each busy segment with a
// lane per point, warp totals by popcounts of edge words and of the ballots of triangle-count bits; then the
// 32 segment counts, one per lane, are scanned with shuffles and the active segments listed. Lanes whose cell has
// an ambiguous face read its 8 values to decide it; the others read no value.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm) count_kernel(Volume<T> vol, Planes p, Scratch sc) {
  __shared__ int8_t tri_count[256];
  for (int c = threadIdx.x; c < 256; c += kThreads) tri_count[c] = tables::dTriCount[c];
  __syncthreads();
  const int lane = threadIdx.x % kLanes, warp = threadIdx.x / kLanes;
  const int64_t b = int64_t(blockIdx.x) * kWarps + warp, first = b * kSegsPerBlock, segments = p.grid.count();
  if (b >= p.grid.blocks()) return;  // whole warps; no block barrier follows
  bool mixed = false;
  if (first + lane < segments) {
    const SegIndex x = p.grid.decode(first + lane);
    uint32_t corner[8];
    mixed = segment_corners(p, x.i, x.j, x.s, corner) != 0u;
  }
  uint64_t own = 0;
  for (uint32_t work = __ballot_sync(kFullWarp, mixed); work; work &= work - 1) {  // uniform across the warp
    const int ls = lowest_lane(work);
    const SegIndex x = p.grid.decode(first + ls);
    uint32_t v[3];
    owned_edges(p, x.i, x.j, x.s, v);
    const SegmentCells cells = segment_cells(p, x.i, x.j, x.s);
    const int config = lane_case(cells, lane);
    int ntri = tri_count[config];
    bool centre = false;
    if (cells.decided >> lane & 1u) {
      const int variant = lane_variant(vol, cells, config, x.i, x.j, x.s, lane);
      ntri = variant_tri_count(variant);
      centre = variant_centre(variant);
    }
    const uint32_t tri_bits[kTriBits] = {__ballot_sync(kFullWarp, ntri & 1), __ballot_sync(kFullWarp, ntri & 2),
                                         __ballot_sync(kFullWarp, ntri & 4), __ballot_sync(kFullWarp, ntri & 8)};
    const uint32_t centres = __ballot_sync(kFullWarp, centre);
    if (lane == ls) own = pack_counts(vertex_total(v), tri_total(tri_bits), popc(centres));
  }
  uint64_t inclusive = own;
  for (int d = 1; d < kLanes; d <<= 1) inclusive = scan_step(inclusive, __shfl_up_sync(kFullWarp, inclusive, d), lane, d);
  const uint32_t active = __ballot_sync(kFullWarp, own != 0);
  if (first + lane < segments) store_segment_offsets(sc, first + lane, inclusive - own);
  if (own) sc.active_slots[first + active_slot(active, lane)] = uint8_t(lane);
  if (lane == kLanes - 1) sc.block_totals[b] = block_total(inclusive, active);
  if (b == 0 && lane == 0) sc.block_totals[p.grid.blocks()] = Totals{0, 0, 0, 0};
}

// Lane `from`'s table source.
__device__ __forceinline__ TableSource shfl_source(const TableSource& mine, int from) {
  TableSource src;
  for (int a = 0; a < 3; ++a) src.v[a] = __shfl_sync(kFullWarp, mine.v[a], from);
  src.rel = __shfl_sync(kFullWarp, mine.rel, from);
  return src;
}

// Compaction, after the scan: one thread per slot of a scan block (consecutive threads, consecutive slots).
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm) compact_kernel(Scratch sc, int64_t blocks) {
  const int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (t < blocks * kSegsPerBlock) compact_slot(sc, t / kSegsPerBlock, int(t % kSegsPerBlock));
}

// The active segment of warp `warp` in block `block` of an emit launch (8 per block); false past the last.
__device__ __forceinline__ bool active_segment(const Scratch& sc, int64_t n_active, int warp, int64_t& g) {
  const int64_t a = int64_t(blockIdx.x) * kWarps + warp;
  if (a >= n_active) return false;
  g = sc.active_list[a];
  return true;
}

// The run of the row whose point k (the lane's) is at element offset `at`: one load per lane, the z
// neighbours by shuffles.
template <typename T>
__device__ __forceinline__ ZRun<typename Volume<T>::R> z_run(const Volume<T>& vol, int64_t at, int64_t k, int lane) {
  const auto c = row_value(vol, at, k);
  return {z_neighbour(vol, at, k, -1, __shfl_up_sync(kFullWarp, c, 1), lane), c,
          z_neighbour(vol, at, k, 1, __shfl_down_sync(kFullWarp, c, 1), lane)};
}

// Pass 3a: one warp per active segment writes its vertices, one axis at a time (edge words are uniform across
// the warp, so the shuffles run converged); consecutive lanes read consecutive values. The value at the lane's
// point of row (i, j) and of the row across the edge are loaded once; the values at k +- 1 and k + 2 that the
// interpolation and the z gradients need come from the neighbouring lanes.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    emit_vertices_kernel(Volume<T> vol, Planes p, Scratch sc, EmitTarget out, int64_t n_active) {
  using R = typename Volume<T>::R;
  const int lane = threadIdx.x % kLanes, warp = threadIdx.x / kLanes;
  int64_t g;
  if (!active_segment(sc, n_active, warp, g)) return;
  const SegIndex x = p.grid.decode(g);
  uint32_t v[3];
  owned_edges(p, x.i, x.j, x.s, v);
  const int64_t vbase = segment_vertex_base(sc, g), k = 32 * x.s + lane;
  const int64_t off = point_offset(vol.sx, vol.sy, vol.sz, x.i, x.j, k);
  const ZRun<R> pr = z_run(vol, off, k, lane);
  // Unrolled: each axis gets its own copy with the offsets folded (one copy with a run-time axis keeps the
  // interpolation's constants live across the loop and needs ~100 registers).
#pragma unroll
  for (int axis = 0; axis < 3; ++axis) {
    if (!v[axis]) continue;  // uniform across the warp
    const ZRun<R> qr =
        axis == 2 ? ZRun<R>{pr.c, pr.hi, z_neighbour(vol, off, k, 2, __shfl_down_sync(kFullWarp, pr.c, 2), lane)}
                  : z_run(vol, off + (axis == 0 ? vol.sx : vol.sy), k, lane);
    emit_lane_vertex(vol, out, v, vbase, x.i, x.j, x.s, off, lane, axis, pr, qr);
  }
}

// Pass 3b: one warp per active segment writes its cells' triangles through the warp's edge -> id table. The grid
// is read only by lanes whose cell has an ambiguous face (its 8 values decide it and place a centre vertex).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    emit_faces_kernel(Volume<T> vol, Planes p, Scratch sc, EmitTarget out, int64_t n_active) {
  __shared__ int8_t tri_count[256], tri_edges[kCornerTable], edge_corner[12], edge_axis[12];
  __shared__ EdgeIdTable edge_tables[kWarps];
  for (int c = threadIdx.x; c < kCornerTable; c += kThreads) tri_edges[c] = (&tables::dTriEdges[0][0])[c];
  for (int c = threadIdx.x; c < 256; c += kThreads) tri_count[c] = tables::dTriCount[c];
  if (threadIdx.x < 12) {
    edge_corner[threadIdx.x] = tables::dEdgeCorner[threadIdx.x];
    edge_axis[threadIdx.x] = tables::dEdgeAxis[threadIdx.x];
  }
  __syncthreads();
  const int lane = threadIdx.x % kLanes, warp = threadIdx.x / kLanes;
  int64_t g;
  if (!active_segment(sc, n_active, warp, g)) return;  // whole warps; no block barrier follows
  const SegIndex x = p.grid.decode(g);
  const SegmentCells cells = segment_cells(p, x.i, x.j, x.s);
  if (!cells.emitting) return;
  const int64_t vbase = segment_vertex_base(sc, g);
  EdgeIdTable& table = edge_tables[warp];
  const TableSource mine = edge_table_source(p, sc, x.i, x.j, x.s, vbase, lane % (2 * kTableRows));
  for (int r = 0; r < kTableRows; ++r)
    edge_table_entry(table, r, shfl_source(mine, r), shfl_source(mine, r + kTableRows), lane);
  __syncwarp();
  const int config = lane_case(cells, lane);
  int ntri = tri_count[config], variant = -1;
  if (cells.decided >> lane & 1u) {
    variant = lane_variant(vol, cells, config, x.i, x.j, x.s, lane);
    ntri = variant_tri_count(variant);
  }
  const bool has_centre = variant >= 0 && variant_centre(variant);
  const uint32_t tri_bits[kTriBits] = {__ballot_sync(kFullWarp, ntri & 1), __ballot_sync(kFullWarp, ntri & 2),
                                       __ballot_sync(kFullWarp, ntri & 4), __ballot_sync(kFullWarp, ntri & 8)};
  const uint32_t centres = __ballot_sync(kFullWarp, has_centre);
  const CaseTables ct{tri_count, tri_edges, edge_corner, edge_axis};
  emit_lane_faces(table, ct, out, config, variant, ntri, vbase, segment_tri_base(sc, g) + tri_prefix(tri_bits, lane),
                  lane_centre_id(out, sc, g, centres, lane), lane);
}

// Pass 3c: one warp per active segment writes the centre vertices of its cells (most segments have none and
// return after the word test).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    emit_centres_kernel(Volume<T> vol, Planes p, Scratch sc, EmitTarget out, int64_t n_active) {
  const int lane = threadIdx.x % kLanes, warp = threadIdx.x / kLanes;
  int64_t g;
  if (!active_segment(sc, n_active, warp, g)) return;
  const SegIndex x = p.grid.decode(g);
  const SegmentCells cells = segment_cells(p, x.i, x.j, x.s);
  if (!cells.decided) return;  // uniform across the warp
  const int variant = lane_variant(vol, cells, lane_case(cells, lane), x.i, x.j, x.s, lane);
  const bool has_centre = variant >= 0 && variant_centre(variant);
  const uint32_t centres = __ballot_sync(kFullWarp, has_centre);
  if (has_centre) emit_lane_centre(vol, out, x.i, x.j, x.s, lane, lane_centre_id(out, sc, g, centres, lane));
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

size_t scan_temp_bytes(int64_t blocks) {
  size_t bytes = 0;
  check(cub::DeviceScan::ExclusiveScan(nullptr, bytes, static_cast<const Totals*>(nullptr),
                                       static_cast<Totals*>(nullptr), AddTotals{}, Totals{0, 0, 0, 0}, blocks + 1),
        "marching cubes scan (temp size)");
  return bytes;
}

Scratch scratch_of(const SegGrid& sg, uintptr_t scratch) {
  check_brick_grid(sg);
  return carve(reinterpret_cast<void*>(scratch), make_layout(sg, scan_temp_bytes(sg.blocks())));
}

}  // namespace
}  // namespace brick

bool cuda_built() { return true; }

int64_t mc_brick_scan_temp_bytes_cuda(int64_t blocks) { return int64_t(brick::scan_temp_bytes(blocks)); }

void mc_brick_count_cuda(const GridDesc& grid, uintptr_t scratch, uintptr_t totals, uintptr_t stream_handle) {
  using namespace brick;
  const SegGrid sg = make_seg_grid(grid.shape[0], grid.shape[1], grid.shape[2]);
  const Scratch sc = scratch_of(sg, scratch);
  const int64_t blocks = sg.blocks();
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  check(cudaMemsetAsync(sc.slab_bad, 0, sizeof(uint32_t) * size_t(sg.nx), stream), "marching cubes memset");
  dispatch_dtype(grid.dtype, [&](auto tag) {
    classify_kernel<<<unsigned((blocks + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
        make_volume<decltype(tag)>(grid), sg, sc);
  });
  check(cudaGetLastError(), "marching cubes classify kernel");
  const Planes p = planes_of(sg, sc);
  valid_cells_kernel<<<unsigned((sg.count() + kThreads - 1) / kThreads), kThreads, 0, stream>>>(p, sc);
  check(cudaGetLastError(), "marching cubes valid-cell kernel");
  dispatch_dtype(grid.dtype, [&](auto tag) {
    count_kernel<<<unsigned((blocks + kWarps - 1) / kWarps), kThreads, 0, stream>>>(make_volume<decltype(tag)>(grid),
                                                                                      p, sc);
  });
  check(cudaGetLastError(), "marching cubes count kernel");
  size_t temp_bytes = sc.scan_temp_bytes;
  check(cub::DeviceScan::ExclusiveScan(sc.scan_temp, temp_bytes, sc.block_totals, sc.block_bases, AddTotals{},
                                       Totals{0, 0, 0, 0}, blocks + 1, stream),
        "marching cubes block scan");
  check(cudaMemcpyAsync(reinterpret_cast<void*>(totals), sc.block_bases + blocks, sizeof(Totals),
                        cudaMemcpyDeviceToDevice, stream),
        "marching cubes totals copy");
  compact_kernel<<<unsigned((blocks * kSegsPerBlock + kThreads - 1) / kThreads), kThreads, 0, stream>>>(sc, blocks);
  check(cudaGetLastError(), "marching cubes compaction kernel");
}

void mc_brick_emit_cuda(const GridDesc& grid, const EmitDesc& desc, uintptr_t scratch, int64_t n_active,
                        uintptr_t stream_handle) {
  using namespace brick;
  if (n_active <= 0) return;
  const SegGrid sg = make_seg_grid(grid.shape[0], grid.shape[1], grid.shape[2]);
  const Scratch sc = scratch_of(sg, scratch);
  const EmitTarget out = make_target(desc);
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const unsigned grid_blocks = unsigned((n_active + kWarps - 1) / kWarps);
  const Planes p = planes_of(sg, sc);
  dispatch_dtype(grid.dtype, [&](auto tag) {
    emit_vertices_kernel<<<grid_blocks, kThreads, 0, stream>>>(make_volume<decltype(tag)>(grid), p, sc, out,
                                                               n_active);
  });
  check(cudaGetLastError(), "marching cubes vertex kernel");
  dispatch_dtype(grid.dtype, [&](auto tag) {
    emit_faces_kernel<<<grid_blocks, kThreads, 0, stream>>>(make_volume<decltype(tag)>(grid), p, sc, out, n_active);
  });
  check(cudaGetLastError(), "marching cubes face kernel");
  dispatch_dtype(grid.dtype, [&](auto tag) {
    emit_centres_kernel<<<grid_blocks, kThreads, 0, stream>>>(make_volume<decltype(tag)>(grid), p, sc, out,
                                                              n_active);
  });
  check(cudaGetLastError(), "marching cubes centre-vertex kernel");
}

}  // namespace fk
