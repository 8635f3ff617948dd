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
    // (three calls, no array of edges: an indexed array would live in local memory on a GPU)
    auto seg = [p](V e0, V e1) {
      const V d = e1 - e0, r = p - e0;
      const T len2 = dot(d, d);
      T t = len2 > T(0) ? dot(r, d) / len2 : T(0);
      t = t < T(0) ? T(0) : (t > T(1) ? T(1) : t);
      const V q = r - t * d;
      return dot(q, q);
    };
    const T dab = seg(a, b), dbc = seg(b, c), dca = seg(c, a), dap = dot(ap, ap);
    T best = dap < dab ? dap : dab;
    best = dbc < best ? dbc : best;
    return dca < best ? dca : best;
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
// relative to the result, grows as the triangle thins (a random soup's needles were off by 4x in float). Used by
// the point queries; the grid walk has the triangle's double normal at hand and takes thin_triangle_dist2.
FK_UDF_HD float point_triangle_dist2(Vec3 p, Vec3 a, Vec3 b, Vec3 c) {
  const Vec3 ab = b - a, ac = c - a, bc = c - b, n = cross(ab, ac);
  const float l2 = fmaxf(dot(ab, ab), fmaxf(dot(ac, ac), dot(bc, bc)));
  if (dot(n, n) >= 1e-2f * l2 * l2) return point_triangle_dist2_t(p, a, b, c);
  // In double from a's frame: the float differences are within an ulp of the exact ones (a ~1e-8 move of the
  // triangle).
  const Vec3 ap = p - a;
  const DVec3 o{0.0, 0.0, 0.0};
  return float(point_triangle_dist2_t(DVec3{ap.x, ap.y, ap.z}, o, DVec3{ab.x, ab.y, ab.z}, DVec3{ac.x, ac.y, ac.z}));
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

// Squared distance to a thin triangle in float, given its unit normal computed in double (the grid walk has it):
// the nearest of its edges (segment distances are well conditioned however thin the triangle), or its plane
// where p projects inside (edge functions against the accurate normal). The Voronoi-region form's barycentrics
// are differences of products that cancel for a thin triangle (up to 4x off in float); this form is as accurate
// as float allows, and needs no double arithmetic per point (the CUDA scatter kernel has no registers for it).
FK_UDF_HD float thin_triangle_dist2(Vec3 p, Vec3 a, Vec3 b, Vec3 c, Vec3 nhat) {
  auto seg = [p](Vec3 e0, Vec3 e1) {
    const Vec3 d = e1 - e0, r = p - e0;
    const float len2 = dot(d, d);
    float t = len2 > 0.f ? dot(r, d) / len2 : 0.f;
    t = t < 0.f ? 0.f : (t > 1.f ? 1.f : t);
    const Vec3 q = r - t * d;
    return dot(q, q);
  };
  const float de = fminf(seg(a, b), fminf(seg(b, c), seg(c, a)));
  const Vec3 ap = p - a;
  const bool inside = dot(cross(b - a, ap), nhat) >= 0.f && dot(cross(c - b, p - b), nhat) >= 0.f &&
                      dot(cross(a - c, p - c), nhat) >= 0.f && dot(nhat, nhat) > 0.f;
  if (!inside) return de;
  const float h = dot(ap, nhat);
  return fminf(h * h, de);
}

// One triangle's walk over the grid: the grid points of its bounding box grown by `band`, as columns along axis m
// (the largest normal component, so a column crosses the plane's slab in the fewest points) indexed by (iu, iv).
// `setup_triangle` fills it once; `scatter_column` handles one column. The CPU driver walks all columns of a
// triangle in one thread; the CUDA driver splits the column rectangle into tiles of kTile x kTile columns, one
// thread per column (`scatter_tile`), so a large triangle is spread over many blocks.
struct TriWalk {
  Vec3 a, b, c;
  float band, band2;
  int m, u, v;
  // Everything per axis is kept for the column axes (u, v) and m by name, not in arrays indexed by m / u / v:
  // on a GPU such an array would live in local memory.
  int64_t lo_u, hi_u, lo_v, hi_v, lo_m, hi_m;  // index ranges (bounding box grown by band)
  int64_t str_u, str_v, str_m;                 // grid strides
  float org_u, org_v, org_m, step_u, step_v, step_m;
  float blo_u, bhi_u, blo_v, bhi_v, blo_m, bhi_m;  // the triangle's own box
  bool use_slab;
  double nrm_u, nrm_v, nrm_m, plane, half;
  bool thin;   // twice the area below 0.1 x the longest edge squared: measured by thin_triangle_dist2
  Vec3 nhat;   // unit normal (from the double normal; 0 for a degenerate triangle)
};

constexpr int kTile = 8;  // columns per tile side: 64 columns, one per thread of a CUDA block

template <typename A>
FK_UDF_HD A pick(A x0, A x1, A x2, int k) { return k == 0 ? x0 : (k == 1 ? x1 : x2); }

// False when the triangle reaches no grid point in x [x_lo, x_hi) (a CPU thread owns such a slab of the grid, so
// it writes without atomics; the CUDA driver passes the whole grid).
FK_UDF_HD bool setup_triangle(const Grid& g, Vec3 a, Vec3 b, Vec3 c, float band, int64_t x_lo, int64_t x_hi,
                              TriWalk& w) {
  w.a = a;
  w.b = b;
  w.c = c;
  w.band = band;
  w.band2 = band * band;
  int64_t lo[3], hi[3];
  float blo[3], bhi[3];
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int ax = 0; ax < 3; ++ax) {
    blo[ax] = fminf(axis(a, ax), fminf(axis(b, ax), axis(c, ax)));
    bhi[ax] = fmaxf(axis(a, ax), fmaxf(axis(b, ax), axis(c, ax)));
    const float mn = blo[ax] - band, mx = bhi[ax] + band;
    const float s = g.step[ax], o = g.origin[ax];
    if (!(s > 0.f)) {  // a single plane along this axis
      lo[ax] = 0;
      hi[ax] = g.n[ax] - 1;
      continue;
    }
    const float tl = ceilf((mn - o) / s), th = floorf((mx - o) / s);
    if (th < 0.f || tl > float(g.n[ax] - 1) || !(tl <= th)) return false;
    lo[ax] = clamp_index(tl, g.n[ax]);
    hi[ax] = clamp_index(th, g.n[ax]);
  }
  if (lo[0] < x_lo) lo[0] = x_lo;
  if (hi[0] > x_hi - 1) hi[0] = x_hi - 1;
  if (lo[0] > hi[0]) return false;

  // Column axis m: the largest normal component, so a column crosses the plane's slab in the fewest points.
  // The plane is set up in double (once per triangle, used once per column) so that its rounding cannot drop a
  // point: in float the normal of a thin triangle is mostly rounding.
  const double ab0 = double(b.x) - a.x, ab1 = double(b.y) - a.y, ab2 = double(b.z) - a.z;
  const double ac0 = double(c.x) - a.x, ac1 = double(c.y) - a.y, ac2 = double(c.z) - a.z;
  const double n0 = ab1 * ac2 - ab2 * ac1, n1 = ab2 * ac0 - ab0 * ac2, n2 = ab0 * ac1 - ab1 * ac0;
  const double anx = fabs(n0), any = fabs(n1), anz = fabs(n2);
  const int m = (anx >= any && anx >= anz) ? 0 : (any >= anz ? 1 : 2);
  const int u = m == 0 ? 1 : 0, v = m == 2 ? 1 : 2;
  w.m = m;
  w.u = u;
  w.v = v;
  w.lo_u = pick(lo[0], lo[1], lo[2], u);
  w.hi_u = pick(hi[0], hi[1], hi[2], u);
  w.lo_v = pick(lo[0], lo[1], lo[2], v);
  w.hi_v = pick(hi[0], hi[1], hi[2], v);
  w.lo_m = pick(lo[0], lo[1], lo[2], m);
  w.hi_m = pick(hi[0], hi[1], hi[2], m);
  const int64_t sx = g.n[1] * g.n[2], sy = g.n[2];
  w.str_u = pick(sx, sy, int64_t(1), u);
  w.str_v = pick(sx, sy, int64_t(1), v);
  w.str_m = pick(sx, sy, int64_t(1), m);
  w.org_u = pick(g.origin[0], g.origin[1], g.origin[2], u);
  w.org_v = pick(g.origin[0], g.origin[1], g.origin[2], v);
  w.org_m = pick(g.origin[0], g.origin[1], g.origin[2], m);
  w.step_u = pick(g.step[0], g.step[1], g.step[2], u);
  w.step_v = pick(g.step[0], g.step[1], g.step[2], v);
  w.step_m = pick(g.step[0], g.step[1], g.step[2], m);
  w.blo_u = pick(blo[0], blo[1], blo[2], u);
  w.bhi_u = pick(bhi[0], bhi[1], bhi[2], u);
  w.blo_v = pick(blo[0], blo[1], blo[2], v);
  w.bhi_v = pick(bhi[0], bhi[1], bhi[2], v);
  w.blo_m = pick(blo[0], blo[1], blo[2], m);
  w.bhi_m = pick(bhi[0], bhi[1], bhi[2], m);
  w.nrm_u = pick(n0, n1, n2, u);
  w.nrm_v = pick(n0, n1, n2, v);
  w.nrm_m = pick(n0, n1, n2, m);
  const double nlen = sqrt(n0 * n0 + n1 * n1 + n2 * n2);
  const double lab2 = ab0 * ab0 + ab1 * ab1 + ab2 * ab2, lac2 = ac0 * ac0 + ac1 * ac1 + ac2 * ac2;
  // The slab test only where the plane is well defined (sine of the corner angle above 1e-6).
  w.use_slab = nlen * nlen > 1e-12 * lab2 * lac2 && w.step_m > 0.f;
  w.plane = n0 * a.x + n1 * a.y + n2 * a.z;
  w.half = double(band) * nlen;
  const Vec3 bc = c - b;
  const double l2 = fmax(lab2, fmax(lac2, double(dot(bc, bc))));
  w.thin = nlen * nlen < 1e-2 * l2 * l2;
  const double inv = nlen > 0.0 ? 1.0 / nlen : 0.0;
  w.nhat = Vec3{float(n0 * inv), float(n1 * inv), float(n2 * inv)};
  return true;
}

// Points m0..m1 of a column at (pu, pv): the distance and `store` where it is below band.
template <bool kThin, typename Store>
FK_UDF_HD void scatter_run(const TriWalk& w, float pu, float pv, int64_t m0, int64_t m1, int64_t base,
                           Store&& store) {
  for (int64_t im = m0; im <= m1; ++im) {
    const float pm = w.org_m + float(im) * w.step_m;
    const Vec3 p{w.u == 0 ? pu : (w.v == 0 ? pv : pm), w.u == 1 ? pu : (w.v == 1 ? pv : pm),
                 w.u == 2 ? pu : (w.v == 2 ? pv : pm)};
    const float d2 = kThin ? thin_triangle_dist2(p, w.a, w.b, w.c, w.nhat) : point_triangle_dist2_t(p, w.a, w.b, w.c);
    if (d2 < w.band2) store(base + im * w.str_m, sqrtf(d2));
  }
}

// Column (iu, iv) of the walk: `store(index, d)` for its grid points within `band` of the triangle, d the exact
// distance (stored as distances: squared ones would lose the fp32 grid's range).
template <typename Store>
FK_UDF_HD void scatter_column(const TriWalk& w, int64_t iu, int64_t iv, Store&& store) {
  const float pu = w.org_u + float(iu) * w.step_u;
  const float du = pu < w.blo_u ? w.blo_u - pu : (pu > w.bhi_u ? pu - w.bhi_u : 0.f);
  const float pv = w.org_v + float(iv) * w.step_v;
  const float dv = pv < w.blo_v ? w.blo_v - pv : (pv > w.bhi_v ? pv - w.bhi_v : 0.f);
  // Points within `band` of the triangle lie within `band` of its box: a column passing the box at distance r
  // needs only the run within sqrt(band^2 - r^2) of the box along m. For the small triangles of scanned meshes
  // this halves the points visited (a ball instead of its bounding cube).
  const float rest2 = w.band2 - du * du - dv * dv;
  if (rest2 < 0.f) return;
  int64_t m0 = w.lo_m, m1 = w.hi_m;
  if (w.step_m > 0.f) {
    const float reach = sqrtf(rest2) + 1e-3f * w.step_m;
    const float f0 = ceilf((w.blo_m - reach - w.org_m) / w.step_m);
    const float f1 = floorf((w.bhi_m + reach - w.org_m) / w.step_m);
    if (f1 < float(m0) || f0 > float(m1)) return;
    if (f0 > float(m0)) m0 = int64_t(f0);
    if (f1 < float(m1)) m1 = int64_t(f1);
  }
  if (w.use_slab) {
    // |nrm . p - plane| <= band |nrm| along the column, widened by a hair so rounding never drops a point.
    const double rest = w.plane - w.nrm_u * double(pu) - w.nrm_v * double(pv);
    double t0 = (rest - w.half) / w.nrm_m, t1 = (rest + w.half) / w.nrm_m;
    if (t0 > t1) {
      const double t = t0;
      t0 = t1;
      t1 = t;
    }
    const double pad = 1e-3 * w.step_m;
    const double f0 = ceil((t0 - pad - w.org_m) / w.step_m);
    const double f1 = floor((t1 + pad - w.org_m) / w.step_m);
    if (f1 < double(m0) || f0 > double(m1)) return;
    if (f0 > double(m0)) m0 = int64_t(f0);
    if (f1 < double(m1)) m1 = int64_t(f1);
  }
  // one loop per kind of triangle (not a test per point): the registers needed are the larger of the two
  if (w.thin) scatter_run<true>(w, pu, pv, m0, m1, iu * w.str_u + iv * w.str_v, store);
  else scatter_run<false>(w, pu, pv, m0, m1, iu * w.str_u + iv * w.str_v, store);
}

// Scatter one triangle into the grid, x indices in [x_lo, x_hi) only: every column in one thread (CPU driver).
template <typename Store>
FK_UDF_HD void scatter_triangle(const Grid& g, Vec3 a, Vec3 b, Vec3 c, float band, int64_t x_lo, int64_t x_hi,
                                Store&& store) {
  TriWalk w;
  if (!setup_triangle(g, a, b, c, band, x_lo, x_hi, w)) return;
  for (int64_t iu = w.lo_u; iu <= w.hi_u; ++iu)
    for (int64_t iv = w.lo_v; iv <= w.hi_v; ++iv) scatter_column(w, iu, iv, store);
}

// Tiles of kTile x kTile columns covering the walk's (u, v) rectangle (0 when it misses the grid).
FK_UDF_HD int64_t tile_count(const TriWalk& w) {
  const int64_t nu = (w.hi_u - w.lo_u) / kTile + 1, nv = (w.hi_v - w.lo_v) / kTile + 1;
  return nu * nv;
}

// Column `lane` (0 .. kTile^2 - 1) of tile `tile` of the walk: scatter it if it lies in the rectangle.
template <typename Store>
FK_UDF_HD void scatter_tile(const TriWalk& w, int64_t tile, int lane, Store&& store) {
  const int64_t nv = (w.hi_v - w.lo_v) / kTile + 1;
  const int64_t iu = w.lo_u + (tile / nv) * kTile + lane / kTile;
  const int64_t iv = w.lo_v + (tile % nv) * kTile + lane % kTile;
  if (iu <= w.hi_u && iv <= w.hi_v) scatter_column(w, iu, iv, store);
}

// The triangle owning global tile t: tile_start is the exclusive prefix sum of the triangles' tile counts
// (non-decreasing, tile_start[0] = 0); the last triangle whose start is <= t (binary search).
FK_UDF_HD int64_t tile_owner(const int64_t* tile_start, int64_t num_tris, int64_t t) {
  int64_t lo = 0, hi = num_tris - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (tile_start[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// atomicMin on the float bits is a min on the distances: non-negative IEEE floats order as their bit patterns.
FK_UDF_HD uint32_t float_bits(float d) {
  union {
    float f;
    uint32_t u;
  } x{d};
  return x.u;
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
