// CPU marching cubes on bit planes: the grid is classified once into two bits per point (inside = value < level,
// finite), 64 points of a row per word, and every later decision — which edges carry a vertex, which cells emit,
// vertex ids — is word-wide bit logic on those planes. This is what makes the CPU path Flying-Edges class: the
// float grid is read once, by a compare loop the compiler turns into SIMD; the count pass touches it only in cells
// with an ambiguous face or of case 4, whose values decide them; the emit pass reads values only at the crossed
// edges it interpolates and in those cells.
//
// The mesh is the one the row walk in mc_core.h and the CUDA driver's bricks give: the same vertex rule (an edge crossing
// the level that borders at least one all-finite cell), the same vertex order (grid point in C order, then axis)
// and triangle order (cell in C order, then table order), and positions from the same emit_vertex.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "mc_core.h"

namespace fk {

// The word-level helpers below run once per 64 points in the count and emit loops; GCC left some of them out of
// line (a call per word, and no constant folding of the caller's row pointers).
#define FK_WORD_INLINE __attribute__((always_inline)) inline

inline int64_t words_per_row(int64_t nz) { return (nz + 63) / 64; }
// Each classified row is followed by one zero word, so reading "the next word" never needs a bounds check.
inline int64_t row_stride(int64_t nz) { return words_per_row(nz) + 1; }

inline int popcount64(uint64_t x) { return __builtin_popcountll(x); }
inline int lowest_bit(uint64_t x) { return __builtin_ctzll(x); }
inline int highest_bit(uint64_t x) { return 63 - __builtin_clzll(x); }

// Bits below `n` (0 <= n <= 64).
constexpr uint64_t low_bits(int64_t n) { return n >= 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1; }

// Scratch (uint64 words, caller-allocated), shared by the count pass that writes it and the emit pass that
// reads it. A row's finite words are written only when the row holds a NaN / inf: on a clean grid those pages
// are never touched, so they cost neither time nor memory.
struct BitScratch {
  int64_t rows, stride;
  uint64_t* inside;        // [rows, stride] bit k: value < level (false for NaN)
  uint64_t* finite;        // [rows, stride] bit k: value finite; valid only where row_finite is 0
  uint64_t* zero_row;      // [stride] what rows outside the grid read as
  uint64_t* ones_row;      // [stride] the finite words of an all-finite row
  uint64_t* slice_finite;  // [nx] nonzero when the whole x slice is finite (the common case)
  uint8_t* row_finite;     // [rows] nonzero when the row is finite
  uint8_t* row_sides;      // [rows] kAllOutside, kAllInside or kBothSides: which sides of the level the row's
                           // inside bits show (NaN counts as outside, as in the bits)

  static int64_t words(int64_t nx, int64_t ny, int64_t nz) {
    const int64_t rows = nx * ny;
    return (2 * rows + 2) * row_stride(nz) + nx + 2 * ((rows + 7) / 8);
  }
  BitScratch(uint64_t* base, int64_t nx, int64_t ny, int64_t nz) : rows(nx * ny), stride(row_stride(nz)) {
    inside = base;
    finite = inside + rows * stride;
    zero_row = finite + rows * stride;
    ones_row = zero_row + stride;
    slice_finite = ones_row + stride;
    row_finite = reinterpret_cast<uint8_t*>(slice_finite + nx);
    row_sides = row_finite + 8 * ((rows + 7) / 8);
  }
};
enum RowSides : uint8_t { kAllOutside = 0, kAllInside = 1, kBothSides = 2 };

// Sides of one classified row (bits past nz are 0).
inline uint8_t row_sides_of(const uint64_t* inside, int64_t nz) {
  bool none = true, all = true;
  for (int64_t w = 0; 64 * w < nz; ++w) {
    none = none && inside[w] == 0;
    all = all && inside[w] == low_bits(nz - 64 * w);
  }
  return none ? kAllOutside : all ? kAllInside : kBothSides;
}
inline int64_t bit_scratch_words(int64_t nx, int64_t ny, int64_t nz) { return BitScratch::words(nx, ny, nz); }

#if defined(__SSE2__)
// 16 contiguous floats: bit b of the result = (p[b] < level); `bad` collects lanes where v - v != 0 (NaN, inf).
// Packing the four compare masks to bytes costs one movemask per 16 values instead of one per 4.
inline uint32_t classify16(const float* p, __m128 level, __m128& bad) {
  const __m128 v0 = _mm_loadu_ps(p), v1 = _mm_loadu_ps(p + 4), v2 = _mm_loadu_ps(p + 8), v3 = _mm_loadu_ps(p + 12);
  const __m128i lo = _mm_packs_epi32(_mm_castps_si128(_mm_cmplt_ps(v0, level)), _mm_castps_si128(_mm_cmplt_ps(v1, level)));
  const __m128i hi = _mm_packs_epi32(_mm_castps_si128(_mm_cmplt_ps(v2, level)), _mm_castps_si128(_mm_cmplt_ps(v3, level)));
  const __m128 zero = _mm_setzero_ps();
  bad = _mm_or_ps(bad, _mm_or_ps(_mm_or_ps(_mm_cmpneq_ps(_mm_sub_ps(v0, v0), zero), _mm_cmpneq_ps(_mm_sub_ps(v1, v1), zero)),
                                 _mm_or_ps(_mm_cmpneq_ps(_mm_sub_ps(v2, v2), zero), _mm_cmpneq_ps(_mm_sub_ps(v3, v3), zero))));
  return uint32_t(_mm_movemask_epi8(_mm_packs_epi16(lo, hi)));
}
#endif

// Classify one row (i, j) into its inside words (and, only if it is not all finite, its finite words); returns
// whether the row is all finite. Bits past nz stay 0, which the edge and cell logic below relies on.
template <typename T>
bool classify_row(const Volume<T>& vol, int64_t i, int64_t j, uint64_t* inside, uint64_t* finite) {
  using R = typename Volume<T>::R;
  const T* row = vol.data + i * vol.sx + j * vol.sy;
  const int64_t words = words_per_row(vol.nz);
  bool all_finite = true;
  for (int64_t w = 0; w < words; ++w) {
    const int64_t k0 = 64 * w, n = vol.nz - k0 < 64 ? vol.nz - k0 : 64;
    uint64_t in = 0;
    int64_t b = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same<T, float>::value) {
      if (vol.sz == 1) {
        const __m128 level = _mm_set1_ps(vol.level);
        __m128 bad = _mm_setzero_ps();
        for (; b + 16 <= n; b += 16) in |= uint64_t(classify16(row + k0 + b, level, bad)) << b;
        all_finite = all_finite && !_mm_movemask_ps(bad);
      }
    }
#endif
    for (; b < n; ++b) {
      R v = to_compute(row[(k0 + b) * vol.sz]);
      in |= uint64_t(v < vol.level) << b;
      all_finite = all_finite && is_finite(v);
    }
    inside[w] = in;
  }
  if (all_finite) return true;
  for (int64_t w = 0; w < words; ++w) {  // a row with a NaN or inf: rare, so a plain second pass
    uint64_t fin = 0;
    for (int64_t b = 0; b < 64 && 64 * w + b < vol.nz; ++b)
      fin |= uint64_t(is_finite(to_compute(row[(64 * w + b) * vol.sz]))) << b;
    finite[w] = fin;
  }
  return false;
}

// Read-only view of the classified planes, and the bit logic that turns them into vertices and cells.
// Rows outside the grid read as the zero row, so the grid's faces need no special cases in the word loops.
struct BitPlanes {
  int64_t nx, ny, nz, words, stride;
  const uint64_t* inside;
  const uint64_t* finite;
  const uint64_t* zero_row;
  const uint64_t* ones_row;
  const uint64_t* slice_finite;
  const uint8_t* row_finite;
  const uint8_t* row_sides;
  uint64_t last_cells;  // bits of the last word that are cells (k < nz - 1)
  bool has_cells;       // nx, ny, nz >= 2

  BitPlanes(const BitScratch& s, int64_t nx_, int64_t ny_, int64_t nz_)
      : nx(nx_), ny(ny_), nz(nz_), words(words_per_row(nz_)), stride(row_stride(nz_)) {
    inside = s.inside;
    finite = s.finite;
    zero_row = s.zero_row;
    ones_row = s.ones_row;
    slice_finite = s.slice_finite;
    row_finite = s.row_finite;
    row_sides = s.row_sides;
    last_cells = low_bits(nz - 1 - 64 * (words - 1));
    has_cells = nx > 1 && ny > 1 && nz > 1;
  }

  FK_WORD_INLINE const uint64_t* in_row(int64_t i, int64_t j) const {
    return (i >= 0 && j >= 0 && i < nx && j < ny) ? inside + (i * ny + j) * stride : zero_row;
  }
  const uint64_t* fin_row(int64_t i, int64_t j) const {
    if (i < 0 || j < 0 || i >= nx || j >= ny) return zero_row;
    return row_finite[i * ny + j] ? ones_row : finite + (i * ny + j) * stride;
  }
  // Bit k set: point k + 1 of the word stream, i.e. `x` shifted down one point across word boundaries.
  static uint64_t next_point(uint64_t x, uint64_t x_next_word) { return (x >> 1) | (x_next_word << 63); }
  static uint64_t prev_point(uint64_t x, uint64_t x_prev_word) { return (x << 1) | (x_prev_word >> 63); }
  // Points of word w with a cell at or after them along k (k < nz - 1).
  uint64_t cell_points(int64_t w) const { return w + 1 < words ? ~uint64_t(0) : last_cells; }

  // The four rows around cell row (i, j) lie on one side of the level: then no edge between or along them
  // crosses it, so row (i, j) owns no vertex and its cells emit nothing. Most rows of a compact shape's grid are
  // skipped in one test, instead of scanning their words.
  bool quiet_cell_row(int64_t i, int64_t j) const {
    if (i + 1 >= nx || j + 1 >= ny) return false;
    const uint8_t* r = row_sides + i * ny + j;
    return r[0] != kBothSides && r[1] == r[0] && r[ny] == r[0] && r[ny + 1] == r[0];
  }

  // Slices i - 1 .. i + 1 (those in the grid) hold no NaN / inf: then every cell near slice i is valid.
  bool finite_near(int64_t i) const {
    return slice_finite[i] && (i == 0 || slice_finite[i - 1]) && (i + 1 == nx || slice_finite[i + 1]);
  }

  // Bit k: cell (i, j, k) exists and all 8 of its corners are finite.
  FK_WORD_INLINE uint64_t valid_cells(int64_t i, int64_t j, int64_t w) const {
    if (i < 0 || j < 0 || w < 0 || i + 1 >= nx || j + 1 >= ny || w >= words) return 0;
    if (slice_finite[i] && slice_finite[i + 1]) return cell_points(w);
    const uint64_t *a = fin_row(i, j), *b = fin_row(i + 1, j), *c = fin_row(i, j + 1), *d = fin_row(i + 1, j + 1);
    uint64_t f = a[w] & b[w] & c[w] & d[w], f_next = a[w + 1] & b[w + 1] & c[w + 1] & d[w + 1];
    return f & next_point(f, f_next);  // bits past nz are 0, so the last point of a row is no cell
  }
  // Cells of the pair (i, j) / (i2, j2) that touch point k: cell k or cell k - 1.
  uint64_t cells_touching_point(int64_t i, int64_t j, int64_t i2, int64_t j2, int64_t w) const {
    uint64_t a = valid_cells(i, j, w) | valid_cells(i2, j2, w);
    uint64_t a_prev = valid_cells(i, j, w - 1) | valid_cells(i2, j2, w - 1);
    return a | prev_point(a, a_prev);
  }

  // Row (i, j) and its x / y neighbour rows, looked up once per row rather than once per word.
  struct PointRows {
    int64_t i, j;
    const uint64_t *here, *next_x, *next_y;
    bool finite;  // finite_near(i)
  };
  FK_WORD_INLINE PointRows point_rows(int64_t i, int64_t j) const {
    return {i, j, in_row(i, j), in_row(i + 1, j), in_row(i, j + 1), finite_near(i)};
  }

  // The three vertex words of a row: bit k of axis a set when the edge from point k along a crosses the level
  // and borders at least one valid cell (which makes both its ends finite, so the inside bits are exact there).
  FK_WORD_INLINE void vertex_words(const PointRows& p, int64_t w, uint64_t v[3]) const {
    const uint64_t here = p.here[w];
    const uint64_t cross_x = p.i + 1 < nx ? here ^ p.next_x[w] : 0;
    const uint64_t cross_y = p.j + 1 < ny ? here ^ p.next_y[w] : 0;
    const uint64_t cross_z = here ^ next_point(here, p.here[w + 1]);
    if (p.finite) {  // every edge in the grid borders a cell, when there are cells at all
      v[0] = has_cells ? cross_x : 0;
      v[1] = has_cells ? cross_y : 0;
      v[2] = has_cells ? cross_z & cell_points(w) : 0;
      return;
    }
    const int64_t i = p.i, j = p.j;
    v[0] = cross_x ? cross_x & cells_touching_point(i, j - 1, i, j, w) : 0;
    v[1] = cross_y ? cross_y & cells_touching_point(i - 1, j, i, j, w) : 0;
    v[2] = cross_z ? cross_z & (valid_cells(i - 1, j - 1, w) | valid_cells(i - 1, j, w) | valid_cells(i, j - 1, w) |
                                valid_cells(i, j, w))
                   : 0;
  }

  // The four rows around cell row (i, j) (r = dx | dy << 1).
  struct CellRows {
    int64_t i, j;
    const uint64_t* rows[4];
  };
  FK_WORD_INLINE CellRows cell_rows(int64_t i, int64_t j) const {
    return {i, j, {in_row(i, j), in_row(i + 1, j), in_row(i, j + 1), in_row(i + 1, j + 1)}};
  }

  // Word w of a cell row: the 8 corner words (corner c = dx | dy << 1 | dz << 2, bit k = that corner of cell
  // k is inside) and the points whose cell has corners on both sides. Where that is 0, no edge from the row's
  // points crosses the level either (each such edge joins two corners of the cell), so a word of a row far
  // from the surface costs 8 loads.
  FK_WORD_INLINE static uint64_t mixed_cells(const CellRows& c, int64_t w, uint64_t corner[8]) {
    uint64_t any = 0, all = ~uint64_t(0);
    for (int r = 0; r < 4; ++r) {
      corner[r] = c.rows[r][w];
      corner[r + 4] = next_point(corner[r], c.rows[r][w + 1]);
      any |= corner[r] | corner[r + 4];
      all &= corner[r] & corner[r + 4];
    }
    return any & ~all;
  }
  // The cells that emit triangles: mixed and valid (a range mask when the slices are finite).
  FK_WORD_INLINE uint64_t emitting_cells(const CellRows& c, int64_t w, uint64_t mixed) const {
    return mixed ? mixed & valid_cells(c.i, c.j, w) : 0;
  }
};

inline int cell_config_bits(const uint64_t corner[8], int bit) {
  int config = 0;
  for (int c = 0; c < 8; ++c) config |= int(corner[c] >> bit & 1u) << c;
  return config;
}

// Triangles of a case decided by its corners' signs alone, or -1 where the values decide (an ambiguous face, case
// 4): the table load the count already made per emitting cell tells the two apart. The word-parallel test
// (decided_cells, which the bricks use) costs ~100 word operations per word holding an emitting cell, which holds
// only a few: more operations than this, and no faster measured (marching_cubes.md).
struct PlainTriCount {
  int8_t n[256];
};
constexpr PlainTriCount make_plain_tri_count() {
  PlainTriCount t{};
  for (int config = 0; config < 256; ++config)
    t.n[config] = tables::kDecidedCase[config] ? int8_t(-1) : tables::kTriCount[config];
  return t;
}
static constexpr PlainTriCount kPlainTriCountTable = make_plain_tri_count();
static constexpr const int8_t* kPlainTriCount = kPlainTriCountTable.n;

// Count pass for one row: vertices it owns, triangles its cells emit, the span of points with a vertex, and the
// centre vertices. Values are read only in cells with an ambiguous face or of case 4.
template <typename T>
RowCounts count_row_bits(const Volume<T>& vol, const BitPlanes& bp, int64_t i, int64_t j) {
  using R = typename Volume<T>::R;
  RowCounts c{0, 0, bp.nz, -1, 0};
  if (bp.quiet_cell_row(i, j)) return c;
  const BitPlanes::PointRows points = bp.point_rows(i, j);
  const BitPlanes::CellRows cells = bp.cell_rows(i, j);
  for (int64_t w = 0; w < bp.words; ++w) {
    uint64_t v[3], corner[8];
    const uint64_t mixed = BitPlanes::mixed_cells(cells, w, corner);
    if (!mixed) continue;
    bp.vertex_words(points, w, v);
    uint64_t any = v[0] | v[1] | v[2];
    if (any) {
      c.verts += popcount64(v[0]) + popcount64(v[1]) + popcount64(v[2]);
      if (c.kmax < 0) c.kmin = 64 * w + lowest_bit(any);
      c.kmax = 64 * w + highest_bit(any);
    }
    for (uint64_t emit = bp.emitting_cells(cells, w, mixed); emit; emit &= emit - 1) {
      const int bit = lowest_bit(emit), config = cell_config_bits(corner, bit), plain = kPlainTriCount[config];
      if (plain >= 0) {
        c.tris += plain;
        continue;
      }
      R v[8];
      double d[8];
      vol.cell_values(i, j, 64 * w + bit, v);
      level_offsets(v, vol.level, d);
      const int variant = decided_variant(vol, config, d);
      c.tris += variant_tri_count(variant);
      c.centres += variant_centre(variant);
    }
  }
  return c;
}

// Vertex numbering of one row, for the triangles of the cell rows next to it: the id of each vertex the row
// owns, relative to the row's first, stored at [3 * k + axis]. One store per vertex to build; one load per
// triangle corner to read (a triangle corner is the hot loop of the emit pass: ~2 triangles per emitting cell).
struct RowVertexIds {
  int64_t row = -1;              // the row numbered, -1 for none yet
  int64_t first = 0;             // id of its first vertex
  std::vector<uint32_t> local;   // [64 * words][3]; set only on edges that carry a vertex

  // Only the words [w_begin, w_end) of the row's vertex span are numbered: ids are never asked elsewhere.
  void build(const BitPlanes& bp, int64_t i, int64_t j, int64_t row_first, int64_t w_begin, int64_t w_end) {
    row = i * bp.ny + j;
    first = row_first;
    local.resize(3 * 64 * bp.words);
    const BitPlanes::PointRows points = bp.point_rows(i, j);
    uint32_t n = 0;
    for (int64_t w = w_begin; w < w_end; ++w) {
      uint64_t v[3];
      bp.vertex_words(points, w, v);
      for (uint64_t any = v[0] | v[1] | v[2]; any; any &= any - 1) {
        const int bit = lowest_bit(any);
        uint32_t* at = &local[3 * (64 * w + bit)];
        for (int axis = 0; axis < 3; ++axis) {  // branch-free: entries of uncrossed edges are never read
          at[axis] = n;
          n += uint32_t(v[axis] >> bit & 1u);
        }
      }
    }
  }
};

// Triangle corners for the CPU emit loop, one byte each: the row that owns the corner's edge (r = dx | dy << 1,
// bits 0-1) and the edge's slot 3 * dz + axis in that row's numbering at the cell's k (bits 2-4). One table load
// per corner instead of three (edge, its corner, its axis).
struct TriCorners {
  uint8_t slot[256][3 * FK_MAX_TRIANGLES];
};
constexpr TriCorners make_tri_corners() {
  TriCorners t{};
  for (int config = 0; config < 256; ++config) {
    for (int n = 0; n < 3 * FK_MAX_TRIANGLES; ++n) {
      const int e = tables::kTriEdges[config][n];
      if (e < 0) continue;
      const int owner = tables::kEdgeCorner[e];
      t.slot[config][n] = uint8_t((owner & 3) | (3 * (owner >> 2) + tables::kEdgeAxis[e]) << 2);
    }
  }
  return t;
}
static constexpr TriCorners kTriCorners = make_tri_corners();

// The same for the variants of the decided cases; kCentreCorner marks the cell's centre vertex.
constexpr uint8_t kCentreCorner = 0xff;
struct VariantCorners {
  uint8_t slot[FK_VARIANTS][3 * FK_MAX_VARIANT_TRIANGLES];
};
constexpr VariantCorners make_variant_corners() {
  VariantCorners t{};
  for (int v = 0; v < FK_VARIANTS; ++v) {
    for (int n = 0; n < 3 * FK_MAX_VARIANT_TRIANGLES; ++n) {
      const int e = tables::kVariantTriEdges[v][n];
      if (e < 0) continue;
      if (e == FK_CENTRE_SLOT) {
        t.slot[v][n] = kCentreCorner;
        continue;
      }
      const int owner = tables::kEdgeCorner[e];
      t.slot[v][n] = uint8_t((owner & 3) | (3 * (owner >> 2) + tables::kEdgeAxis[e]) << 2);
    }
  }
  return t;
}
static constexpr VariantCorners kVariantCorners = make_variant_corners();

// Words [begin, end) holding the points of a row that own a vertex, from the count pass's span (empty if none).
inline void span_words(const EmitTarget& out, int64_t row, int64_t& begin, int64_t& end) {
  const int64_t kmin = out.spans[2 * row], kmax = out.spans[2 * row + 1];
  begin = kmax < 0 ? 0 : kmin >> 6;
  end = kmax < 0 ? 0 : (kmax >> 6) + 1;
}

// The emit pass reads grid values only at crossed edges, long after the count pass streamed the grid through the
// cache: a few scattered lines per row, too few for the hardware prefetcher to pick up, each a DRAM round trip.
// So the lines row (i, j) will read (its own and row (i + 1, j)'s over its vertex span; row (i, j + 1) is the
// next row's own) are asked for a couple of rows ahead. Prefetching only the lines that hold a vertex was slower:
// the vertex words cost more to compute twice than the extra lines cost to fetch (figures: marching_cubes.md).
// Always inlined: GCC deems a function whose only statements are prefetches free of side effects and deletes
// the call (GCC 12, -O1 and above).
constexpr int64_t kPrefetchRows = 2;
template <typename T>
FK_WORD_INLINE void prefetch_vertex_values(const Volume<T>& vol, const BitPlanes& bp, const EmitTarget& out, int64_t i,
                                           int64_t j) {
  if (j >= bp.ny || vol.sz != 1) return;
  const int64_t row = i * bp.ny + j, kmin = out.spans[2 * row], kmax = out.spans[2 * row + 1];
  if (kmax < 0) return;
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));  // points per cache line
  const T* here = vol.data + i * vol.sx + j * vol.sy;
  const T* next_x = i + 1 < bp.nx ? here + vol.sx : here;
  for (int64_t k = kmin & ~(kLine - 1); k <= kmax + 1 && k < bp.nz; k += kLine) {
    __builtin_prefetch(here + k);
    __builtin_prefetch(next_x + k);
  }
}

// The vertices of one word of a row on one axis, ids from popcounts: vertex order stays (point, then axis), but
// each loop runs over one axis's bits, which branch predictors follow; walking points and testing three axes
// per point mispredicted about once per vertex. A constant axis also folds emit_vertex's neighbour offsets.
template <int Axis, typename T>
FK_WORD_INLINE void emit_axis_vertices(const Volume<T>& vol, const EmitTarget& out, const uint64_t v[3],
                                       int64_t word_first, int64_t i, int64_t j, int64_t k0) {
  for (uint64_t bits = v[Axis]; bits; bits &= bits - 1) {
    const int bit = lowest_bit(bits);
    const uint64_t below = (uint64_t(1) << bit) - 1;
    int64_t id = word_first + popcount64(v[0] & below) + popcount64(v[1] & below) + popcount64(v[2] & below);
    if (Axis > 0) id += int64_t(v[0] >> bit & 1u);
    if (Axis > 1) id += int64_t(v[1] >> bit & 1u);
    emit_vertex(vol, out, id, i, j, k0 + bit, Axis);
  }
}

// Emit pass for one row: its vertices, then the triangles of its cell row, each vertex id read from the
// numbering of the row (of four around the cell row) that owns the edge. The count pass's spans bound the
// words visited: a row far from the surface costs a few loads. `ids` is the caller's reusable buffer.
template <typename T>
void emit_row_bits(const Volume<T>& vol, const BitPlanes& bp, const EmitTarget& out, int64_t i, int64_t j,
                   RowVertexIds ids[4]) {
  const int64_t row = i * bp.ny + j;
  using R = typename Volume<T>::R;
  int64_t v_id = out.offsets[3 * row], w_begin, w_end;
  span_words(out, row, w_begin, w_end);
  prefetch_vertex_values(vol, bp, out, i, j + kPrefetchRows);
  const BitPlanes::PointRows points = bp.point_rows(i, j);
  for (int64_t w = w_begin; w < w_end; ++w) {
    uint64_t v[3];
    bp.vertex_words(points, w, v);
    emit_axis_vertices<0>(vol, out, v, v_id, i, j, 64 * w);
    emit_axis_vertices<1>(vol, out, v, v_id, i, j, 64 * w);
    emit_axis_vertices<2>(vol, out, v, v_id, i, j, 64 * w);
    v_id += popcount64(v[0]) + popcount64(v[1]) + popcount64(v[2]);
  }
  if (i + 1 >= bp.nx || j + 1 >= bp.ny || bp.quiet_cell_row(i, j)) return;
  // A cell that emits has a crossed edge owned by one of the four rows at its k or k + 1: only cells from one
  // before the first such point to the last can emit.
  int64_t rows[4], kfirst = bp.nz, klast = -1;
  for (int r = 0; r < 4; ++r) {
    rows[r] = (i + (r & 1)) * bp.ny + j + (r >> 1);
    if (out.spans[2 * rows[r] + 1] < 0) continue;
    kfirst = std::min(kfirst, out.spans[2 * rows[r]]);
    klast = std::max(klast, out.spans[2 * rows[r] + 1]);
  }
  if (klast < 0) return;
  int64_t t = out.offsets[3 * row + 1], centre = out.centre_first + out.offsets[3 * row + 2];
  bool numbered = false;
  const uint32_t* local[4] = {};  // ids[r]'s numbering, once built
  int64_t first[4] = {};
  const BitPlanes::CellRows cell_rows = bp.cell_rows(i, j);
  for (int64_t w = std::max<int64_t>(kfirst - 1, 0) >> 6; w <= klast >> 6; ++w) {
    uint64_t corner[8];
    uint64_t cells = bp.emitting_cells(cell_rows, w, BitPlanes::mixed_cells(cell_rows, w, corner));
    if (cells && !numbered) {  // the four rows' numbering is built once per cell row, and only if it emits
      if (ids[2].row == row) {  // the previous cell row (i, j - 1) numbered rows (i, j) and (i + 1, j)
        std::swap(ids[0], ids[2]);
        std::swap(ids[1], ids[3]);
      }
      for (int r = 0; r < 4; ++r) {
        if (ids[r].row == rows[r]) continue;
        int64_t b, e;
        span_words(out, rows[r], b, e);
        ids[r].build(bp, i + (r & 1), j + (r >> 1), out.offsets[3 * rows[r]], b, e);
      }
      for (int r = 0; r < 4; ++r) {
        local[r] = ids[r].local.data();
        first[r] = ids[r].first;
      }
      numbered = true;
    }
    for (; cells; cells &= cells - 1) {
      const int bit = lowest_bit(cells), config = cell_config_bits(corner, bit);
      const int64_t slot0 = 3 * (64 * w + bit);
      if (kPlainTriCount[config] < 0) {  // rare: values decide the faces, and the variant may use a centre vertex
        R v[8];
        double d[8];
        vol.cell_values(i, j, 64 * w + bit, v);
        level_offsets(v, vol.level, d);
        const int variant = decided_variant(vol, config, d);
        if (variant_centre(variant)) store_centre(out, vol.level, centre, i, j, 64 * w + bit, v);
        const uint8_t* slots = kVariantCorners.slot[variant];
        for (int n = 0; n < variant_tri_count(variant); ++n, ++t) {
          int64_t tri[3];
          for (int c = 0; c < 3; ++c) {
            const int s = slots[3 * n + c], r = s & 3;
            tri[c] = s == kCentreCorner ? centre : first[r] + local[r][slot0 + (s >> 2)];
          }
          out.faces[3 * t] = tri[0];
          out.faces[3 * t + 1] = out.flip ? tri[2] : tri[1];
          out.faces[3 * t + 2] = out.flip ? tri[1] : tri[2];
        }
        centre += variant_centre(variant);
        continue;
      }
      const uint8_t* slots = kTriCorners.slot[config];
      for (int n = 0; n < tri_count(config); ++n, ++t) {
        int64_t tri[3];
        for (int c = 0; c < 3; ++c) {
          const int s = slots[3 * n + c], r = s & 3;
          tri[c] = first[r] + local[r][slot0 + (s >> 2)];
        }
        out.faces[3 * t] = tri[0];
        out.faces[3 * t + 1] = out.flip ? tri[2] : tri[1];
        out.faces[3 * t + 2] = out.flip ? tri[1] : tri[2];
      }
    }
  }
}

}  // namespace fk
