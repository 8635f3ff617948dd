// Marching cubes core shared by the CPU and CUDA drivers: classification, vertex positions and normals
// (emit_vertex, which every driver calls), and the row walk: welded vertex numbering and triangle emission for
// one grid row (fixed i, j; k walks the last axis), the CPU method "rowwalk".
//
// Output order, identical on every driver: vertices by (grid point in C order, axis x<y<z) of the edge they lie
// on, then the cell-centre vertices by cell in C order; triangles by cell in C order, then table order. Each
// crossed edge is owned by its lower grid point, so a vertex is produced once and shared by every face that uses
// it (welded by construction). A cell whose values decide its triangles (mc_decide.h: an ambiguous face, or case
// 4) takes them from the variant its decisions select (mc_variants.h); every other cell from the 256-case table,
// which is those cases' only variant.
#pragma once
#include "mc_decide.h"

namespace fk {

// The 8 corner values of a cell (corner c = dx | dy << 1 | dz << 2) minus the level, widened to double.
template <typename R>
FK_HD void level_offsets(const R v[8], R level, double d[8]) {
  for (int c = 0; c < 8; ++c) d[c] = double(v[c]) - double(level);
}

// The gradient's arithmetic, from a point's value c and its neighbours lo / hi along one axis (has_lo / has_hi:
// inside the grid; their values are not read otherwise). Drivers that obtain the neighbours by other means (the
// CUDA driver's warp shuffles along z) call it too, so every driver rounds the same way.
template <typename R>
FK_HD R gradient_of(R c, R lo, R hi, bool has_lo, bool has_hi) {
  has_lo = has_lo && is_finite(lo);
  has_hi = has_hi && is_finite(hi);
  if (has_lo && has_hi) return (hi - lo) / R(2);
  if (has_hi) return hi - c;
  if (has_lo) return c - lo;
  return R(0);
}

// A read-only strided view of one [nx, ny, nz] grid.
template <typename T>
struct Volume {
  using R = typename ComputeType<T>::type;
  const T* data;
  int64_t nx, ny, nz;
  int64_t sx, sy, sz;  // strides in elements
  R level;
  bool decide_from_values;  // else the sign rule: the variant with nothing joined (GridDesc)

  FK_HD R at(int64_t i, int64_t j, int64_t k) const { return to_compute(data[i * sx + j * sy + k * sz]); }

  // The 8 corner values of cell (i, j, k), corner c = dx | dy << 1 | dz << 2.
  FK_HD void cell_values(int64_t i, int64_t j, int64_t k, R v[8]) const {
    for (int c = 0; c < 8; ++c) v[c] = at(i + (c & 1), j + ((c >> 1) & 1), k + ((c >> 2) & 1));
  }

  // A cell (lower corner i, j, k) takes part only if all 8 corners are finite: NaN holes emit nothing.
  FK_HD int cell_config(int64_t i, int64_t j, int64_t k) const {
    int config = 0;
    for (int c = 0; c < 8; ++c) {
      R v = at(i + (c & 1), j + ((c >> 1) & 1), k + ((c >> 2) & 1));
      if (!is_finite(v)) return -1;
      config |= int(v < level) << c;
    }
    return config;
  }

  // Does the edge from (i, j, k) one step along `axis` carry a vertex? It must cross the level and border at
  // least one valid cell, so that no vertex is left unreferenced next to a NaN hole.
  FK_HD bool edge_crosses(int64_t i, int64_t j, int64_t k, int axis) const {
    int64_t p[3] = {i, j, k}, n[3] = {nx, ny, nz};
    if (p[axis] + 1 >= n[axis]) return false;
    R v0 = at(i, j, k);
    R v1 = at(i + (axis == 0), j + (axis == 1), k + (axis == 2));
    if (!is_finite(v0) || !is_finite(v1) || ((v0 < level) == (v1 < level))) return false;
    int u = (axis + 1) % 3, w = (axis + 2) % 3;
    for (int du = 0; du < 2; ++du) {
      for (int dw = 0; dw < 2; ++dw) {
        int64_t c[3] = {i, j, k};
        c[u] -= du;
        c[w] -= dw;
        if (c[u] < 0 || c[w] < 0 || c[u] + 1 >= n[u] || c[w] + 1 >= n[w]) continue;
        if (cell_config(c[0], c[1], c[2]) >= 0) return true;
      }
    }
    return false;
  }

  // Bit a set: the edge from (i, j, k) along axis a carries a vertex. The common case (no sign change) costs
  // four loads; the neighbour-cell check runs only on crossing edges.
  FK_HD unsigned edge_mask(int64_t i, int64_t j, int64_t k) const {
    R v0 = at(i, j, k);
    if (!is_finite(v0)) return 0u;
    bool in0 = v0 < level;
    bool cross[3] = {i + 1 < nx && (at(i + 1, j, k) < level) != in0, j + 1 < ny && (at(i, j + 1, k) < level) != in0,
                     k + 1 < nz && (at(i, j, k + 1) < level) != in0};
    unsigned m = 0;
    for (int a = 0; a < 3; ++a)
      if (cross[a] && edge_crosses(i, j, k, a)) m |= 1u << a;
    return m;
  }

  // d value / d index along `axis` at a grid point: central where both neighbours are finite, else one-sided.
  FK_HD R gradient(int64_t i, int64_t j, int64_t k, int axis) const {
    int64_t p[3] = {i, j, k}, n[3] = {nx, ny, nz};
    R c = at(i, j, k);
    bool has_lo = p[axis] > 0, has_hi = p[axis] + 1 < n[axis];
    R lo = has_lo ? at(i - (axis == 0), j - (axis == 1), k - (axis == 2)) : R(0);
    R hi = has_hi ? at(i + (axis == 0), j + (axis == 1), k + (axis == 2)) : R(0);
    return gradient_of(c, lo, hi, has_lo, has_hi);
  }
};

// Per row: vertices it owns, triangles its cells emit, the span [kmin, kmax] of points with a vertex (kmin > kmax
// when none), and the centre vertices of its cells. The emit pass walks only the spans, as Flying Edges does.
struct RowCounts { int64_t verts, tris, kmin, kmax, centres; };

// Where outputs go. offsets[3 * row + {0, 1, 2}]: first edge vertex / triangle / centre vertex of each row
// (exclusive scans; centre ids start at centre_first, the number of edge vertices);
// spans[2 * row] / [2 * row + 1]: the row's kmin / kmax from the count pass.
struct EmitTarget {
  const int64_t* offsets;
  const int64_t* spans;
  float* verts;     // [V, 3]
  int64_t* faces;   // [F, 3]
  float* normals;   // [V, 3] or nullptr
  double origin[3], scale[3];  // world = origin + index * scale
  bool flip;        // reverse winding (gradient_direction="ascent")
  int64_t centre_first;  // id of the first centre vertex: the number of edge vertices
};

template <typename T>
FK_HD RowCounts count_row(const Volume<T>& vol, int64_t i, int64_t j) {
  using R = typename Volume<T>::R;
  RowCounts c{0, 0, vol.nz, -1, 0};
  auto add_verts = [&](int64_t k, unsigned mask) {
    if (!mask) return;
    c.verts += popcount3(mask);
    c.kmin = c.kmin < k ? c.kmin : k;
    c.kmax = k;
  };
  if (i + 1 >= vol.nx || j + 1 >= vol.ny) {  // last row of a face: no cells, a plain walk
    for (int64_t k = 0; k < vol.nz; ++k) add_verts(k, vol.edge_mask(i, j, k));
    return c;
  }
  // Rolling window over the 2 x 2 column of rows (r = dx | dy << 1): four loads per step serve the cell's
  // configuration and this row's edge tests; only crossing edges pay for the neighbour-cell check.
  R lo[4], hi[4] = {R(0), R(0), R(0), R(0)};  // hi is read only when k + 1 < nz, which sets it first
  for (int r = 0; r < 4; ++r) lo[r] = vol.at(i + (r & 1), j + (r >> 1), 0);
  for (int64_t k = 0; k < vol.nz; ++k) {
    bool next = k + 1 < vol.nz;
    if (next)
      for (int r = 0; r < 4; ++r) hi[r] = vol.at(i + (r & 1), j + (r >> 1), k + 1);
    bool in0 = lo[0] < vol.level;
    unsigned maybe = unsigned((lo[1] < vol.level) != in0) | unsigned((lo[2] < vol.level) != in0) << 1 |
                     unsigned(next && (hi[0] < vol.level) != in0) << 2;
    if (maybe) {  // NaN compares false, so a NaN corner can look crossed: confirm with the full test
      unsigned mask = 0;
      for (int a = 0; a < 3; ++a)
        if ((maybe >> a & 1u) && vol.edge_crosses(i, j, k, a)) mask |= 1u << a;
      add_verts(k, mask);
    }
    if (next) {
      int config = 0;
      bool finite = true;
      for (int r = 0; r < 4; ++r) {
        finite = finite && is_finite(lo[r]) && is_finite(hi[r]);
        config |= int(lo[r] < vol.level) << r | int(hi[r] < vol.level) << (r + 4);
      }
      if (finite && config > 0 && decided_case(config)) {
        R v[8];
        double d[8];
        for (int r = 0; r < 4; ++r) {
          v[r] = lo[r];
          v[r + 4] = hi[r];
        }
        level_offsets(v, vol.level, d);
        const int variant = decided_variant(vol, config, d);
        c.tris += variant_tri_count(variant);
        c.centres += variant_centre(variant);
      } else if (finite && config > 0) {
        c.tris += tri_count(config);
      }
      for (int r = 0; r < 4; ++r) lo[r] = hi[r];
    }
  }
  return c;
}

// Where the level crosses the edge from v0 to v1 (on opposite sides of it), as a fraction of the edge. Values
// further apart than the type holds (-3e38 and 3e38 in float) make v1 - v0 overflow, which would put the vertex
// on the grid point and collapse faces: their halves are interpolated instead.
template <typename R>
FK_HD R edge_fraction(R v0, R v1, R level) {
  const R d = v1 - v0;  // never 0: v0 and v1 lie on opposite sides
  if (is_finite(d)) return (level - v0) / d;
  const R h = R(0.5);
  return (level * h - v0 * h) / (v1 * h - v0 * h);
}

// Vertex `id` on the edge from (i, j, k) along `axis`, from its end values v0, v1 and grad(d, end), the gradient
// along d at end 0 (the owner point) or 1 (its neighbour along the axis), asked only when normals are wanted.
template <typename R, typename Grad>
FK_HD void store_vertex(const EmitTarget& out, R level, int64_t id, int64_t i, int64_t j, int64_t k, int axis, R v0,
                        R v1, const Grad& grad) {
  R frac = edge_fraction(v0, v1, level);
  // No array indexed by `axis`: a GPU caller may pass it at run time, and such an array would live in local memory.
  for (int d = 0; d < 3; ++d) {
    R pos = R(d == 0 ? i : d == 1 ? j : k);
    if (d == axis) pos += frac;
    out.verts[3 * id + d] = float(out.origin[d] + double(pos) * out.scale[d]);
  }
  if (!out.normals) return;
  // Outward normal (toward values >= level) in world space: grad / spacing, blended along the edge.
  R g[3], norm2 = 0;
  for (int d = 0; d < 3; ++d) {
    R g0 = grad(d, 0);
    R g1 = grad(d, 1);
    g[d] = (g0 + frac * (g1 - g0)) / R(out.scale[d]);
    norm2 += g[d] * g[d];
  }
  R sign = out.flip ? R(-1) : R(1);
  if (!(norm2 > R(0)) || !is_finite(norm2)) {  // flat or broken gradient: fall back to the crossed edge
    for (int d = 0; d < 3; ++d) g[d] = d == axis ? (v1 > v0 ? R(1) : R(-1)) : R(0);
    norm2 = 1;
  }
  R inv = R(1) / sqrt(norm2);
  for (int d = 0; d < 3; ++d) out.normals[3 * id + d] = float(sign * g[d] * inv);
}

template <typename T>
FK_HD void emit_vertex(const Volume<T>& vol, const EmitTarget& out, int64_t id, int64_t i, int64_t j, int64_t k,
                       int axis) {
  using R = typename Volume<T>::R;
  const int64_t i1 = i + (axis == 0), j1 = j + (axis == 1), k1 = k + (axis == 2);
  store_vertex(out, vol.level, id, i, j, k, axis, vol.at(i, j, k), vol.at(i1, j1, k1), [&](int d, int end) -> R {
    return end ? vol.gradient(i1, j1, k1, d) : vol.gradient(i, j, k, d);
  });
}

// A cell's centre vertex, which the loops of 8 or more vertices that joined faces make are fanned from: at the
// corners' mean weighted by 1 / (FK_CENTRE_EPS + |value - level|), as scikit-image places it (corners near the
// level pull it), with the trilinear interpolant's gradient at the cell's centre as its normal. Each coordinate is
// kept FK_CENTRE_MARGIN inside the cell, so the centre never lands on an edge vertex (a corner at the level
// would take it there). v: the 8 corner values (all finite: the cell emits).
#define FK_CENTRE_EPS 2.220446049250313e-16
#define FK_CENTRE_MARGIN (1.0 / 1024.0)
template <typename R>
FK_HD void store_centre(const EmitTarget& out, R level, int64_t id, int64_t i, int64_t j, int64_t k, const R v[8]) {
  double sum[3] = {0.0, 0.0, 0.0}, total = 0.0;
  R g[3] = {R(0), R(0), R(0)};
  for (int c = 0; c < 8; ++c) {
    const double w = 1.0 / (FK_CENTRE_EPS + fabs(double(v[c]) - double(level)));
    total += w;
    for (int d = 0; d < 3; ++d) sum[d] += (c >> d & 1) ? w : 0.0;
    for (int a = 0; a < 3; ++a)
      if (!(c >> a & 1)) g[a] += v[c | 1 << a] - v[c];
  }
  const int64_t at[3] = {i, j, k};
  for (int d = 0; d < 3; ++d) {
    double f = sum[d] / total;  // total > 0: every weight is > 0 unless its value overflows the difference
    f = f > FK_CENTRE_MARGIN ? f : FK_CENTRE_MARGIN;  // also catches NaN (every difference overflowing)
    f = f < 1.0 - FK_CENTRE_MARGIN ? f : 1.0 - FK_CENTRE_MARGIN;
    out.verts[3 * id + d] = float(out.origin[d] + (double(at[d]) + f) * out.scale[d]);
  }
  if (!out.normals) return;
  R norm2 = R(0);
  for (int d = 0; d < 3; ++d) {
    g[d] = g[d] / R(4) / R(out.scale[d]);
    norm2 += g[d] * g[d];
  }
  if (!(norm2 > R(0)) || !is_finite(norm2)) {  // flat or overflowing gradient: a fixed axis
    for (int d = 0; d < 3; ++d) g[d] = R(d == 0);
    norm2 = R(1);
  }
  const R sign = out.flip ? R(-1) : R(1), inv = R(1) / sqrt(norm2);
  for (int d = 0; d < 3; ++d) out.normals[3 * id + d] = float(sign * g[d] * inv);
}

template <typename T>
FK_HD void emit_row(const Volume<T>& vol, const EmitTarget& out, int64_t i, int64_t j) {
  using R = typename Volume<T>::R;
  const int64_t row = i * vol.ny + j;
  int64_t v = out.offsets[3 * row];
  for (int64_t k = out.spans[2 * row]; k <= out.spans[2 * row + 1]; ++k) {
    unsigned m = vol.edge_mask(i, j, k);
    for (int axis = 0; axis < 3; ++axis)
      if (m >> axis & 1u) emit_vertex(vol, out, v++, i, j, k, axis);
  }
  if (i + 1 >= vol.nx || j + 1 >= vol.ny) return;
  // Walk the four rows around this row of cells (r = dx | dy << 1), tracking the id of the first vertex owned
  // by the current point of each, so a cell's edge maps to its global vertex id without any lookup table.
  // A cell with a triangle has a crossed edge owned by one of the four rows at k or k + 1, so only cells in
  // [min kmin - 1, max kmax] can emit; no row owns a vertex before that start, so its first id is its offset.
  int64_t base[4], kfirst = vol.nz, klast = -1;
  unsigned mask_k[4], mask_k1[4];
  for (int r = 0; r < 4; ++r) {
    int64_t rr = (i + (r & 1)) * vol.ny + j + (r >> 1);
    base[r] = out.offsets[3 * rr];
    kfirst = out.spans[2 * rr] < kfirst ? out.spans[2 * rr] : kfirst;
    klast = out.spans[2 * rr + 1] > klast ? out.spans[2 * rr + 1] : klast;
  }
  if (klast < 0) return;
  kfirst = kfirst > 0 ? kfirst - 1 : 0;
  klast = klast < vol.nz - 2 ? klast : vol.nz - 2;
  for (int r = 0; r < 4; ++r) mask_k[r] = vol.edge_mask(i + (r & 1), j + (r >> 1), kfirst);
  int64_t t = out.offsets[3 * row + 1], centre = out.centre_first + out.offsets[3 * row + 2];
  for (int64_t k = kfirst; k <= klast; ++k) {
    for (int r = 0; r < 4; ++r) mask_k1[r] = vol.edge_mask(i + (r & 1), j + (r >> 1), k + 1);
    int config = vol.cell_config(i, j, k);
    int variant = -1;  // -1: the case table
    if (config > 0 && decided_case(config)) {
      R vals[8];
      double d[8];
      vol.cell_values(i, j, k, vals);
      level_offsets(vals, vol.level, d);
      variant = decided_variant(vol, config, d);
      if (variant_centre(variant)) store_centre(out, vol.level, centre, i, j, k, vals);
    }
    int ntri = variant >= 0 ? variant_tri_count(variant) : config > 0 ? tri_count(config) : 0;
    for (int n = 0; n < ntri; ++n, ++t) {
      int64_t ids[3];
      for (int c = 0; c < 3; ++c) {
        int e = variant >= 0 ? variant_tri_edge(variant, 3 * n + c) : tri_edge(config, 3 * n + c);
        if (e == FK_CENTRE_SLOT) {
          ids[c] = centre;
          continue;
        }
        int corner = edge_corner(e), axis = edge_axis(e);
        int r = (corner & 1) | ((corner >> 1) & 1) << 1;
        bool upper = (corner >> 2) & 1;  // the edge's owner point sits at k + 1
        unsigned m = upper ? mask_k1[r] : mask_k[r];
        int64_t b = upper ? base[r] + popcount3(mask_k[r]) : base[r];
        ids[c] = b + popcount3(m & ((1u << axis) - 1u));
      }
      out.faces[3 * t] = ids[0];
      out.faces[3 * t + 1] = out.flip ? ids[2] : ids[1];
      out.faces[3 * t + 2] = out.flip ? ids[1] : ids[2];
    }
    if (variant >= 0 && variant_centre(variant)) ++centre;
    for (int r = 0; r < 4; ++r) {
      base[r] += popcount3(mask_k[r]);
      mask_k[r] = mask_k1[r];
    }
  }
}

}  // namespace fk
