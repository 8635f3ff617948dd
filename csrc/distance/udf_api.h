// Unsigned-distance drivers exported to the Python bindings. Memory for inputs and outputs is the caller's
// (torch tensors passed as integer pointers, C-contiguous); verts float32 [V, 3], faces int64 [F, 3].
#pragma once
#include <cstdint>

namespace fk {

struct UdfGridDesc {
  double origin[3];
  double step[3];
  int64_t shape[3];
};

// out[i, j, k] = distance from grid point (i, j, k) to the mesh where that is < band, else band (fp32, C order).
void udf_band_grid_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                       const UdfGridDesc& grid, double band, uintptr_t out, int num_threads);

// out[p] = distance from points[p] (float32 [P, 3]) to the nearest triangle of the mesh (exact, fp32).
void udf_points_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
                    int64_t num_points, uintptr_t out, int num_threads);

}  // namespace fk
