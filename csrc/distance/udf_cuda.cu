// CUDA driver for the narrow-band distance grid (udf_core.h): every triangle's walk is split into tiles of
// kTile x kTile columns; one block of kTile^2 threads takes a tile at a time, a thread per column, and keeps the
// minimum per grid point with atomicMin on the float bits (distances are >= 0, so their bits order as integers).
// Passes: fill the grid with `band`; count each triangle's tiles; exclusive scan (CUB); scatter the tiles, each
// block finding its tile's triangle by binary search in the scan (no host round trip for the total).
#include <cuda_runtime.h>

#include <cub/device/device_scan.cuh>
#include <stdexcept>
#include <string>

#include "distance/udf_api.h"
#include "distance/udf_core.h"

namespace fk {
namespace {

using udf::Vec3;

constexpr int kFillThreads = 256;
constexpr int kMinFillBlocks = 4;  // 1024 threads per SM: half occupancy
constexpr int kTileThreads = udf::kTile * udf::kTile;
constexpr int kMinTileBlocks = 16;  // 1024 threads per SM: half of sm_80 / sm_90, <= 64 registers each

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("distance grid (CUDA) ") + what + ": " +
                                                   cudaGetErrorString(err));
}

struct DevMesh {
  const float* verts;
  const int64_t* faces;
  __device__ Vec3 corner(int64_t f, int c) const {
    const int64_t v = faces[3 * f + c];
    return {verts[3 * v], verts[3 * v + 1], verts[3 * v + 2]};
  }
};

__global__ void __launch_bounds__(kFillThreads) fill_kernel(uint32_t* grid, int64_t n, uint32_t bits) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    grid[i] = bits;
}

// Sets every triangle's walk up (kept in scratch for the scatter pass) and counts its tiles.
__global__ void __launch_bounds__(kFillThreads, kMinFillBlocks) count_kernel(DevMesh mesh, udf::Grid g, float band, int64_t num_faces,
                                                             int64_t* counts, udf::TriWalk* walks) {
  const int64_t f = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;  // one triangle per thread
  if (f < num_faces) {
    // set up in place: each field goes to memory as it is computed, instead of a whole walk held in registers
    udf::TriWalk& w = walks[f];
    const bool hit = udf::setup_triangle(g, mesh.corner(f, 0), mesh.corner(f, 1), mesh.corner(f, 2), band, 0,
                                         g.n[0], w);
    counts[f] = hit ? udf::tile_count(w) : 0;
  }
}

__global__ void __launch_bounds__(kTileThreads, kMinTileBlocks) scatter_kernel(const udf::TriWalk* walks,
                                                                               int64_t num_faces,
                                                                               const int64_t* counts,
                                                                               const int64_t* start, uint32_t* grid) {
  const int64_t total = start[num_faces - 1] + counts[num_faces - 1];
  // The tile's walk is copied to shared memory once per block; the block's columns read it from there (a walk
  // in every thread's registers would not fit the register budget of half occupancy).
  __shared__ udf::TriWalk walk;
  __shared__ int64_t tile;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    if (threadIdx.x == 0) {
      const int64_t f = udf::tile_owner(start, num_faces, t);
      walk = walks[f];
      tile = t - start[f];
    }
    __syncthreads();
    udf::scatter_tile(walk, tile, int(threadIdx.x),
                      [grid](int64_t idx, float d) { atomicMin(grid + idx, udf::float_bits(d)); });
    __syncthreads();  // every thread has read the walk before the next tile overwrites it
  }
}

size_t scan_temp_bytes(int64_t num_faces) {
  size_t bytes = 0;
  check(cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<const int64_t*>(nullptr),
                                      static_cast<int64_t*>(nullptr), num_faces),
        "scan size");
  return bytes;
}

int64_t align256(int64_t n) { return (n + 255) / 256 * 256; }

}  // namespace

int64_t udf_band_grid_scratch_bytes_cuda(int64_t num_faces) {
  return 2 * align256(8 * num_faces) + align256(int64_t(sizeof(udf::TriWalk)) * num_faces) +
         align256(int64_t(scan_temp_bytes(num_faces)));
}

void udf_band_grid_cuda(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                        const UdfGridDesc& desc, double band, uintptr_t out, uintptr_t scratch,
                        int64_t scratch_bytes, uintptr_t stream) {
  (void)num_verts;  // indices are checked by the caller
  udf::Grid g;
  for (int a = 0; a < 3; ++a) {
    g.origin[a] = float(desc.origin[a]);
    g.step[a] = float(desc.step[a]);
    g.n[a] = desc.shape[a];
  }
  const int64_t total = g.n[0] * g.n[1] * g.n[2];
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  uint32_t* grid = reinterpret_cast<uint32_t*>(out);
  const float fband = float(band);
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "device");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  if (total > 0) {
    const int64_t blocks = std::min<int64_t>((total + kFillThreads - 1) / kFillThreads, int64_t(sms) * 32);
    fill_kernel<<<unsigned(blocks), kFillThreads, 0, s>>>(grid, total, udf::float_bits(fband));
    check(cudaGetLastError(), "fill");
  }
  if (num_faces == 0 || total == 0) return;
  if (scratch_bytes < udf_band_grid_scratch_bytes_cuda(num_faces))
    throw std::invalid_argument("scratch: smaller than udf_band_grid_scratch_bytes_cuda(num_faces)");
  char* base = reinterpret_cast<char*>(scratch);
  int64_t* counts = reinterpret_cast<int64_t*>(base);
  int64_t* start = reinterpret_cast<int64_t*>(base + align256(8 * num_faces));
  udf::TriWalk* walks = reinterpret_cast<udf::TriWalk*>(base + 2 * align256(8 * num_faces));
  void* temp = base + 2 * align256(8 * num_faces) + align256(int64_t(sizeof(udf::TriWalk)) * num_faces);
  size_t temp_bytes = scan_temp_bytes(num_faces);
  const DevMesh mesh{reinterpret_cast<const float*>(verts), reinterpret_cast<const int64_t*>(faces)};
  const int64_t count_blocks = (num_faces + kFillThreads - 1) / kFillThreads;
  if (count_blocks > int64_t(0x7fffffff)) throw std::invalid_argument("faces: too many triangles for one launch");
  count_kernel<<<unsigned(count_blocks), kFillThreads, 0, s>>>(mesh, g, fband, num_faces, counts, walks);
  check(cudaGetLastError(), "count");
  check(cub::DeviceScan::ExclusiveSum(temp, temp_bytes, counts, start, num_faces, s), "scan");
  // Persistent blocks: the tile total stays on the device.
  scatter_kernel<<<unsigned(sms) * 32, kTileThreads, 0, s>>>(walks, num_faces, counts, start, grid);
  check(cudaGetLastError(), "scatter");
}

}  // namespace fk
