// CUDA driver: one thread per grid row, the same row walk as the CPU driver. Launches are asynchronous on the
// caller's stream; nothing here synchronises (the caller reads the two totals back once, to size the outputs).
#include <cuda_runtime.h>

#include "mc_dispatch.h"

namespace fk {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void count_rows_kernel(Volume<T> vol, int64_t* counts, int64_t* spans) {
  int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= vol.nx * vol.ny) return;
  store_row(count_row(vol, row / vol.ny, row % vol.ny), row, counts, spans);
}

template <typename T>
__global__ void emit_rows_kernel(Volume<T> vol, EmitTarget out) {
  int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= vol.nx * vol.ny) return;
  emit_row(vol, out, row / vol.ny, row % vol.ny);
}

void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

unsigned blocks_for(int64_t rows) { return unsigned((rows + kThreads - 1) / kThreads); }

}  // namespace

bool cuda_built() { return true; }

void mc_count_cuda(const GridDesc& grid, uintptr_t counts, uintptr_t spans, uintptr_t stream) {
  dispatch_dtype(grid.dtype, [&](auto tag) {
    auto vol = make_volume<decltype(tag)>(grid);
    int64_t rows = vol.nx * vol.ny;
    if (rows == 0) return;
    count_rows_kernel<<<blocks_for(rows), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
        vol, reinterpret_cast<int64_t*>(counts), reinterpret_cast<int64_t*>(spans));
    check_launch("marching cubes count kernel");
  });
}

void mc_emit_cuda(const GridDesc& grid, const EmitDesc& desc, uintptr_t stream) {
  EmitTarget out = make_target(desc);
  dispatch_dtype(grid.dtype, [&](auto tag) {
    auto vol = make_volume<decltype(tag)>(grid);
    int64_t rows = vol.nx * vol.ny;
    if (rows == 0) return;
    emit_rows_kernel<<<blocks_for(rows), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(vol, out);
    check_launch("marching cubes emit kernel");
  });
}

}  // namespace fk
