// Unsigned distance to a triangle mesh: the per-triangle narrow-band scatter and the per-point closest-triangle
// query, written once as __host__ __device__ functions for the CPU driver (udf_cpu.cpp) and a CUDA driver.
//
// Narrow band: a triangle writes min(grid, distance) only at grid points within `band` of it. It walks the
// grid points of its bounding box grown by `band`, in columns along the axis where its normal is largest, and
// in each column only the run of points within `band` of its plane (the slab test): a point farther from the
// plane is farther from the triangle. Every point in the band of the mesh is therefore visited by each triangle
// that could be its nearest, and holds the exact distance; every other point keeps the value it started with.
#pragma once
#include <cstdint>
#include <math.h>

#if defined(__CUDACC__)
#define FK_UDF_HD __host__ __device__ __forceinline__
#else
#define FK_UDF_HD inline
#endif

namespace fk {
namespace udf {

struct Vec3 {
  float x, y, z;
};
FK_UDF_HD Vec3 operator-(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
FK_UDF_HD Vec3 operator+(Vec3 a, Vec3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
FK_UDF_HD Vec3 operator*(float s, Vec3 a) { return {s * a.x, s * a.y, s * a.z}; }
FK_UDF_HD float dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
FK_UDF_HD Vec3 cross(Vec3 a, Vec3 b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }
FK_UDF_HD float axis(Vec3 v, int a) { return a == 0 ? v.x : (a == 1 ? v.y : v.z); }

// Squared distance from p to triangle (a, b, c): the closest point is found by the Voronoi region of p
// (a vertex, an edge or the face). A region test whose division would be 0 / 0 (repeated vertices) is passed
// over, and a triangle left with no face region (zero area) takes the nearest of its edges. V: Vec3 or DVec3.
template <typename V>
FK_UDF_HD decltype(V{}.x) point_triangle_dist2_t(V p, V a, V b, V c) {
  using T = decltype(V{}.x);
  const V ab = b - a, ac = c - a, ap = p - a;
  const T d1 = dot(ab, ap), d2 = dot(ac, ap);
  if (d1 <= T(0) && d2 <= T(0)) return dot(ap, ap);
  const V bp = p - b;
  const T d3 = dot(ab, bp), d4 = dot(ac, bp);
  if (d3 >= T(0) && d4 <= d3) return dot(bp, bp);
  const T vc = d1 * d4 - d3 * d2;
  if (vc <= T(0) && d1 >= T(0) && d3 <= T(0) && d1 - d3 > T(0)) {
    const T v = d1 / (d1 - d3);
    const V q = ap - v * ab;
    return dot(q, q);
  }
  const V cp = p - c;
  const T d5 = dot(ab, cp), d6 = dot(ac, cp);
  if (d6 >= T(0) && d5 <= d6) return dot(cp, cp);
  const T vb = d5 * d2 - d1 * d6;
  if (vb <= T(0) && d2 >= T(0) && d6 <= T(0) && d2 - d6 > T(0)) {
    const T w = d2 / (d2 - d6);
    const V q = ap - w * ac;
    return dot(q, q);
  }
  const T va = d3 * d6 - d5 * d4;
  if (va <= T(0) && (d4 - d3) >= T(0) && (d5 - d6) >= T(0) && (d4 - d3) + (d5 - d6) > T(0)) {
    const T w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
    const V q = bp - w * (c - b);
    return dot(q, q);
  }
  const T denom = va + vb + vc;
  if (!(denom > T(0))) {  // rounding left no face region: the nearest edge is the answer
    T best = dot(ap, ap);
    const V edges[3][2] = {{a, b}, {b, c}, {c, a}};
    for (int e = 0; e < 3; ++e) {
      const V d = edges[e][1] - edges[e][0], r = p - edges[e][0];
      const T len2 = dot(d, d);
      T t = len2 > T(0) ? dot(r, d) / len2 : T(0);
      t = t < T(0) ? T(0) : (t > T(1) ? T(1) : t);
      const V q = r - t * d;
      const T d2e = dot(q, q);
      best = d2e < best ? d2e : best;
    }
    return best;
  }
  const T v = vb / denom, w = vc / denom;
  const V q = ap - v * ab - w * ac;
  return dot(q, q);
}

struct DVec3 {
  double x, y, z;
};
FK_UDF_HD DVec3 operator-(DVec3 a, DVec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
FK_UDF_HD DVec3 operator*(double s, DVec3 a) { return {s * a.x, s * a.y, s * a.z}; }
FK_UDF_HD double dot(DVec3 a, DVec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }

// The float form, except for thin triangles (twice the area below 0.1 x the longest edge squared), which are
// measured in double: the region tests and barycentrics come from differences of products whose float rounding,
// relative to the result, grows as the triangle thins (a random soup's needles were off by 4x in float).
FK_UDF_HD float point_triangle_dist2(Vec3 p, Vec3 a, Vec3 b, Vec3 c) {
  const Vec3 ab = b - a, ac = c - a, bc = c - b, n = cross(ab, ac);
  const float l2 = fmaxf(dot(ab, ab), fmaxf(dot(ac, ac), dot(bc, bc)));
  if (dot(n, n) >= 1e-2f * l2 * l2) return point_triangle_dist2_t(p, a, b, c);
  const DVec3 dp{p.x, p.y, p.z}, da{a.x, a.y, a.z}, db{b.x, b.y, b.z}, dc{c.x, c.y, c.z};
  return float(point_triangle_dist2_t(dp, da, db, dc));
}

// A regular grid: point (i, j, k) sits at origin + (i, j, k) * step, stored at i * n[1] * n[2] + j * n[2] + k.
struct Grid {
  float origin[3];
  float step[3];
  int64_t n[3];
};

FK_UDF_HD int64_t clamp_index(float t, int64_t n) {
  if (!(t > 0.f)) return 0;  // also catches NaN
  if (t > float(n - 1)) return n - 1;
  return int64_t(t);
}

// Scatter one triangle into `dist` (squared distances would lose the fp32 grid's range; distances are stored),
// only for x indices in [x_lo, x_hi): a CPU thread owns such a slab of the grid, so it writes without atomics.
// `store(index, d)` keeps the minimum (plain on the CPU, atomicMin on the float bits on a GPU).
template <typename Store>
FK_UDF_HD void scatter_triangle(const Grid& g, Vec3 a, Vec3 b, Vec3 c, float band, int64_t x_lo, int64_t x_hi,
                                Store&& store) {
  const float band2 = band * band;
  int64_t lo[3], hi[3];
  for (int ax = 0; ax < 3; ++ax) {
    const float mn = fminf(axis(a, ax), fminf(axis(b, ax), axis(c, ax))) - band;
    const float mx = fmaxf(axis(a, ax), fmaxf(axis(b, ax), axis(c, ax))) + band;
    const float s = g.step[ax], o = g.origin[ax];
    if (!(s > 0.f)) {  // a single plane along this axis
      lo[ax] = 0;
      hi[ax] = g.n[ax] - 1;
      continue;
    }
    const float tl = ceilf((mn - o) / s), th = floorf((mx - o) / s);
    if (th < 0.f || tl > float(g.n[ax] - 1) || !(tl <= th)) return;
    lo[ax] = clamp_index(tl, g.n[ax]);
    hi[ax] = clamp_index(th, g.n[ax]);
  }
  if (lo[0] < x_lo) lo[0] = x_lo;
  if (hi[0] > x_hi - 1) hi[0] = x_hi - 1;
  if (lo[0] > hi[0]) return;

  // Column axis m: the largest normal component, so a column crosses the plane's slab in the fewest points.
  // The plane is set up in double (once per triangle, used once per column) so that its rounding cannot drop a
  // point: in float the normal of a thin triangle is mostly rounding.
  const double ab[3] = {double(b.x) - a.x, double(b.y) - a.y, double(b.z) - a.z};
  const double ac[3] = {double(c.x) - a.x, double(c.y) - a.y, double(c.z) - a.z};
  const double nrm[3] = {ab[1] * ac[2] - ab[2] * ac[1], ab[2] * ac[0] - ab[0] * ac[2], ab[0] * ac[1] - ab[1] * ac[0]};
  const double anx = fabs(nrm[0]), any = fabs(nrm[1]), anz = fabs(nrm[2]);
  const int m = (anx >= any && anx >= anz) ? 0 : (any >= anz ? 1 : 2);
  const int u = m == 0 ? 1 : 0, v = m == 2 ? 1 : 2;
  const double nlen = sqrt(nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2]);
  const double lab = sqrt(ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2]);
  const double lac = sqrt(ac[0] * ac[0] + ac[1] * ac[1] + ac[2] * ac[2]);
  // The slab test only where the plane is well defined (sine of the corner angle above 1e-6).
  const bool use_slab = nlen > 1e-6 * lab * lac && g.step[m] > 0.f;
  const double plane = nrm[0] * a.x + nrm[1] * a.y + nrm[2] * a.z, half = double(band) * nlen;
  const int64_t sn[3] = {g.n[1] * g.n[2], g.n[2], 1};

  // The triangle's own box (not grown), for the rounded-box test below.
  float box_lo[3], box_hi[3];
  for (int ax = 0; ax < 3; ++ax) {
    box_lo[ax] = fminf(axis(a, ax), fminf(axis(b, ax), axis(c, ax)));
    box_hi[ax] = fmaxf(axis(a, ax), fmaxf(axis(b, ax), axis(c, ax)));
  }
  for (int64_t iu = lo[u]; iu <= hi[u]; ++iu) {
    const float pu = g.origin[u] + float(iu) * g.step[u];
    const float du = pu < box_lo[u] ? box_lo[u] - pu : (pu > box_hi[u] ? pu - box_hi[u] : 0.f);
    for (int64_t iv = lo[v]; iv <= hi[v]; ++iv) {
      const float pv = g.origin[v] + float(iv) * g.step[v];
      const float dv = pv < box_lo[v] ? box_lo[v] - pv : (pv > box_hi[v] ? pv - box_hi[v] : 0.f);
      // Points within `band` of the triangle lie within `band` of its box: a column passing the box at
      // distance r needs only the run within sqrt(band^2 - r^2) of the box along m. For the small triangles
      // of scanned meshes this halves the points visited (a ball instead of its bounding cube).
      const float rest2 = band2 - du * du - dv * dv;
      if (rest2 < 0.f) continue;
      int64_t m0 = lo[m], m1 = hi[m];
      if (g.step[m] > 0.f) {
        const float reach = sqrtf(rest2) + 1e-3f * g.step[m];
        const float f0 = ceilf((box_lo[m] - reach - g.origin[m]) / g.step[m]);
        const float f1 = floorf((box_hi[m] + reach - g.origin[m]) / g.step[m]);
        if (f1 < float(m0) || f0 > float(m1)) continue;
        if (f0 > float(m0)) m0 = int64_t(f0);
        if (f1 < float(m1)) m1 = int64_t(f1);
      }
      if (use_slab) {
        // |nrm . p - plane| <= band |nrm| along the column, widened by a hair so rounding never drops a point.
        const double rest = plane - nrm[u] * double(pu) - nrm[v] * double(pv);
        double t0 = (rest - half) / nrm[m], t1 = (rest + half) / nrm[m];
        if (t0 > t1) { const double t = t0; t0 = t1; t1 = t; }
        const double pad = 1e-3 * g.step[m];
        const double f0 = ceil((t0 - pad - g.origin[m]) / g.step[m]);
        const double f1 = floor((t1 + pad - g.origin[m]) / g.step[m]);
        if (f1 < double(m0) || f0 > double(m1)) continue;
        if (f0 > double(m0)) m0 = int64_t(f0);
        if (f1 < double(m1)) m1 = int64_t(f1);
      }
      Vec3 p;
      int64_t idx[3];
      idx[u] = iu;
      idx[v] = iv;
      for (int64_t im = m0; im <= m1; ++im) {
        idx[m] = im;
        p.x = g.origin[0] + float(idx[0]) * g.step[0];
        p.y = g.origin[1] + float(idx[1]) * g.step[1];
        p.z = g.origin[2] + float(idx[2]) * g.step[2];
        const float d2 = point_triangle_dist2(p, a, b, c);
        if (d2 < band2) store(idx[0] * sn[0] + idx[1] * sn[1] + idx[2] * sn[2], sqrtf(d2));
      }
    }
  }
}

// Bounding volume hierarchy over triangles for closest-point queries. Nodes are stored depth first: a node's
// left child follows it, `right` indexes the right child; a leaf holds triangles [first, first + count) of the
// permuted triangle order.
//
// Besides its box, a node bounds its triangles by a cylinder (a thin disk on a smooth surface): centre, unit axis,
// lateral radius and half height. A box is a loose bound for a tilted patch: its corners reach up to half its
// size toward a far query point, so every node within that margin of the query's sphere is opened, ~10 d / size
// leaves at distance d. The disk is as tight as the patch is flat, so far queries open a few leaves.
struct BvhNode {
  float lo[3], hi[3];
  int32_t right;  // inner: index of the right child; leaf: -1
  int32_t first, count;
  float center[3], axis[3];
  float radius, half_height;  // INFINITY: no disk bound for this node
};

FK_UDF_HD float box_dist2(const BvhNode& n, Vec3 p) {
  float d2 = 0.f;
  for (int ax = 0; ax < 3; ++ax) {
    const float q = axis(p, ax);
    const float e = q < n.lo[ax] ? n.lo[ax] - q : (q > n.hi[ax] ? q - n.hi[ax] : 0.f);
    d2 += e * e;
  }
  return d2;
}

// A lower bound on the squared distance from p to the node's triangles: the larger of the box and disk bounds.
// `best` skips the disk when the box already rules the node out.
FK_UDF_HD float node_dist2(const BvhNode& n, Vec3 p, float best) {
  const float b2 = box_dist2(n, p);
  if (b2 >= best || !(n.radius < INFINITY)) return b2;
  const Vec3 r = p - Vec3{n.center[0], n.center[1], n.center[2]};
  const Vec3 ax{n.axis[0], n.axis[1], n.axis[2]};
  const float along = dot(r, ax);
  const float lateral2 = fmaxf(dot(r, r) - along * along, 0.f);
  const float da = fmaxf(fabsf(along) - n.half_height, 0.f);
  const float dr = fmaxf(sqrtf(lateral2) - n.radius, 0.f);
  return fmaxf(b2, da * da + dr * dr);
}

// Squared distance from p to the nearest triangle (tri: 9 floats per triangle in BVH order), at most `bound2`
// (the search starts with that bound: pass INFINITY for an exact answer anywhere). A fixed stack: depth is
// bounded by the builder (leaves split at the median, so depth <= log2(triangles) + 1 < 64).
FK_UDF_HD float closest_dist2(const BvhNode* nodes, const float* tri, Vec3 p, float bound2) {
  int32_t stack[64];
  int top = 0;
  float best = bound2;
  int32_t node = 0;
  while (true) {
    const BvhNode& n = nodes[node];
    if (n.right < 0) {
      for (int32_t t = n.first; t < n.first + n.count; ++t) {
        const float* v = tri + 9 * int64_t(t);
        best = fminf(best, point_triangle_dist2(p, {v[0], v[1], v[2]}, {v[3], v[4], v[5]}, {v[6], v[7], v[8]}));
      }
    } else {
      // Visit the nearer child first; push the farther one only if it can still hold something nearer.
      int32_t near_child = node + 1, far_child = n.right;
      float dn = node_dist2(nodes[near_child], p, best), df = node_dist2(nodes[far_child], p, best);
      if (df < dn) {
        const int32_t t = near_child; near_child = far_child; far_child = t;
        const float f = dn; dn = df; df = f;
      }
      if (df < best && top < 64) stack[top++] = far_child;
      if (dn < best) {
        node = near_child;
        continue;
      }
    }
    // Pop until a node that may still be nearer than the best so far.
    bool found = false;
    while (top > 0) {
      node = stack[--top];
      if (node_dist2(nodes[node], p, best) < best) {
        found = true;
        break;
      }
    }
    if (!found) return best;
  }
}

}  // namespace udf
}  // namespace fk
