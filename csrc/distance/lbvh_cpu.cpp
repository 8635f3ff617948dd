// CPU driver of the linear BVH (lbvh_core.h): the passes of the CUDA driver run over the same functions, so a
// test on the CPU checks the tree and the queries the GPU computes (equal bit for bit). The bottom-up box pass
// runs the leaves one after another with plain counters in place of atomics: a node's box is the min / max of
// its children's, which does not depend on which child arrives last.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "distance/lbvh_api.h"
#include "distance/lbvh_core.h"
#include "mc_parallel.h"

namespace fk {
namespace {

using udf::LbvhNode;
using udf::Vec3;

Vec3 corner(const float* verts, const int64_t* faces, int64_t f, int c) {
  const float* v = verts + 3 * faces[3 * f + c];
  return {v[0], v[1], v[2]};
}

}  // namespace

int64_t lbvh_node_bytes() { return int64_t(sizeof(LbvhNode)); }

// after [n], parent [2n - 1], arrival counters [n]: int32 each (the same layout on both drivers)
int64_t lbvh_build_scratch_bytes(int64_t num_faces) { return 4 * (4 * num_faces - 1 > 0 ? 4 * num_faces - 1 : 0); }

void lbvh_keys_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t scene, uintptr_t keys,
                   int num_threads) {
  const float* v = reinterpret_cast<const float*>(verts);
  const int64_t* f = reinterpret_cast<const int64_t*>(faces);
  const float* box = reinterpret_cast<const float*>(scene);
  int64_t* out = reinterpret_cast<int64_t*>(keys);
  parallel::parallel_chunks(num_faces, 1 << 14, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t t = lo; t < hi; ++t)
      out[t] = udf::lbvh_key(corner(v, f, t, 0), corner(v, f, t, 1), corner(v, f, t, 2), box, t);
  });
}

void lbvh_build_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t sorted_keys, uintptr_t nodes,
                    uintptr_t scratch, int num_threads) {
  const int64_t n = num_faces;
  if (n <= 0) return;
  const float* v = reinterpret_cast<const float*>(verts);
  const int64_t* f = reinterpret_cast<const int64_t*>(faces);
  const int64_t* keys = reinterpret_cast<const int64_t*>(sorted_keys);
  LbvhNode* nd = reinterpret_cast<LbvhNode*>(nodes);
  int32_t* after = reinterpret_cast<int32_t*>(scratch);  // [n]
  int32_t* parent = after + n;                           // [2n - 1]
  int32_t* arrived = parent + 2 * n - 1;                 // [n]
  std::fill(parent, parent + 2 * n - 1, -1);
  std::fill(arrived, arrived + n, 0);
  // internal nodes: children, split, and their last leaf (parked in rope until every `after` is known)
  parallel::parallel_chunks(n - 1, 1 << 12, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t i = lo; i < hi; ++i) {
      const udf::LbvhSplit s = udf::lbvh_split(keys, n, i);
      nd[i].left = s.left;
      nd[i].right = s.right;
      nd[i].rope = int32_t(s.last);
      parent[s.left] = int32_t(i);
      parent[s.right] = int32_t(i);
      after[s.split] = s.right;
    }
  });
  parallel::parallel_chunks(n, 1 << 12, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t k = lo; k < hi; ++k) {
      if (k < n - 1) nd[k].rope = udf::lbvh_rope(after, n, nd[k].rope);
      LbvhNode& leaf = nd[n - 1 + k];
      const int64_t t = udf::key_triangle(keys[k]);
      const Vec3 a = corner(v, f, t, 0), b = corner(v, f, t, 1), c = corner(v, f, t, 2);
      leaf.lo[0] = fminf(a.x, fminf(b.x, c.x));
      leaf.lo[1] = fminf(a.y, fminf(b.y, c.y));
      leaf.lo[2] = fminf(a.z, fminf(b.z, c.z));
      leaf.hi[0] = fmaxf(a.x, fmaxf(b.x, c.x));
      leaf.hi[1] = fmaxf(a.y, fmaxf(b.y, c.y));
      leaf.hi[2] = fmaxf(a.z, fmaxf(b.z, c.z));
      leaf.left = int32_t(t);
      leaf.right = -1;
      leaf.rope = udf::lbvh_rope(after, n, k);
    }
  });
  // boxes bottom up: the second child to arrive at a node merges both and goes on to the parent
  for (int64_t k = 0; k < n; ++k) {
    int32_t p = parent[n - 1 + k];
    while (p >= 0 && arrived[p]++ > 0) {
      const LbvhNode &l = nd[nd[p].left], &r = nd[nd[p].right];
      for (int a = 0; a < 3; ++a) {
        nd[p].lo[a] = fminf(l.lo[a], r.lo[a]);
        nd[p].hi[a] = fmaxf(l.hi[a], r.hi[a]);
      }
      p = parent[p];
    }
  }
}

void lbvh_query_cpu(uintptr_t nodes, uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
                    int64_t num_points, uintptr_t order, uintptr_t mask, uintptr_t out_dist, uintptr_t out_tri,
                    int num_threads) {
  const LbvhNode* nd = reinterpret_cast<const LbvhNode*>(nodes);
  const float* v = reinterpret_cast<const float*>(verts);
  const int64_t* f = reinterpret_cast<const int64_t*>(faces);
  const float* pts = reinterpret_cast<const float*>(points);
  const int64_t* ord = reinterpret_cast<const int64_t*>(order);
  const uint8_t* msk = reinterpret_cast<const uint8_t*>(mask);
  float* dist = reinterpret_cast<float*>(out_dist);
  int64_t* tri = reinterpret_cast<int64_t*>(out_tri);
  parallel::parallel_chunks(num_points, 1024, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t q = ord ? ord[i] : i;
      if (msk && !msk[q]) continue;
      udf::Closest c{INFINITY, -1};
      if (num_faces > 0)
        c = udf::lbvh_closest(nd, num_faces, v, f, {pts[3 * q], pts[3 * q + 1], pts[3 * q + 2]}, INFINITY);
      dist[q] = std::sqrt(c.d2);
      if (tri) tri[q] = c.tri;
    }
  });
}

}  // namespace fk
