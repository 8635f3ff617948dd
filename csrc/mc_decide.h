// The cells whose values decide their triangles, shared by every driver: ambiguous faces (the asymptotic
// decider), case 4's interior and the twisted paths' triangulation, each evaluated in double in one fixed
// order so that every driver and the float64 reference agree.
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
// Cells whose four corners on each side form a path of three edges along three axes (Lewiner's cases 11 and 14),
// and those of case 4: no face has its four corners on one side and no corner has its three neighbours on its
// side (with an ambiguous face excluded, only these cases are left).
template <typename W>
FK_HD W twisted_path_cells(const W corner[8]) {
  W other = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int f = 0; f < 6; ++f) {
    const W a = corner[face_corner(f, 0)];
    other |= ~((a ^ corner[face_corner(f, 1)]) | (a ^ corner[face_corner(f, 2)]) | (a ^ corner[face_corner(f, 3)]));
  }
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int c = 0; c < 8; ++c)
    other |= ~((corner[c] ^ corner[c ^ 1]) | (corner[c] ^ corner[c ^ 2]) | (corner[c] ^ corner[c ^ 4]));
  return ~other;
}
// The cells that read their values: an ambiguous face, case 4, or a twisted path.
template <typename W>
FK_HD W decided_cells(const W corner[8]) {
  return ambiguous_cells(corner) | body_diagonal_cells(corner) | twisted_path_cells(corner);
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

// A twisted path's triangulation: the variant (offset 0..13), other than its two central triangulations (always
// equally near: taking one would pick by the table's orientation), whose area at the real edge vertices is nearest
// the mean of the central ones' (the first of equals), as `path_choice` in reference/mc_ambiguity.py computes it,
// with the same operations in the same order in double, so every driver and the reference agree; a NaN area (values
// near the double range) is never nearer. src(c): corner c's value minus the level.
template <typename Src>
FK_HD double path_fraction(const Src& src, int e) {
  const int c0 = edge_corner(e);
  const double d0 = src(c0), d1 = src(c0 | 1 << edge_axis(e));
  return d0 / (d0 - d1);
}
// Coordinate a of the vertex at fraction t along edge e: recomputed where used, so that only the three fractions
// of a triangle stay live (its nine coordinates made the GPU face kernel spill).
FK_HD double path_coord(int e, double t, int a) {
  return double(edge_corner(e) >> a & 1) + (a == edge_axis(e) ? t : 0.0);
}
template <typename Src>
FK_HD double path_twice_area(const Src& src, int v) {
  double total = 0.0;
  for (int n = 0; n < variant_tri_count(v); ++n) {
    const int ep = variant_tri_edge(v, 3 * n), eq = variant_tri_edge(v, 3 * n + 1);
    const int er = variant_tri_edge(v, 3 * n + 2);
    const double tp = path_fraction(src, ep), tq = path_fraction(src, eq), tr = path_fraction(src, er);
    const double ux = path_coord(eq, tq, 0) - path_coord(ep, tp, 0), uy = path_coord(eq, tq, 1) - path_coord(ep, tp, 1);
    const double uz = path_coord(eq, tq, 2) - path_coord(ep, tp, 2), vx = path_coord(er, tr, 0) - path_coord(ep, tp, 0);
    const double vy = path_coord(er, tr, 1) - path_coord(ep, tp, 1), vz = path_coord(er, tr, 2) - path_coord(ep, tp, 2);
    const double cx = uy * vz - uz * vy, cy = uz * vx - ux * vz, cz = ux * vy - uy * vx;
    total += sqrt(cx * cx + cy * cy + cz * cz);
  }
  return total;
}
template <typename Src>
FK_HD int path_choice(int config, const Src& src) {
  const int base = variant_base(config), central = path_central(config);
  const double target =
      (path_twice_area(src, base + (central & 15)) + path_twice_area(src, base + (central >> 4))) * 0.5;
  double best = HUGE_VAL;
  int out = 0;
  for (int n = 0; n < 14; ++n) {
    if (n == (central & 15) || n == central >> 4) continue;
    const double dist = fabs(path_twice_area(src, base + n) - target);
    if (dist < best) {
      best = dist;
      out = n;
    }
  }
  return out;
}
struct OffsetsIn {  // a cell's values minus the level, held
  const double* d;
  FK_HD double operator()(int c) const { return d[c]; }
};
template <typename V>
struct OffsetsAt {  // a cell's values minus the level, read from the grid when asked
  const V& vol;
  int64_t i, j, k;
  FK_HD double operator()(int c) const {
    return double(vol.at(i + (c & 1), j + (c >> 1 & 1), k + (c >> 2))) - double(vol.level);
  }
};

// Variant of a decided cell: its case's first variant plus its decisions, bit n for the n-th ambiguous face, bit
// 0 for case 4's interior, or a twisted path's triangulation. d[c]: corner c's value minus the level, in double.
// kTiling false leaves the twisted path's choice out: its 14 variants have 4 triangles each and no centre vertex,
// so the count passes skip it.
template <bool kTiling = true>
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
  if (kTiling && path_central(config) != 255) bits = path_choice(config, OffsetsIn{d});
  return variant_base(config) + bits;
}

// The variant of a decided-case cell from its level offsets d, or, when the volume asks for the sign rule, the
// variant with no face and no interior joined (what the 256-case table draws).
template <bool kTiling = true, typename V>
FK_HD int decided_variant(const V& vol, int config, const double d[8]) {
  return vol.decide_from_values ? cell_variant<kTiling>(config, d) : variant_base(config);
}

// cell_variant with each ambiguous face's 4 values read from the grid when it is decided: the same decisions,
// holding 4 values at a time instead of 8 (the GPU face kernel has no registers to spare).
template <bool kTiling = true, typename V>
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
  if (kTiling && path_central(config) != 255) bits = path_choice(config, OffsetsAt<V>{vol, i, j, k});
  return variant_base(config) + bits;
}


}  // namespace fk
