// One template instantiation per value type, chosen at run time from the dtype code.
#pragma once
#include "mc_api.h"
#include "mc_core.h"

namespace fk {

template <typename T>
Volume<T> make_volume(const GridDesc& g) {
  return Volume<T>{reinterpret_cast<const T*>(g.data), g.shape[0], g.shape[1], g.shape[2],
                   g.strides[0], g.strides[1], g.strides[2], typename ComputeType<T>::type(g.level),
                   g.decide_from_values};
}

inline EmitTarget make_target(const EmitDesc& d) {
  EmitTarget t{reinterpret_cast<const int64_t*>(d.offsets), reinterpret_cast<const int64_t*>(d.spans),
               reinterpret_cast<float*>(d.verts),
               reinterpret_cast<int64_t*>(d.faces), reinterpret_cast<float*>(d.normals), {}, {}, d.flip,
               d.centre_first};
  for (int a = 0; a < 3; ++a) {
    t.origin[a] = d.origin[a];
    t.scale[a] = d.scale[a];
  }
  return t;
}

// Both drivers store a row's count-pass results the same way: counts [rows, 3], spans [rows, 2].
FK_HD void store_row(const RowCounts& c, int64_t row, int64_t* counts, int64_t* spans) {
  counts[3 * row] = c.verts;
  counts[3 * row + 1] = c.tris;
  counts[3 * row + 2] = c.centres;
  spans[2 * row] = c.kmin;
  spans[2 * row + 1] = c.kmax;
}

template <typename Fn>
void dispatch_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); break;
    case DType::kFloat64: fn(double{}); break;
    case DType::kFloat16: fn(half_bits{}); break;
    case DType::kBFloat16: fn(bf16_bits{}); break;
    default: throw std::invalid_argument("grid dtype code " + std::to_string(int(dtype)) + " is not supported");
  }
}

}  // namespace fk
