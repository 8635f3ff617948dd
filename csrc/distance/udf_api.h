// Unsigned-distance drivers exported to the Python bindings. Memory for inputs and outputs is the caller's
// (torch tensors passed as integer pointers, C-contiguous); verts float32 [V, 3], faces int64 [F, 3].
#pragma once
#include <cstdint>
#include <string>

namespace fk {

struct UdfGridDesc {
  double origin[3];
  double step[3];
  int64_t shape[3];
};

// out[i, j, k] = distance from grid point (i, j, k) to the mesh where that is < band, else band (fp32, C order).
void udf_band_grid_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                       const UdfGridDesc& grid, double band, uintptr_t out, int num_threads);

// The same grid on a CUDA device (verts, faces, out: device memory; scratch: udf_band_grid_scratch_bytes_cuda
// bytes of device memory), queued on `stream`: bit-identical to the CPU grid (a minimum does not depend on order).
int64_t udf_band_grid_scratch_bytes_cuda(int64_t num_faces);
void udf_band_grid_cuda(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                        const UdfGridDesc& grid, double band, uintptr_t out, uintptr_t scratch, int64_t scratch_bytes,
                        uintptr_t stream);

// The CUDA driver's decomposition run on the CPU (test driver): per-triangle tile counts, their exclusive scan,
// every tile's owner by binary search, one call per (tile, lane), the minimum kept on the float bits as
// atomicMin does, tiles taken in reverse order.
void udf_band_grid_tiles_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                             const UdfGridDesc& grid, double band, uintptr_t out);

// out[p] = distance from points[p] (float32 [P, 3]) to the nearest triangle of the mesh (exact, fp32).
void udf_points_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
                    int64_t num_points, uintptr_t out, int num_threads);

}  // namespace fk

namespace fk {

// Unit face normals (float64 [F, 3], 0 for a degenerate face) and doubled areas ([F]) of verts float64 [V, 3],
// faces int64 [F, 3] (indices checked by the caller).
void mesh_face_normals_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t normals, uintptr_t area2,
                           int num_threads);

// Hunyuan3D's sharp-edge rule on the mesh as trimesh processes it, in three steps around numpy's arccos.
// Merge: referenced vertices with equal round(v * 1e8) become one (first occurrence, numbered in order of first
// occurrence): merged_faces [F, 3], rep [<= V] (input index of each merged vertex), inv [V] (merged index, -1 if
// unreferenced); returns the merged count.
int64_t mesh_merge_like_trimesh_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                                    uintptr_t merged_faces, uintptr_t rep, uintptr_t inv);
// Face pass: trimesh's face normals [F, 3] (0 where invalid) and the clipped cosines of the corner angles at
// corners 0 and 1 [F, 2] (the caller takes their arccos).
void mesh_trimesh_face_pass_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t normals,
                                uintptr_t cosines, int num_threads);
// From the angles [F, 2]: trimesh's vertex normals [V, 3], and per face edge in slot-major order ([3F]: edges
// (f0, f1), then (f1, f2), then (f2, f0)) whether both ends are sharp (uint8) and its length if so, else 0.
void mesh_trimesh_sharp_cpu(uintptr_t faces, int64_t num_verts, int64_t num_faces, uintptr_t normals,
                            uintptr_t angles, double cos_threshold, uintptr_t vertex_normals, uintptr_t edge_lengths,
                            uintptr_t verts, uintptr_t selected, int num_threads);

// A plain OBJ file (v lines %.9g, then 1-based f lines) of verts float64 [V, 3], faces int64 [F, 3].
void mesh_write_obj_cpu(const std::string& path, uintptr_t verts, int64_t num_verts, uintptr_t faces,
                        int64_t num_faces, int num_threads);

}  // namespace fk
