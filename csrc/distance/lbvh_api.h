// Point queries on a triangle mesh through a linear BVH (lbvh_core.h), CPU and CUDA drivers. Memory is the
// caller's (torch tensors passed as integer pointers, C-contiguous): verts float32 [V, 3], faces int64 [F, 3]
// (indices checked by the caller), nodes: 2F - 1 LbvhNode records (lbvh_node_bytes() each).
//
// Build: keys = lbvh_keys(scene = float32 lo[3], hi[3] of the triangles' centroids); the caller sorts them
// ascending (torch.sort); lbvh_build(sorted keys) fills the nodes, with lbvh_build_scratch_bytes(F) bytes of
// scratch. Query: out_dist[q] (float32) and out_tri[q] (int64, may be 0: not written) for every point q =
// order[i] (order may be 0: q = i) whose mask byte is set (mask may be 0: all); the others are left as they
// were. The CUDA functions queue their kernels on `stream` and never synchronise.
#pragma once
#include <cstdint>

namespace fk {

int64_t lbvh_node_bytes();
int64_t lbvh_build_scratch_bytes(int64_t num_faces);

void lbvh_keys_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t scene, uintptr_t keys,
                   int num_threads);
void lbvh_build_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t sorted_keys, uintptr_t nodes,
                    uintptr_t scratch, int num_threads);
void lbvh_query_cpu(uintptr_t nodes, uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
                    int64_t num_points, uintptr_t order, uintptr_t mask, uintptr_t out_dist, uintptr_t out_tri,
                    int num_threads);

void lbvh_keys_cuda(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t scene, uintptr_t keys,
                    uintptr_t stream);
void lbvh_build_cuda(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t sorted_keys, uintptr_t nodes,
                     uintptr_t scratch, uintptr_t stream);
void lbvh_query_cuda(uintptr_t nodes, uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
                     int64_t num_points, uintptr_t order, uintptr_t mask, uintptr_t out_dist, uintptr_t out_tri,
                     uintptr_t stream);

}  // namespace fk
