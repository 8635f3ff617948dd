// CUDA driver of the linear BVH (lbvh_core.h): keys (one thread per triangle), the radix tree (one thread per
// internal node), ropes, leaf boxes and the bottom-up box pass (one thread per leaf: the second child to arrive
// at a node, told by an atomic counter, merges both boxes and climbs on), and the queries (one thread per point).
// Everything is queued on the caller's stream; nothing is read back.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "distance/lbvh_api.h"
#include "distance/lbvh_core.h"

namespace fk {
namespace {

using udf::LbvhNode;
using udf::Vec3;

constexpr int kThreads = 256;
constexpr int kMinBlocks = 4;  // 1024 threads per SM: half of sm_80 / sm_90, <= 64 registers each

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("point queries (CUDA) ") + what + ": " + cudaGetErrorString(err));
}

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  if (b > int64_t(0x7fffffff)) throw std::invalid_argument("too many items for one launch");
  return unsigned(b > 0 ? b : 1);
}

__device__ Vec3 corner(const float* verts, const int64_t* faces, int64_t f, int c) {
  const float* v = verts + 3 * faces[3 * f + c];
  return {v[0], v[1], v[2]};
}

__global__ void __launch_bounds__(kThreads, kMinBlocks)
    keys_kernel(const float* verts, const int64_t* faces, int64_t n, const float* scene, int64_t* keys) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t < n) keys[t] = udf::lbvh_key(corner(verts, faces, t, 0), corner(verts, faces, t, 1),
                                     corner(verts, faces, t, 2), scene, t);
}

__global__ void __launch_bounds__(kThreads, kMinBlocks)
    internal_kernel(const int64_t* keys, int64_t n, LbvhNode* nodes, int32_t* after, int32_t* parent) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n - 1) return;
  const udf::LbvhSplit s = udf::lbvh_split(keys, n, i);
  nodes[i].left = s.left;
  nodes[i].right = s.right;
  nodes[i].rope = int32_t(s.last);  // the last leaf, until every `after` is written
  parent[s.left] = int32_t(i);
  parent[s.right] = int32_t(i);
  after[s.split] = s.right;
}

__device__ void load_box(const LbvhNode* nd, float* lo, float* hi) {
  // L2 loads: the box may have been written by another block since this SM last cached the line
  lo[0] = __ldcg(&nd->lo[0]);
  lo[1] = __ldcg(&nd->lo[1]);
  lo[2] = __ldcg(&nd->lo[2]);
  hi[0] = __ldcg(&nd->hi[0]);
  hi[1] = __ldcg(&nd->hi[1]);
  hi[2] = __ldcg(&nd->hi[2]);
}

__global__ void __launch_bounds__(kThreads, kMinBlocks)
    leaf_kernel(const float* verts, const int64_t* faces, const int64_t* keys, int64_t n, LbvhNode* nodes,
                const int32_t* after, const int32_t* parent, int32_t* arrived) {
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (k >= n) return;
  if (k < n - 1) nodes[k].rope = udf::lbvh_rope(after, n, nodes[k].rope);
  LbvhNode* leaf = nodes + (n - 1 + k);
  const int64_t t = udf::key_triangle(keys[k]);
  const Vec3 a = corner(verts, faces, t, 0), b = corner(verts, faces, t, 1), c = corner(verts, faces, t, 2);
  float lo[3] = {fminf(a.x, fminf(b.x, c.x)), fminf(a.y, fminf(b.y, c.y)), fminf(a.z, fminf(b.z, c.z))};
  float hi[3] = {fmaxf(a.x, fmaxf(b.x, c.x)), fmaxf(a.y, fmaxf(b.y, c.y)), fmaxf(a.z, fmaxf(b.z, c.z))};
#pragma unroll
  for (int ax = 0; ax < 3; ++ax) {
    leaf->lo[ax] = lo[ax];
    leaf->hi[ax] = hi[ax];
  }
  leaf->left = int32_t(t);
  leaf->right = -1;
  leaf->rope = udf::lbvh_rope(after, n, k);
  int32_t self = int32_t(n - 1 + k);
  int32_t p = parent[self];
  while (p >= 0) {
    __threadfence();  // this subtree's box is visible before the counter says so
    if (atomicAdd(arrived + p, 1) == 0) return;
    const int32_t other = nodes[p].left == self ? nodes[p].right : nodes[p].left;
    float olo[3], ohi[3];
    load_box(nodes + other, olo, ohi);
#pragma unroll
    for (int ax = 0; ax < 3; ++ax) {
      lo[ax] = fminf(lo[ax], olo[ax]);
      hi[ax] = fmaxf(hi[ax], ohi[ax]);
      nodes[p].lo[ax] = lo[ax];
      nodes[p].hi[ax] = hi[ax];
    }
    self = p;
    p = parent[p];
  }
}

__global__ void __launch_bounds__(kThreads, kMinBlocks)
    query_kernel(const LbvhNode* nodes, const float* verts, const int64_t* faces, int64_t n, const float* points,
                 int64_t num_points, const int64_t* order, const uint8_t* mask, float* dist, int64_t* tri) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= num_points) return;
  const int64_t q = order ? order[i] : i;
  if (mask && !mask[q]) return;
  udf::Closest c{INFINITY, -1};
  if (n > 0) c = udf::lbvh_closest(nodes, n, verts, faces, {points[3 * q], points[3 * q + 1], points[3 * q + 2]},
                                   INFINITY);
  dist[q] = sqrtf(c.d2);
  if (tri) tri[q] = c.tri;
}

}  // namespace

void lbvh_keys_cuda(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t scene, uintptr_t keys,
                    uintptr_t stream) {
  if (num_faces <= 0) return;
  keys_kernel<<<blocks_for(num_faces), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const float*>(verts), reinterpret_cast<const int64_t*>(faces), num_faces,
      reinterpret_cast<const float*>(scene), reinterpret_cast<int64_t*>(keys));
  check(cudaGetLastError(), "keys");
}

void lbvh_build_cuda(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t sorted_keys, uintptr_t nodes,
                     uintptr_t scratch, uintptr_t stream) {
  const int64_t n = num_faces;
  if (n <= 0) return;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t* keys = reinterpret_cast<const int64_t*>(sorted_keys);
  LbvhNode* nd = reinterpret_cast<LbvhNode*>(nodes);
  int32_t* after = reinterpret_cast<int32_t*>(scratch);
  int32_t* parent = after + n;
  int32_t* arrived = parent + 2 * n - 1;
  check(cudaMemsetAsync(parent, 0xff, sizeof(int32_t) * size_t(2 * n - 1), s), "parent fill");  // -1
  check(cudaMemsetAsync(arrived, 0, sizeof(int32_t) * size_t(n), s), "counter fill");
  if (n > 1) {
    internal_kernel<<<blocks_for(n - 1), kThreads, 0, s>>>(keys, n, nd, after, parent);
    check(cudaGetLastError(), "tree");
  }
  leaf_kernel<<<blocks_for(n), kThreads, 0, s>>>(reinterpret_cast<const float*>(verts),
                                                 reinterpret_cast<const int64_t*>(faces), keys, n, nd, after,
                                                 parent, arrived);
  check(cudaGetLastError(), "boxes");
}

void lbvh_query_cuda(uintptr_t nodes, uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
                     int64_t num_points, uintptr_t order, uintptr_t mask, uintptr_t out_dist, uintptr_t out_tri,
                     uintptr_t stream) {
  if (num_points <= 0) return;
  query_kernel<<<blocks_for(num_points), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const LbvhNode*>(nodes), reinterpret_cast<const float*>(verts),
      reinterpret_cast<const int64_t*>(faces), num_faces, reinterpret_cast<const float*>(points), num_points,
      reinterpret_cast<const int64_t*>(order), reinterpret_cast<const uint8_t*>(mask),
      reinterpret_cast<float*>(out_dist), reinterpret_cast<int64_t*>(out_tri));
  check(cudaGetLastError(), "query");
}

}  // namespace fk
