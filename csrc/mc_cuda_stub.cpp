// Built instead of marching_cubes/brick_cuda.cu when CUDA is off: every CUDA entry point explains how to rebuild.
#include "mc_api.h"

namespace fk {

static const char* kNoCuda =
    "flowkernels was built without CUDA; reinstall on a machine with nvcc (FLOWKERNELS_CUDA=ON pip install . "
    "--no-build-isolation --force-reinstall, or set CUDA_HOME) to run marching cubes on CUDA tensors";

bool cuda_built() { return false; }
int64_t mc_brick_scan_temp_bytes_cuda(int64_t) { throw std::runtime_error(kNoCuda); }
void mc_brick_count_cuda(const GridDesc&, uintptr_t, uintptr_t, uintptr_t) { throw std::runtime_error(kNoCuda); }
void mc_brick_emit_cuda(const GridDesc&, const EmitDesc&, uintptr_t, int64_t, uintptr_t) {
  throw std::runtime_error(kNoCuda);
}

}  // namespace fk
