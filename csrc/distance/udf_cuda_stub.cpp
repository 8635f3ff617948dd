// Built instead of distance/udf_cuda.cu when CUDA is off: the CUDA entry points explain how to rebuild.
#include <stdexcept>

#include "distance/lbvh_api.h"
#include "distance/udf_api.h"

namespace fk {

static const char* kNoCudaUdf =
    "flowkernels was built without CUDA; reinstall on a machine with nvcc (FLOWKERNELS_CUDA=ON pip install . "
    "--no-build-isolation --force-reinstall, or set CUDA_HOME) to compute distances on CUDA tensors";

int64_t udf_band_grid_scratch_bytes_cuda(int64_t) { throw std::runtime_error(kNoCudaUdf); }
void udf_band_grid_cuda(uintptr_t, int64_t, uintptr_t, int64_t, const UdfGridDesc&, double, uintptr_t, uintptr_t,
                        int64_t, uintptr_t) {
  throw std::runtime_error(kNoCudaUdf);
}

void lbvh_keys_cuda(uintptr_t, uintptr_t, int64_t, uintptr_t, uintptr_t, uintptr_t) {
  throw std::runtime_error(kNoCudaUdf);
}
void lbvh_build_cuda(uintptr_t, uintptr_t, int64_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t) {
  throw std::runtime_error(kNoCudaUdf);
}
void lbvh_query_cuda(uintptr_t, uintptr_t, uintptr_t, int64_t, uintptr_t, int64_t, uintptr_t, uintptr_t, uintptr_t,
                     uintptr_t, uintptr_t) {
  throw std::runtime_error(kNoCudaUdf);
}

}  // namespace fk
