// Point queries on a triangle mesh for the GPU: a linear BVH (Karras' radix-tree construction over Morton
// codes), built in parallel on the device from sorted keys and traversed without a stack. Written once as
// __host__ __device__ functions: the CUDA driver (lbvh_cuda.cu) and a CPU driver (lbvh_cpu.cpp, used by tests
// and by CPU tensors that ask for this structure) run the same code, so their trees and answers are equal bit
// for bit (a box is a min / max of floats, a distance the same float operations on both: --fmad=false and
// -ffp-contract=off).
//
// Layout (n triangles, 2n - 1 nodes): internal nodes 0 .. n - 2 (node 0 is the root), leaf k (the k-th triangle
// in key order) at n - 1 + k. A triangle's key is its centroid's 30-bit Morton code (in the box of all
// centroids) above its 31-bit index, so keys are distinct and sorting them gives a deterministic order.
// Traversal is stackless: every node holds a rope, the node visited next when its subtree is skipped or done
// (a stack in a GPU thread lives in local memory). The rope of a subtree ending at leaf l is the right child of
// the node splitting leaves l and l + 1.
#pragma once
#include "distance/udf_core.h"

namespace fk {
namespace udf {

struct LbvhNode {
  float lo[3], hi[3];
  int32_t left, right;  // children (node ids); a leaf: left = its triangle's index, right = -1
  int32_t rope;         // the next node once this subtree is skipped or done; -1: the traversal ends
};

constexpr int32_t kEnd = -1;
constexpr int kKeyIndexBits = 31;

FK_UDF_HD uint32_t spread_bits10(uint32_t v) {  // 10 bits -> every third bit of 30
  v &= 0x3ffu;
  v = (v | (v << 16)) & 0x030000ffu;
  v = (v | (v << 8)) & 0x0300f00fu;
  v = (v | (v << 4)) & 0x030c30c3u;
  v = (v | (v << 2)) & 0x09249249u;
  return v;
}

FK_UDF_HD uint32_t morton_cell(float x, float lo, float hi) {
  const float span = hi - lo;
  const float t = span > 0.f ? (x - lo) / span * 1024.f : 0.f;
  return t > 0.f ? (t < 1023.f ? uint32_t(t) : 1023u) : 0u;  // NaN -> 0
}

// Key of triangle `index` with corners a, b, c; scene: lo[3], hi[3] of all centroids.
FK_UDF_HD int64_t lbvh_key(Vec3 a, Vec3 b, Vec3 c, const float* scene, int64_t index) {
  const float third = 1.f / 3.f;
  const Vec3 m = third * (a + b + c);
  const uint32_t code = (spread_bits10(morton_cell(m.x, scene[0], scene[3])) << 2) |
                        (spread_bits10(morton_cell(m.y, scene[1], scene[4])) << 1) |
                        spread_bits10(morton_cell(m.z, scene[2], scene[5]));
  return (int64_t(code) << kKeyIndexBits) | index;
}

FK_UDF_HD int32_t key_triangle(int64_t key) { return int32_t(key & ((int64_t(1) << kKeyIndexBits) - 1)); }

FK_UDF_HD int clz64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __clzll(static_cast<long long>(x));
#else
  return x == 0 ? 64 : __builtin_clzll(x);
#endif
}

// Length of the common prefix of keys i and j (distinct keys), -1 when j is outside [0, n).
FK_UDF_HD int prefix(const int64_t* keys, int64_t n, int64_t i, int64_t j) {
  if (j < 0 || j >= n) return -1;
  return clz64(uint64_t(keys[i] ^ keys[j]));
}

// Internal node i (0 <= i < n - 1) of the radix tree over the sorted keys (Karras 2012): its leaf range
// [first, last], its split (leaves first .. split go left) and its children's ids.
struct LbvhSplit {
  int64_t first, last, split;
  int32_t left, right;
};

FK_UDF_HD LbvhSplit lbvh_split(const int64_t* keys, int64_t n, int64_t i) {
  const int d = prefix(keys, n, i, i + 1) > prefix(keys, n, i, i - 1) ? 1 : -1;
  const int dmin = prefix(keys, n, i, i - d);
  int64_t lmax = 2;
  while (prefix(keys, n, i, i + lmax * d) > dmin) lmax *= 2;
  int64_t len = 0;
  for (int64_t t = lmax / 2; t >= 1; t /= 2)
    if (prefix(keys, n, i, i + (len + t) * d) > dmin) len += t;
  const int64_t j = i + len * d;
  const int dnode = prefix(keys, n, i, j);
  int64_t s = 0, step = len;  // the largest s < len whose key still shares more than dnode bits with key i
  do {
    step = (step + 1) / 2;
    if (s + step < len && prefix(keys, n, i, i + (s + step) * d) > dnode) s += step;
  } while (step > 1);
  LbvhSplit out;
  out.first = d > 0 ? i : j;
  out.last = d > 0 ? j : i;
  out.split = i + s * d + (d < 0 ? -1 : 0);
  out.left = int32_t(out.first == out.split ? n - 1 + out.split : out.split);
  out.right = int32_t(out.last == out.split + 1 ? n - 1 + out.split + 1 : out.split + 1);
  return out;
}

// Rope of a subtree whose leaves end at `last`: after[s] is the right child of the node splitting at s.
FK_UDF_HD int32_t lbvh_rope(const int32_t* after, int64_t n, int64_t last) {
  return last >= n - 1 ? kEnd : after[last];
}

FK_UDF_HD float node_box_dist2(const LbvhNode& nd, Vec3 p) {
  const float ex = p.x < nd.lo[0] ? nd.lo[0] - p.x : (p.x > nd.hi[0] ? p.x - nd.hi[0] : 0.f);
  const float ey = p.y < nd.lo[1] ? nd.lo[1] - p.y : (p.y > nd.hi[1] ? p.y - nd.hi[1] : 0.f);
  const float ez = p.z < nd.lo[2] ? nd.lo[2] - p.z : (p.z > nd.hi[2] ? p.z - nd.hi[2] : 0.f);
  return ex * ex + ey * ey + ez * ez;
}

// A node is skipped only when its box is farther than the best squared distance by more than float rounding
// of the two bounds, so a triangle tied with the best (or within an ulp of it) is always tested: the answer is
// the brute-force minimum, and among equal distances the smallest triangle index.
FK_UDF_HD bool prune(float box2, float best2) { return box2 > best2 * 1.0001f; }

struct Closest {
  float d2;
  int32_t tri;  // -1: no triangle within the bound
};

// Squared distance from p to triangle (a, b, c) with the register budget of a GPU query thread: the
// Voronoi-region form in float, and for thin triangles (the same test as point_triangle_dist2) the grid walk's
// thin_triangle_dist2 with the unit normal from a double cross product. point_triangle_dist2's double
// Voronoi form for thin triangles would take ~20 more registers (the query kernel would spill at half
// occupancy); both forms are as accurate as float allows.
FK_UDF_HD float query_triangle_dist2(Vec3 p, Vec3 a, Vec3 b, Vec3 c) {
  const Vec3 ab = b - a, ac = c - a, bc = c - b, n = cross(ab, ac);
  const float l2 = fmaxf(dot(ab, ab), fmaxf(dot(ac, ac), dot(bc, bc)));
  if (dot(n, n) >= 1e-2f * l2 * l2) return point_triangle_dist2_t(p, a, b, c);
  const double n0 = double(ab.y) * ac.z - double(ab.z) * ac.y, n1 = double(ab.z) * ac.x - double(ab.x) * ac.z,
               n2 = double(ab.x) * ac.y - double(ab.y) * ac.x;
  const double len = sqrt(n0 * n0 + n1 * n1 + n2 * n2);
  const double inv = len > 0.0 ? 1.0 / len : 0.0;
  return thin_triangle_dist2(p, a, b, c, Vec3{float(n0 * inv), float(n1 * inv), float(n2 * inv)});
}

FK_UDF_HD void consider(const float* verts, const int64_t* faces, int32_t t, Vec3 p, Closest& best) {
  const int64_t* f = faces + 3 * t;
  const float* a = verts + 3 * f[0];
  const float* b = verts + 3 * f[1];
  const float* c = verts + 3 * f[2];
  const float d2 = query_triangle_dist2(p, {a[0], a[1], a[2]}, {b[0], b[1], b[2]}, {c[0], c[1], c[2]});
  if (d2 < best.d2 || (d2 == best.d2 && (best.tri < 0 || t < best.tri))) best = {d2, t};
}

// The nearest triangle to p with squared distance <= bound2 (INFINITY: anywhere). A greedy descent to the leaf
// of the nearer box gives a first bound; a rope walk in key order then visits every node that may hold
// something as near.
FK_UDF_HD Closest lbvh_closest(const LbvhNode* nodes, int64_t n, const float* verts, const int64_t* faces, Vec3 p,
                               float bound2) {
  Closest best{bound2, -1};
  int32_t c = 0;
  while (c < n - 1) {
    const LbvhNode& nd = nodes[c];
    c = node_box_dist2(nodes[nd.left], p) <= node_box_dist2(nodes[nd.right], p) ? nd.left : nd.right;
  }
  consider(verts, faces, nodes[c].left, p, best);
  c = 0;
  while (c != kEnd) {
    const LbvhNode& nd = nodes[c];
    if (prune(node_box_dist2(nd, p), best.d2)) {
      c = nd.rope;
    } else if (c >= n - 1) {
      consider(verts, faces, nd.left, p, best);
      c = nd.rope;
    } else {
      c = nd.left;
    }
  }
  return best;
}

}  // namespace udf
}  // namespace fk
