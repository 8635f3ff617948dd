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

// Angle-weighted vertex normals (float64 [V, 3]) and, per face edge in slot-major order ([3F]: edges (f0, f1),
// then (f1, f2), then (f2, f0)), its length if both ends are sharp by Hunyuan3D's rule, else 0.
void mesh_sharp_weights_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                            double cos_threshold, uintptr_t vertex_normals, uintptr_t edge_weights,
                            int num_threads);

// A plain OBJ file (v lines %.9g, then 1-based f lines) of verts float64 [V, 3], faces int64 [F, 3].
void mesh_write_obj_cpu(const std::string& path, uintptr_t verts, int64_t num_verts, uintptr_t faces,
                        int64_t num_faces, int num_threads);

}  // namespace fk
