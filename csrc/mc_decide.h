// The cells whose values decide their triangles, shared by every driver: ambiguous faces (the asymptotic
// decider) and case 4's interior, each evaluated in double in one fixed order so that every driver and the
// float64 reference agree.
#pragma once
#include "mc_base.h"

namespace fk {

// ---- ambiguous faces, decided from values ------------------------------------------------------------------

// Corner c of face f in the face's fixed order a, b, c, d = (0,0), (1,0), (1,1), (0,1) of its (u, v) axes
// (FK_FACE_CORNERS, which a host check below ties to this formula): computed, not looked up, so that with the
// face loops unrolled every corner index is a constant and a GPU keeps the values in registers.
FK_HD constexpr int face_corner(int f, int n) {
  return ((f & 1) << (f >> 1)) | ((n == 1 || n == 2) << ((f / 2 + 1) % 3)) | ((n >= 2) << ((f / 2 + 2) % 3));
}

constexpr bool face_corners_match_table() {
  for (int f = 0; f < 6; ++f)
    for (int n = 0; n < 4; ++n)
      if (tables::kFaceCorners[f][n] != face_corner(f, n)) return false;
  return true;
}
static_assert(face_corners_match_table(), "mc_variants.h's face corner order is not face_corner's");

// Cells with an ambiguous face, 32 or 64 at a time: corner[c] holds bit l = corner c of cell l is inside. A face
// is ambiguous where its diagonal corners agree and adjacent ones differ.
template <typename W>
FK_HD W ambiguous_cells(const W corner[8]) {
  W any = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int f = 0; f < 6; ++f) {
    const W a = corner[face_corner(f, 0)], b = corner[face_corner(f, 1)];
    const W c = corner[face_corner(f, 2)], d = corner[face_corner(f, 3)];
    any |= ~(a ^ c) & ~(b ^ d) & (a ^ b);
  }
  return any;
}

// Cells of case 4 (two body-diagonal corners alone on their side), whose interior is decided from values.
template <typename W>
FK_HD W body_diagonal_cells(const W corner[8]) {
  W out = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int p = 0; p < 4; ++p) {
    W differ = ~(corner[p] ^ corner[7 - p]);  // the pair agrees, and every other corner differs from it
    for (int n = 0; n < 8; ++n)
      if (n != p && n != 7 - p) differ &= corner[n] ^ corner[p];
    out |= differ;
  }
  return out;
}
// The cells that read their values: an ambiguous face, or case 4.
template <typename W>
FK_HD W decided_cells(const W corner[8]) {
  return ambiguous_cells(corner) | body_diagonal_cells(corner);
}

// Case 4's interior: in the frame where the pair is corners 0 and 7 and negative (e: the values minus the level,
// corners renumbered n ^ c and negated when the pair lies outside), does the trilinear interpolant join them? The
// slice z = t is bilinear with corners A, B, C, D (the z edges at t; B, D >= 0), whose A and C are joined where
// A < 0, C < 0 and A C > B D; A C - B D is quadratic in t and <= 0 where A or C reaches 0, so the pair is joined
// iff it is concave, its vertex t* lies in (0, 1), and there A < 0, C < 0, A C > B D (the z edges at corners 0 and
// 7 then carry the path to t*). The reference evaluates the same operations in the same order. Values near the
// double range overflow to inf / NaN, which compare false: not joined, in every driver alike.
FK_HD bool interior_joins(double e0, double e1, double e2, double e3, double e4, double e5, double e6, double e7) {
  const double da = e4 - e0, db = e5 - e1, dc = e7 - e3, dd = e6 - e2;
  const double q2 = da * dc - db * dd;
  const double q1 = e0 * dc + e3 * da - e1 * dd - e2 * db;
  if (!(q2 < 0.0)) return false;
  const double t = -q1 / (2.0 * q2);
  if (!(0.0 < t && t < 1.0)) return false;
  const double a = e0 + da * t, b = e1 + db * t, c = e3 + dc * t, d = e2 + dd * t;
  return a < 0.0 && c < 0.0 && a * c > b * d;
}

// The asymptotic decider for one ambiguous face, from its corners' values minus the level in the face's order
// (exactly one of the pairs (a, c), (b, d) lies below 0): are the inside corners joined? Two products and a
// comparison, no sum, in double: a product of two floats is exact there, so float grids decide exactly, and with
// nothing to contract into an FMA every driver and both cells sharing the face get the same answer. A tie (the
// saddle on the level) or an overflowing product (double grids only) keeps the sign rule: not joined.
FK_HD bool face_joins(double a, double b, double c, double d) {
  const bool a_in = a < 0;
  const double p_in = fabs(a_in ? a * c : b * d), p_out = fabs(a_in ? b * d : a * c);
  return p_in > p_out && p_in <= 1.7976931348623157e308;
}

// Variant of a decided cell: its case's first variant plus its decisions, bit n for the n-th ambiguous face, bit
// 0 for case 4's interior. d[c]: corner c's value minus the level, in double.
FK_HD int cell_variant(int config, const double d[8]) {
  const unsigned faces = ambiguous_faces(config);
  int bits = 0, n = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int f = 0; f < 6; ++f) {
    if (!(faces >> f & 1u)) continue;
    const bool joins = face_joins(d[face_corner(f, 0)], d[face_corner(f, 1)], d[face_corner(f, 2)],
                                  d[face_corner(f, 3)]);
    bits |= int(joins) << n;
    ++n;
  }
  const int pair = interior_pair(config);
  if (pair >= 0) {  // case 4 has no ambiguous face: its interior is decision bit 0
    const int c = pair & 3;
    const double s = pair & 4 ? -1.0 : 1.0;
    bits |= int(interior_joins(s * d[0 ^ c], s * d[1 ^ c], s * d[2 ^ c], s * d[3 ^ c], s * d[4 ^ c], s * d[5 ^ c],
                               s * d[6 ^ c], s * d[7 ^ c]));
  }
  return variant_base(config) + bits;
}

// The variant of a decided-case cell from its level offsets d, or, when the volume asks for the sign rule, the
// variant with no face and no interior joined (what the 256-case table draws).
template <typename V>
FK_HD int decided_variant(const V& vol, int config, const double d[8]) {
  return vol.decide_from_values ? cell_variant(config, d) : variant_base(config);
}

// cell_variant with each ambiguous face's 4 values read from the grid when it is decided: the same decisions,
// holding 4 values at a time instead of 8 (the GPU face kernel has no registers to spare).
template <typename V>
FK_HD int cell_variant_at(const V& vol, int config, int64_t i, int64_t j, int64_t k) {
  if (!vol.decide_from_values) return variant_base(config);
  const unsigned faces = ambiguous_faces(config);
  int bits = 0, n = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int f = 0; f < 6; ++f) {
    if (!(faces >> f & 1u)) continue;
    double d[4];
    for (int q = 0; q < 4; ++q) {
      const int c = face_corner(f, q);
      d[q] = double(vol.at(i + (c & 1), j + (c >> 1 & 1), k + (c >> 2))) - double(vol.level);
    }
    bits |= int(face_joins(d[0], d[1], d[2], d[3])) << n;
    ++n;
  }
  const int pair = interior_pair(config);
  if (pair >= 0) {
    const int c = pair & 3;
    const double s = pair & 4 ? -1.0 : 1.0;
    double e[8];
    for (int q = 0; q < 8; ++q) {
      const int r = q ^ c;
      e[q] = s * (double(vol.at(i + (r & 1), j + (r >> 1 & 1), k + (r >> 2))) - double(vol.level));
    }
    bits |= int(interior_joins(e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]));
  }
  return variant_base(config) + bits;
}


}  // namespace fk
