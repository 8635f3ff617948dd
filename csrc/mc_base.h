// Marching cubes basics shared by every driver: the storage types, the lookup tables (host arrays and
// __constant__ memory) and their accessors.
#pragma once
#include <cstdint>
#include <cstring>
#include <math.h>  // sqrt overloads for float and double, host and device

#include "mc_tables.h"
#include "mc_variants.h"

#if defined(__CUDACC__)
#define FK_HD __host__ __device__ __forceinline__
#else
#define FK_HD inline
#endif

namespace fk {

// 16-bit storage types, converted by hand so the CPU build needs no CUDA headers.
struct half_bits { uint16_t bits; };
struct bf16_bits { uint16_t bits; };

FK_HD float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

FK_HD float to_compute(half_bits h) {
  uint32_t sign = uint32_t(h.bits & 0x8000u) << 16, exp = (h.bits >> 10) & 0x1fu, mant = h.bits & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    exp = 113;  // subnormal: renormalise
    while (!(mant & 0x400u)) { mant <<= 1; --exp; }
    return bits_to_float(sign | (exp << 23) | ((mant & 0x3ffu) << 13));
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
}
FK_HD float to_compute(bf16_bits b) { return bits_to_float(uint32_t(b.bits) << 16); }
FK_HD float to_compute(float f) { return f; }
FK_HD double to_compute(double d) { return d; }

// Values are compared and interpolated in float, or in double for double grids (as scikit-image does).
template <typename T> struct ComputeType { using type = float; };
template <> struct ComputeType<double> { using type = double; };

namespace tables {
static constexpr int8_t kEdgeCorner[12] = FK_EDGE_CORNER;
static constexpr int8_t kEdgeAxis[12] = FK_EDGE_AXIS;
static constexpr int8_t kTriCount[256] = FK_TRI_COUNT;
static constexpr int8_t kTriEdges[256][3 * FK_MAX_TRIANGLES] = FK_TRI_EDGES;
static constexpr uint8_t kAmbiguousFaces[256] = FK_AMBIGUOUS_FACES;
static constexpr int8_t kInteriorPair[256] = FK_INTERIOR_PAIR;
static constexpr uint8_t kDecidedCase[256] = FK_DECIDED_CASE;
static constexpr int16_t kVariantBase[256] = FK_VARIANT_BASE;
static constexpr int8_t kVariantTriCount[FK_VARIANTS] = FK_VARIANT_TRI_COUNT;
static constexpr int8_t kVariantCentre[FK_VARIANTS] = FK_VARIANT_CENTRE;
static constexpr int8_t kVariantTriEdges[FK_VARIANTS][3 * FK_MAX_VARIANT_TRIANGLES] = FK_VARIANT_TRI_EDGES;
static constexpr int8_t kFaceCorners[6][4] = FK_FACE_CORNERS;
#if defined(__CUDACC__)
__constant__ uint8_t dAmbiguousFaces[256] = FK_AMBIGUOUS_FACES;
__constant__ int8_t dInteriorPair[256] = FK_INTERIOR_PAIR;
__constant__ uint8_t dDecidedCase[256] = FK_DECIDED_CASE;
__constant__ int16_t dVariantBase[256] = FK_VARIANT_BASE;
__constant__ int8_t dVariantTriCount[FK_VARIANTS] = FK_VARIANT_TRI_COUNT;
__constant__ int8_t dVariantCentre[FK_VARIANTS] = FK_VARIANT_CENTRE;
__constant__ int8_t dVariantTriEdges[FK_VARIANTS][3 * FK_MAX_VARIANT_TRIANGLES] = FK_VARIANT_TRI_EDGES;
__constant__ int8_t dEdgeCorner[12] = FK_EDGE_CORNER;
__constant__ int8_t dEdgeAxis[12] = FK_EDGE_AXIS;
__constant__ int8_t dTriCount[256] = FK_TRI_COUNT;
__constant__ int8_t dTriEdges[256][3 * FK_MAX_TRIANGLES] = FK_TRI_EDGES;
#endif
}  // namespace tables

// Table access: __constant__ memory in device code, static arrays on the host.
#if defined(__CUDA_ARCH__)
#define FK_TABLE(host, device) tables::device
#else
#define FK_TABLE(host, device) tables::host
#endif
FK_HD int edge_corner(int e) { return FK_TABLE(kEdgeCorner, dEdgeCorner)[e]; }
FK_HD int edge_axis(int e) { return FK_TABLE(kEdgeAxis, dEdgeAxis)[e]; }
FK_HD int tri_count(int config) { return FK_TABLE(kTriCount, dTriCount)[config]; }
FK_HD int tri_edge(int config, int n) { return FK_TABLE(kTriEdges, dTriEdges)[config][n]; }

FK_HD unsigned ambiguous_faces(int config) { return FK_TABLE(kAmbiguousFaces, dAmbiguousFaces)[config]; }
FK_HD int interior_pair(int config) { return FK_TABLE(kInteriorPair, dInteriorPair)[config]; }
// The case has more than one variant (an ambiguous face, or case 4's interior): its cells read their values.
FK_HD bool decided_case(int config) { return FK_TABLE(kDecidedCase, dDecidedCase)[config] != 0; }
FK_HD int variant_base(int config) { return FK_TABLE(kVariantBase, dVariantBase)[config]; }
FK_HD int variant_tri_count(int v) { return FK_TABLE(kVariantTriCount, dVariantTriCount)[v]; }
FK_HD bool variant_centre(int v) { return FK_TABLE(kVariantCentre, dVariantCentre)[v] != 0; }
FK_HD int variant_tri_edge(int v, int n) { return FK_TABLE(kVariantTriEdges, dVariantTriEdges)[v][n]; }

FK_HD int popcount3(unsigned m) { return (m & 1u) + ((m >> 1) & 1u) + ((m >> 2) & 1u); }

template <typename R> FK_HD bool is_finite(R v) { return v - v == R(0); }  // false for NaN and +-inf

}  // namespace fk
