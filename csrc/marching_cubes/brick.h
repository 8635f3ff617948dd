// Marching cubes laid out for a GPU: the logic of the CUDA driver (brick_cuda.cu), written once as
// __host__ __device__ functions over an explicit lane / segment / block index, so that the CPU "bricks" method
// (brick_cpu.cpp) runs the same algorithm with warp primitives emulated by loops over 32 lanes.
//
// Units of work. A *segment* is 32 consecutive points of one grid row (fixed i, j) along z: one warp, lane l =
// point k = 32 s + l, so every load a warp makes of the grid is one contiguous run (128 bytes of fp32). Segments
// are numbered in C order, g = (i * ny + j) * segs + s; a *scan block* is 32 consecutive segments. Because
// segment order is C order, numbering vertices and triangles by segment keeps the CPU's mesh order (vertices
// by grid point then axis, triangles by cell then table order) with no sort.
//
// Passes. 1 classify: each warp loads segments and ballots two words per segment, inside (value < level) and
// finite, into bit planes (1/4 byte per point); 1b: valid-cell words, only next to slabs holding a NaN / inf.
// 2 count: one warp per scan block; lane l first tests segment l for mixed cells (word logic), then the warp
// takes each busy segment with a lane per point: 3 owned-edge bits per point and a case byte per cell from the
// words (neighbours along z by shifting a ballot word across the segment boundary), warp totals by popcounts;
// the 32 segment totals are scanned across the lanes and the scan-block total stored; a device-wide scan of
// those totals follows (CUB), then a compaction lists the active segments (owning a vertex or emitting a
// triangle) of the whole grid in order. 3 emit: one warp per entry of that list writes the segment's vertices
// (values along z passed between lanes by shuffles), then resolves triangle corners through a per-warp table of
// vertex ids of the 4 rows x 33 points around its cells, then writes its cells' centre vertices. Cells with an
// ambiguous face (or case 4) read their values in the count and face passes (the deciders, mc_core.h); centre
// vertices take ids after every edge vertex, in cell order: per scan block and per segment a third count,
// scanned alongside the other two.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mc_core.h"

namespace fk {
namespace brick {

constexpr int kLanes = 32;
constexpr int kWarps = 8;                              // warps per CUDA block (256 threads)
constexpr int kSegsPerBlock = 32;                      // a scan block: 32 consecutive segments, one per lane
static_assert(kSegsPerBlock == kLanes, "a scan block is scanned by one warp, one lane per segment");
constexpr int kTableRows = 4;                         // rows (i + dx, j + dy) around a cell row, r = dx | dy << 1
constexpr int kTablePoints = kLanes + 1;              // the segment's 32 points and the first of the next one
// Within a block a segment's first vertex, triangle and centre vertex are packed in one 64-bit word (the first
// two stored as one 32-bit word, the third as 16 bits): 32 segments own at most 32 * 32 * 3 = 3072 vertices, emit
// at most 32 * 32 * 12 = 12288 triangles and 1024 centre vertices, all below 2^16.
constexpr uint32_t kTriShift = 16;
constexpr uint32_t kCentreShift = 32;
static_assert(32 * 32 * FK_MAX_VARIANT_TRIANGLES < 65536 && FK_MAX_VARIANT_TRIANGLES < 16, "16-bit block counts");

FK_HD int popc(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __popc(x);
#else
  return __builtin_popcount(x);
#endif
}
FK_HD uint32_t lanes_below(int lane) { return (1u << lane) - 1u; }  // lane in [0, 32)
FK_HD uint32_t low_mask(int64_t n) { return n <= 0 ? 0u : n >= 32 ? ~0u : (1u << n) - 1u; }
// Bit l: point l + 1 / l - 1 of the stream of words, i.e. the z neighbour, across the segment boundary.
FK_HD uint32_t next_point(uint32_t w, uint32_t w_next) { return (w >> 1) | (w_next << 31); }
FK_HD uint32_t prev_point(uint32_t w, uint32_t w_prev) { return (w << 1) | (w_prev >> 31); }

struct SegIndex { int64_t i, j, s; };

// Division by a number fixed per grid, as a multiply and a shift (a GPU has no integer divider: a 64-bit `/`
// is a ~70-instruction routine, and a segment's index is split once per segment). With l = ceil(log2 d) and
// m = ceil(2^(31 + l) / d), n / d = (n * m) >> (31 + l) for every n < 2^31 (Granlund & Montgomery 1994); n * m
// stays below 2^63.
struct FastDiv {
  uint64_t m;
  int shift;
  FK_HD int64_t div(int64_t n) const { return int64_t((uint64_t(n) * m) >> shift); }
};
inline FastDiv make_fast_div(int64_t d) {
  int l = 0;
  while ((int64_t(1) << l) < d) ++l;
  return {((uint64_t(1) << (31 + l)) + uint64_t(d) - 1) / uint64_t(d), 31 + l};
}

// The grid seen as rows of 32-point segments.
struct SegGrid {
  int64_t nx, ny, nz, segs;  // segs: segments per row
  FastDiv by_segs, by_ny;
  FK_HD int64_t count() const { return nx * ny * segs; }
  FK_HD int64_t blocks() const { return (count() + kSegsPerBlock - 1) / kSegsPerBlock; }
  FK_HD int64_t index(int64_t i, int64_t j, int64_t s) const { return (i * ny + j) * segs + s; }
  FK_HD SegIndex decode(int64_t g) const {
    const int64_t row = by_segs.div(g), i = by_ny.div(row);
    return {i, row - i * ny, g - row * segs};
  }
  // Segment g + 1 from segment g's index: a warp walking consecutive segments splits an index once.
  FK_HD void advance(SegIndex& x) const {
    if (++x.s < segs) return;
    x.s = 0;
    if (++x.j < ny) return;
    x.j = 0;
    ++x.i;
  }
  FK_HD bool has_row(int64_t i, int64_t j) const { return i >= 0 && j >= 0 && i < nx && j < ny; }
  // Lanes of segment s holding a grid point / the lower corner of a cell along z.
  FK_HD uint32_t points(int64_t s) const { return low_mask(nz - 32 * s); }
  FK_HD uint32_t cell_points(int64_t s) const { return low_mask(nz - 1 - 32 * s); }
};
inline SegGrid make_seg_grid(int64_t nx, int64_t ny, int64_t nz) {
  const int64_t segs = (nz + kLanes - 1) / kLanes;
  return {nx, ny, nz, segs, make_fast_div(segs > 0 ? segs : 1), make_fast_div(ny > 0 ? ny : 1)};
}

// Segment indices are below 2^31 (FastDiv); vertex ids inside a warp's edge table are int32, relative to the
// warp's first vertex: the rows it reads end at most a slab and a row of segments (each owning <= 96 vertices)
// later.
inline void check_brick_grid(const SegGrid& sg) {
  const double span = 96.0 * double((sg.ny + 1) * sg.segs + 2);
  if (span >= 2147483647.0 || double(sg.count()) >= 2147483647.0)
    throw std::invalid_argument("grid shape (" + std::to_string(sg.nx) + ", " + std::to_string(sg.ny) + ", " +
                                std::to_string(sg.nz) + ") is too large for the brick marching cubes");
}

// Per-scan-block totals and, after the scan, bases (first vertex / triangle / active segment of the block).
struct Totals {
  int64_t verts, tris, active, centres;
  FK_HD Totals operator+(const Totals& o) const {
    return {verts + o.verts, tris + o.tris, active + o.active, centres + o.centres};
  }
};
struct AddTotals {
  FK_HD Totals operator()(const Totals& a, const Totals& b) const { return a + b; }
};

// The caller-allocated scratch, carved into aligned pieces. Per grid point: 3 bit planes (inside, finite, valid
// cells: 3/8 byte), the packed segment offsets (1/8) and centre offsets (1/16), active slots (1/32) and 64 bytes
// per scan block of 1024 points: ~0.64 byte when nz is a multiple of 32 (rows shorter than a segment pay for a
// whole one).
struct Layout {
  size_t inside, finite, valid, slab_bad, seg_offsets, seg_centres, active_slots, block_totals, block_bases,
      scan_temp, bytes;
};
inline size_t align_up(size_t n) { return (n + 255) & ~size_t(255); }
inline Layout make_layout(const SegGrid& sg, size_t scan_temp_bytes) {
  const size_t segs = size_t(sg.count()), blocks = size_t(sg.blocks());
  Layout l{};
  size_t at = 0;
  auto take = [&](size_t n) { size_t here = at; at += align_up(n); return here; };
  l.inside = take(4 * segs);
  l.finite = take(4 * segs);
  l.valid = take(4 * segs);
  l.slab_bad = take(4 * size_t(sg.nx));
  l.seg_offsets = take(4 * segs);
  l.seg_centres = take(2 * segs);
  l.active_slots = take(blocks * kSegsPerBlock);
  l.block_totals = take(sizeof(Totals) * (blocks + 1));
  l.block_bases = take(sizeof(Totals) * (blocks + 1));
  l.scan_temp = take(scan_temp_bytes);
  l.bytes = at;
  return l;
}

struct Scratch {
  uint32_t* inside;        // [segments]: bit l = point 32 s + l lies below the level
  uint32_t* finite;        // [segments]: bit l = that point is finite; read by pass 1b only
  uint32_t* valid;         // [segments]: bit l = cell (i, j, 32 s + l) has 8 finite corners; near NaN slabs only
  uint32_t* slab_bad;      // [nx]: nonzero when slab i holds a NaN / inf
  uint32_t* seg_offsets;   // [segments]: first vertex | first triangle << 16, relative to the block's
  uint16_t* seg_centres;   // [segments]: first centre vertex, relative to the block's
  uint8_t* active_slots;   // [blocks][32]: the block's active segments, in order
  // [segments]: after the scan, active segment number a (global, in order) -> its segment index. It reuses the
  // finite plane's words, dead once pass 1b has run, so the list costs no scratch.
  uint32_t* active_list;
  Totals* block_totals;    // [blocks + 1] (the last is zero, so the exclusive scan ends with the grand total)
  Totals* block_bases;     // [blocks + 1]: exclusive scan of block_totals
  void* scan_temp;
  size_t scan_temp_bytes;
};
inline Scratch carve(void* base, const Layout& l) {
  char* p = static_cast<char*>(base);
  return {reinterpret_cast<uint32_t*>(p + l.inside), reinterpret_cast<uint32_t*>(p + l.finite),
          reinterpret_cast<uint32_t*>(p + l.valid), reinterpret_cast<uint32_t*>(p + l.slab_bad),
          reinterpret_cast<uint32_t*>(p + l.seg_offsets), reinterpret_cast<uint16_t*>(p + l.seg_centres),
          reinterpret_cast<uint8_t*>(p + l.active_slots),
          reinterpret_cast<uint32_t*>(p + l.finite),  // active_list: the finite plane, reused
          reinterpret_cast<Totals*>(p + l.block_totals), reinterpret_cast<Totals*>(p + l.block_bases),
          p + l.scan_temp, l.bytes - l.scan_temp};
}

// ---- pass 1: classification -------------------------------------------------------------------------------

// A warp's walk over consecutive segments in C order: the segment's index and a pointer to its first point,
// stepped by additions. Splitting a segment index and multiplying it by the strides costs a GPU tens of
// instructions (64-bit multiplies, the index division), which per segment made pass 1 issue-bound; a walk splits
// one index per warp and then adds a step per segment, the strides again only where a row or slab ends.
template <typename T>
struct SegmentWalk {
  int64_t i, j;  // the row
  int left;      // segments of the row from this one on, >= 1 (segments per row < 2^31)
  uint32_t tail;  // lanes of a row's last segment that hold a point
  int64_t tail_off;  // element offset of that segment's last point
  const T* row;  // point (i, j, 0)
  const T* seg;  // the segment's first point

  FK_HD SegmentWalk(const Volume<T>& vol, const SegGrid& sg, int64_t g) {
    const SegIndex x = sg.decode(g);
    i = x.i;
    j = x.j;
    left = int(sg.segs - x.s);
    tail = sg.points(sg.segs - 1);
    tail_off = (sg.nz - 1 - 32 * (sg.segs - 1)) * vol.sz;
    row = vol.data + (i * vol.sx + j * vol.sy);
    seg = row + 32 * x.s * vol.sz;
  }
  // Lanes of the segment that hold a point of the row (sg.points).
  FK_HD uint32_t points() const { return left == 1 ? tail : ~0u; }
  // The lane's value (`lane_off` = lane * sz). A lane past the end of the row reads the row's last point instead,
  // so the load needs no branch; classify_value ignores it.
  FK_HD typename Volume<T>::R value(int64_t lane_off, bool in_row) const {
    return to_compute(seg[in_row ? lane_off : tail_off]);
  }
  // To the next segment in C order (which must exist).
  FK_HD void advance(const Volume<T>& vol, const SegGrid& sg) {
    if (--left > 0) {
      seg += 32 * vol.sz;
      return;
    }
    left = int(sg.segs);
    if (++j < sg.ny) {
      row += vol.sy;
    } else {
      j = 0;
      ++i;
      row = vol.data + i * vol.sx;
    }
    seg = row;
  }
};

// One lane's point: below the level, finite. Past the end of the row both are false.
template <typename R>
FK_HD void classify_value(R v, R level, bool in_row, bool& inside, bool& finite) {
  finite = in_row && is_finite(v);
  inside = in_row && v < level;
}

// ---- pass 2: classification words -> owned edges and cell cases -------------------------------------------

// Read-only view of the planes.
struct Planes {
  SegGrid grid;
  const uint32_t* inside;
  const uint32_t* finite;
  const uint32_t* valid;
  const uint32_t* slab_bad;

  FK_HD uint32_t in(int64_t i, int64_t j, int64_t s) const {
    return grid.has_row(i, j) && s >= 0 && s < grid.segs ? inside[grid.index(i, j, s)] : 0u;
  }
  FK_HD bool clean(int64_t i) const { return i < 0 || i >= grid.nx || slab_bad[i] == 0; }
  // Slabs i - 1 .. i + 1 hold no NaN / inf: every cell near slab i is valid.
  FK_HD bool clean_near(int64_t i) const { return clean(i - 1) && clean(i) && clean(i + 1); }
  FK_HD uint32_t fin(int64_t i, int64_t j, int64_t s) const {
    return grid.has_row(i, j) && s >= 0 && s < grid.segs ? finite[grid.index(i, j, s)] : 0u;
  }
  FK_HD bool has_cell_row(int64_t i, int64_t j, int64_t s) const {
    return i >= 0 && j >= 0 && i + 1 < grid.nx && j + 1 < grid.ny && s >= 0 && s < grid.segs;
  }
  // Pass 1b, next to slabs with a NaN / inf: bit l = cell (i, j, 32 s + l) exists and its 8 corners are finite.
  FK_HD uint32_t compute_valid_cells(int64_t i, int64_t j, int64_t s) const {
    const uint32_t f = fin(i, j, s) & fin(i + 1, j, s) & fin(i, j + 1, s) & fin(i + 1, j + 1, s);
    const uint32_t f_next =
        fin(i, j, s + 1) & fin(i + 1, j, s + 1) & fin(i, j + 1, s + 1) & fin(i + 1, j + 1, s + 1);
    return f & next_point(f, f_next) & grid.cell_points(s);
  }
  // Pass 1b writes the valid word of cell row (i, j) only where a slab it spans holds a NaN / inf.
  FK_HD bool needs_valid_word(int64_t i, int64_t j, int64_t s) const {
    return has_cell_row(i, j, s) && !(clean(i) && clean(i + 1));
  }
  // The same bits, read: a range mask where both slabs are clean, else pass 1b's word.
  FK_HD uint32_t valid_cells(int64_t i, int64_t j, int64_t s) const {
    if (!has_cell_row(i, j, s)) return 0u;
    return clean(i) && clean(i + 1) ? grid.cell_points(s) : valid[grid.index(i, j, s)];
  }
  // Cells of cell rows (i, j) and (i2, j2) that touch point k: cell k or cell k - 1.
  FK_HD uint32_t cells_touching(int64_t i, int64_t j, int64_t i2, int64_t j2, int64_t s) const {
    const uint32_t a = valid_cells(i, j, s) | valid_cells(i2, j2, s);
    const uint32_t a_prev = valid_cells(i, j, s - 1) | valid_cells(i2, j2, s - 1);
    return a | prev_point(a, a_prev);
  }
};

inline Planes planes_of(const SegGrid& sg, const Scratch& sc) {
  return {sg, sc.inside, sc.finite, sc.valid, sc.slab_bad};
}

// The 3 owned-edge words of segment (i, j, s): bit l of v[a] set when the edge from point 32 s + l one step
// along axis a crosses the level and borders at least one valid cell (which makes both its ends finite).
FK_HD void owned_edges(const Planes& p, int64_t i, int64_t j, int64_t s, uint32_t v[3]) {
  const SegGrid& g = p.grid;
  v[0] = v[1] = v[2] = 0u;
  if (!g.has_row(i, j) || s < 0 || s >= g.segs) return;
  const uint32_t here = p.in(i, j, s);
  const uint32_t cross_x = i + 1 < g.nx ? here ^ p.in(i + 1, j, s) : 0u;
  const uint32_t cross_y = j + 1 < g.ny ? here ^ p.in(i, j + 1, s) : 0u;
  const uint32_t cross_z = (here ^ next_point(here, p.in(i, j, s + 1))) & g.cell_points(s);
  if (p.clean_near(i)) {  // every edge borders a cell, when the grid has cells at all
    const bool cells = g.nx > 1 && g.ny > 1 && g.nz > 1;
    v[0] = cells ? cross_x : 0u;
    v[1] = cells ? cross_y : 0u;
    v[2] = cells ? cross_z : 0u;
    return;
  }
  v[0] = cross_x ? cross_x & p.cells_touching(i, j - 1, i, j, s) : 0u;
  v[1] = cross_y ? cross_y & p.cells_touching(i - 1, j, i, j, s) : 0u;
  v[2] = cross_z ? cross_z & (p.valid_cells(i - 1, j - 1, s) | p.valid_cells(i - 1, j, s) |
                              p.valid_cells(i, j - 1, s) | p.valid_cells(i, j, s))
                 : 0u;
}

// The corner words of segment (i, j, s)'s cells: corner c = dx | dy << 1 | dz << 2, bit l = that corner of cell
// 32 s + l is inside. Returns the cells with corners on both sides. Where that is 0 the segment owns no vertex
// either: each edge from its points is an edge of one of these cells (for the last point of a row, or a row
// with no neighbour, the missing corners read as outside, which only ever adds bits).
FK_HD uint32_t segment_corners(const Planes& p, int64_t i, int64_t j, int64_t s, uint32_t corner[8]) {
  uint32_t any = 0u, all = ~0u;
  for (int r = 0; r < 4; ++r) {
    const int64_t ii = i + (r & 1), jj = j + (r >> 1);
    corner[r] = p.in(ii, jj, s);
    corner[r + 4] = next_point(corner[r], p.in(ii, jj, s + 1));
    any |= corner[r] | corner[r + 4];
    all &= corner[r] & corner[r + 4];
  }
  return any & ~all;
}

// The cells of segment (i, j, s): corner words, the cells that emit (corners on both sides, all finite) and those
// of them with an ambiguous face or of case 4, decided from values.
struct SegmentCells {
  uint32_t corner[8];
  uint32_t emitting, decided;
};
FK_HD SegmentCells segment_cells(const Planes& p, int64_t i, int64_t j, int64_t s) {
  SegmentCells c;
  const uint32_t mixed = segment_corners(p, i, j, s, c.corner);
  c.emitting = mixed ? mixed & p.valid_cells(i, j, s) : 0u;
  c.decided = c.emitting ? c.emitting & decided_cells(c.corner) : 0u;
  return c;
}

// ---- per lane ----------------------------------------------------------------------------------------------

FK_HD unsigned lane_edges(const uint32_t v[3], int lane) {
  return (v[0] >> lane & 1u) | (v[1] >> lane & 1u) << 1 | (v[2] >> lane & 1u) << 2;
}
// The case byte of the lane's cell; 0 (no triangles) for a cell that does not emit.
FK_HD int lane_case(const SegmentCells& c, int lane) {
  if (!(c.emitting >> lane & 1u)) return 0;
  int config = 0;
  for (int corner = 0; corner < 8; ++corner) config |= int(c.corner[corner] >> lane & 1u) << corner;
  return config;
}
// The variant of the lane's cell (case `config`) when it is decided from values, else -1 (the case table). The
// values are read only then, face by face, and not kept: on the GPU the face kernel has no registers to spare for
// eight doubles, and the few lanes that place a centre vertex read them again.
template <typename T>
FK_HD int lane_variant(const Volume<T>& vol, const SegmentCells& c, int config, int64_t i, int64_t j, int64_t s,
                       int lane) {
  if (!(c.decided >> lane & 1u)) return -1;
  return cell_variant_at(vol, config, i, j, 32 * s + lane);
}

// Vertices owned by the segment's points below the lane: popcounts of the 3 edge words.
FK_HD int vertex_prefix(const uint32_t v[3], int lane) {
  const uint32_t below = lanes_below(lane);
  return popc(v[0] & below) + popc(v[1] & below) + popc(v[2] & below);
}
FK_HD int vertex_total(const uint32_t v[3]) { return popc(v[0]) + popc(v[1]) + popc(v[2]); }
// A point's vertex on `axis` comes after its vertices on lower axes.
FK_HD int axis_rank(unsigned edges, int axis) { return popc(edges & ((1u << axis) - 1u)); }

// Triangle counts are 0..12, four bits: bit_words[b] is the warp's ballot of bit b, so the triangles of the
// lanes below are a weighted sum of popcounts (no shuffle scan needed within a warp).
constexpr int kTriBits = 4;
FK_HD int tri_prefix(const uint32_t bit_words[kTriBits], int lane) {
  const uint32_t below = lanes_below(lane);
  return popc(bit_words[0] & below) + 2 * popc(bit_words[1] & below) + 4 * popc(bit_words[2] & below) +
         8 * popc(bit_words[3] & below);
}
FK_HD int tri_total(const uint32_t bit_words[kTriBits]) {
  return popc(bit_words[0]) + 2 * popc(bit_words[1]) + 4 * popc(bit_words[2]) + 8 * popc(bit_words[3]);
}
FK_HD int lowest_lane(uint32_t word) {
#if defined(__CUDA_ARCH__)
  return __ffs(word) - 1;
#else
  return __builtin_ctz(word);
#endif
}
FK_HD uint64_t pack_counts(int verts, int tris, int centres) {
  return uint64_t(verts) | uint64_t(tris) << kTriShift | uint64_t(centres) << kCentreShift;
}

// One step of the block scan (Hillis-Steele over 32 lanes): lane l adds the value lane l - d held before the
// step. After steps d = 1, 2, 4, 8, 16 each lane holds the inclusive sum of lanes 0..l.
FK_HD uint64_t scan_step(uint64_t own, uint64_t from_below, int lane, int d) {
  return lane >= d ? own + from_below : own;
}
// Slot of an active segment in its block's list: the active segments before it.
FK_HD int active_slot(uint32_t active_word, int lane) { return popc(active_word & lanes_below(lane)); }
FK_HD Totals block_total(uint64_t inclusive_last, uint32_t active_word) {
  return {int64_t(inclusive_last & 0xffffu), int64_t(inclusive_last >> kTriShift & 0xffffu), int64_t(popc(active_word)),
          int64_t(inclusive_last >> kCentreShift & 0xffffu)};
}
// What a segment stores of its exclusive offset within the block.
FK_HD void store_segment_offsets(const Scratch& sc, int64_t g, uint64_t exclusive) {
  sc.seg_offsets[g] = uint32_t(exclusive);
  sc.seg_centres[g] = uint16_t(exclusive >> kCentreShift);
}

// ---- pass 3: emit --------------------------------------------------------------------------------------------

// Compaction, after the scan: slot `slot` of scan block b, when the block has that many active segments, puts
// its segment at the block's base in the global list, so an emit warp finds its segment with one load. Blocks
// may run in any order (the CPU method runs them backwards, so a slot written past its block's share would
// clobber the next block's first entry and show).
FK_HD void compact_slot(const Scratch& sc, int64_t b, int slot) {
  if (slot < sc.block_totals[b].active)
    sc.active_list[sc.block_bases[b].active + slot] =
        uint32_t(b * kSegsPerBlock + sc.active_slots[b * kSegsPerBlock + slot]);
}

// First vertex / triangle of segment g, global.
FK_HD int64_t segment_vertex_base(const Scratch& sc, int64_t g) {
  return sc.block_bases[g / kSegsPerBlock].verts + int64_t(sc.seg_offsets[g] & 0xffffu);
}
FK_HD int64_t segment_tri_base(const Scratch& sc, int64_t g) {
  return sc.block_bases[g / kSegsPerBlock].tris + int64_t(sc.seg_offsets[g] >> kTriShift);
}
// First centre vertex of segment g, counted from the first centre vertex of the mesh.
FK_HD int64_t segment_centre_base(const Scratch& sc, int64_t g) {
  return sc.block_bases[g / kSegsPerBlock].centres + int64_t(sc.seg_centres[g]);
}

// Vertex ids, relative to the warp's first vertex (int32: the 4 rows around a cell row lie within one slab and a
// row of each other), of the points of the 4 rows around the cell row at this segment and the first point of
// the next segment, with their owned-edge bits: a triangle corner is one table read and a popcount.
struct EdgeIdTable {
  int32_t first[kTableRows][kTablePoints];
  uint8_t edges[kTableRows][kTablePoints];
};

// The table is built in two steps. Source q (0..7): the owned-edge words of row r = q & 3 around the cell row
// at segment s + (q >> 2), and that segment's first vertex relative to the warp's (`vbase`). On the GPU lane q
// computes source q and the others read it by shuffles, so each warp evaluates 8 rows, not 8 per lane.
struct TableSource {
  uint32_t v[3];
  int32_t rel;
};
FK_HD TableSource edge_table_source(const Planes& p, const Scratch& sc, int64_t i, int64_t j, int64_t s,
                                    int64_t vbase, int q) {
  TableSource src{{0u, 0u, 0u}, 0};
  const int64_t ii = i + (q & 1), jj = j + (q >> 1 & 1), ss = s + (q >> 2);
  // The last segment's last cell is k = nz - 2 <= 32 s + 30: its point 32 (next segment) is never asked.
  if (ss >= p.grid.segs) return src;
  owned_edges(p, ii, jj, ss, src.v);
  src.rel = int32_t(segment_vertex_base(sc, p.grid.index(ii, jj, ss)) - vbase);
  return src;
}
// Entry [r][lane] from row r's source at this segment; on lane 0 also [r][32] from its source at the next one.
FK_HD void edge_table_entry(EdgeIdTable& t, int r, const TableSource& here, const TableSource& next, int lane) {
  t.first[r][lane] = here.rel + vertex_prefix(here.v, lane);
  t.edges[r][lane] = uint8_t(lane_edges(here.v, lane));
  if (lane == 0) {
    t.first[r][kLanes] = next.rel;
    t.edges[r][kLanes] = uint8_t(lane_edges(next.v, 0));
  }
}

// Pointers to the case tables: shared-memory copies on the device (lanes of a warp read different cases, which
// __constant__ memory would serialise), the static arrays on the host.
struct CaseTables {
  const int8_t* tri_count;    // [256]
  const int8_t* tri_edges;    // [256][3 * FK_MAX_TRIANGLES]
  const int8_t* edge_corner;  // [12]
  const int8_t* edge_axis;    // [12]
};

// Vertex id (relative to the warp's first) of cube edge e of the lane's cell.
FK_HD int32_t edge_id(const EdgeIdTable& t, const CaseTables& ct, int e, int lane) {
  const int owner = ct.edge_corner[e], axis = ct.edge_axis[e];
  const int r = owner & 3, point = lane + (owner >> 2);
  return t.first[r][point] + axis_rank(t.edges[r][point], axis);
}

// ---- centre vertices ------------------------------------------------------------------------------------------

// Id of the lane's centre vertex, `centres` the warp's ballot of lanes whose cell has one.
FK_HD int64_t lane_centre_id(const EmitTarget& out, const Scratch& sc, int64_t g, uint32_t centres, int lane) {
  return out.centre_first + segment_centre_base(sc, g) + popc(centres & lanes_below(lane));
}
// Writes the lane's centre vertex (a kernel of its own on the GPU: inlined into the face kernel, its arithmetic
// made that kernel spill).
template <typename T>
FK_HD void emit_lane_centre(const Volume<T>& vol, const EmitTarget& out, int64_t i, int64_t j, int64_t s, int lane,
                            int64_t id) {
  typename Volume<T>::R vals[8];
  vol.cell_values(i, j, 32 * s + lane, vals);
  store_centre(out, vol.level, id, i, j, 32 * s + lane, vals);
}

// ---- vertices: values along z from the neighbouring lanes ----------------------------------------------------

// A row's values at the lane's point k and at k - 1, k + 1 (each meaningful only where that point is in the row).
// Lane l holds point 32 s + l, so k +- 1 is what lane l +- 1 loaded: on the GPU a shuffle, not a second load.
template <typename R>
struct ZRun {
  R lo, c, hi;
};

// Loads go through element offsets from vol.data, computed once per lane (off = the lane's point (i, j, k)):
// a 64-bit i * sx + j * sy + k * sz per load was most of the vertex kernel's instructions.
FK_HD int64_t point_offset(int64_t sx, int64_t sy, int64_t sz, int64_t i, int64_t j, int64_t k) {
  return i * sx + j * sy + k * sz;
}
// The lane's own value of a row, at element offset `at`; 0 past the end of the row (never used: the neighbours'
// has_lo / has_hi and the edge bits exclude it).
template <typename T>
FK_HD typename Volume<T>::R row_value(const Volume<T>& vol, int64_t at, int64_t k) {
  using R = typename Volume<T>::R;
  return k < vol.nz ? to_compute(vol.data[at]) : R(0);
}
// Does lane + d exist? __shfl_{up,down}_sync hand a lane with no such source its own value instead.
FK_HD bool z_in_warp(int lane, int d) { return lane + d >= 0 && lane + d < kLanes; }
// The value at k + d of the row whose point k is at offset `at`: `from_lane` (the shuffle of lane + d's row_value)
// inside the warp, else a load from the neighbouring segment (the first / last lanes only).
template <typename T>
FK_HD typename Volume<T>::R z_neighbour(const Volume<T>& vol, int64_t at, int64_t k, int d,
                                        typename Volume<T>::R from_lane, int lane) {
  using R = typename Volume<T>::R;
  if (z_in_warp(lane, d)) return from_lane;
  return k + d >= 0 && k + d < vol.nz ? to_compute(vol.data[at + d * vol.sz]) : R(0);
}

// The lane's vertex on `axis`, when it owns one (its point at element offset `off`): id vbase + its prefix. p is
// the run of row (i, j) at the lane's point; q the run at the edge's other end: row (i + 1, j) or (i, j + 1), or
// for the z axis row (i, j) one point up. The arithmetic is store_vertex's and gradient_of's, as in every driver;
// the values come from the runs (the two ends, and along z their neighbours) and, for the x / y gradients, from
// loads next to the two ends, of which the edge's own axis needs only the two beyond them: 6 loads for an x / y
// edge, 8 for a z edge.
template <typename T>
FK_HD void emit_lane_vertex(const Volume<T>& vol, const EmitTarget& out, const uint32_t v[3], int64_t vbase,
                            int64_t i, int64_t j, int64_t s, int64_t off, int lane, int axis,
                            const ZRun<typename Volume<T>::R>& p, const ZRun<typename Volume<T>::R>& q) {
  using R = typename Volume<T>::R;
  const unsigned edges = lane_edges(v, lane);
  if (!(edges >> axis & 1u)) return;
  const int64_t k = 32 * s + lane, id = vbase + vertex_prefix(v, lane) + axis_rank(edges, axis);
  const T* here = vol.data + off;
  const T* there = here + (axis == 0 ? vol.sx : axis == 1 ? vol.sy : vol.sz);
  // The z gradients first: two values stay live through the interpolation rather than the runs' four.
  const R gz0 = gradient_of(p.c, p.lo, p.hi, k > 0, k + 1 < vol.nz);
  const R gz1 = gradient_of(q.c, q.lo, q.hi, k + (axis == 2) > 0, k + (axis == 2) + 1 < vol.nz);
  store_vertex(out, vol.level, id, i, j, k, axis, p.c, q.c, [&](int d, int end) -> R {
    const ZRun<R>& run = end ? q : p;
    if (d == 2) return end ? gz1 : gz0;
    const int64_t t = (d == 0 ? i : j) + (end && d == axis), n = d == 0 ? vol.nx : vol.ny;
    const int64_t stride = d == 0 ? vol.sx : vol.sy;
    const T* at = end ? there : here;
    const bool has_lo = t > 0, has_hi = t + 1 < n;
    const R lo = end && d == axis ? p.c : has_lo ? to_compute(at[-stride]) : R(0);
    const R hi = !end && d == axis ? q.c : has_hi ? to_compute(at[stride]) : R(0);
    return gradient_of(run.c, lo, hi, has_lo, has_hi);
  });
}

// The lane's triangles: ntri of case `config` (variant < 0) or of `variant` (from __constant__ memory on the
// device: few lanes take that path), the first numbered first_tri; slot FK_CENTRE_SLOT is vertex `centre`.
FK_HD void emit_lane_faces(const EdgeIdTable& t, const CaseTables& ct, const EmitTarget& out, int config, int variant,
                           int ntri, int64_t vbase, int64_t first_tri, int64_t centre, int lane) {
  for (int n = 0; n < ntri; ++n) {
    int64_t ids[3];
    for (int c = 0; c < 3; ++c) {
      const int e = variant >= 0 ? variant_tri_edge(variant, 3 * n + c)
                                 : ct.tri_edges[config * 3 * FK_MAX_TRIANGLES + 3 * n + c];
      ids[c] = e == FK_CENTRE_SLOT ? centre : vbase + edge_id(t, ct, e, lane);
    }
    int64_t* f = out.faces + 3 * (first_tri + n);
    f[0] = ids[0];
    f[1] = out.flip ? ids[2] : ids[1];
    f[2] = out.flip ? ids[1] : ids[2];
  }
}

}  // namespace brick
}  // namespace fk
