// Element types of the CPU flow kernels and their conversions to and from the compute type (float, or double
// for float64 data). 16-bit values convert with integer bit operations, branch-free so the tile loops vectorize,
// rounding to nearest-even as torch does (a double goes through float first, as torch's Half/BFloat16 do).
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "flow_api.h"

namespace fk {

struct BF16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

namespace conv {

inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_float(uint16_t h) { return from_bits(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = to_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return uint16_t(f != f ? 0x7FC0u : rounded);  // NaN: torch's canonical quiet NaN
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;  // exponent and mantissa
  // Normal: rebias the exponent (15 -> 127); inf / NaN: rebias once more, onto 255. Subnormal: m * 2^-24 exactly,
  // through an integer conversion (no float subnormal operand, so flush-to-zero modes cannot touch it).
  const uint32_t normal = (em << 13) + (112u << 23) + (em >= 0x7C00u ? (112u << 23) : 0u);
  const uint32_t subnormal = to_bits(float(int32_t(em)) * 5.9604644775390625e-08f);  // 2^-24
  return from_bits(sign | (em < 0x0400u ? subnormal : normal));
}

inline uint16_t float_to_half(float f) {
  const uint32_t u = to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  // Normal halves: rebias the exponent and round the 13 dropped bits to nearest-even; a carry out of the
  // mantissa moves into the exponent, which is the correctly rounded result.
  const uint32_t normal = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  // Below 2^-14: adding 0.5 makes the hardware round |f| to a multiple of 2^-24 (the half subnormal step), which
  // is then the low bits of the sum.
  const uint32_t subnormal = to_bits(from_bits(a) + 0.5f) - 0x3F000000u;
  uint32_t h = a < 0x38800000u ? subnormal : normal;
  h = a >= 0x477FF000u ? 0x7C00u : h;      // rounds to >= 65520: infinity
  h = a > 0x7F800000u ? 0x7E00u : h;       // NaN: quiet NaN
  return uint16_t(sign | h);
}

}  // namespace conv

// The tile helpers are inlined into the per-item loops, whichever instruction set those were compiled for.
#if defined(__GNUC__)
#define FK_TILE_INLINE inline __attribute__((always_inline))
#else
#define FK_TILE_INLINE inline
#endif

// Element i of a T array as R, and R stored into a T array.
template <typename R, typename T>
inline R load_elem(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, BF16>) return R(conv::bf16_to_float(p[i].bits));
  else if constexpr (std::is_same_v<T, F16>) return R(conv::half_to_float(p[i].bits));
  else return R(p[i]);
}

template <typename T, typename R>
inline void store_elem(T* p, int64_t i, R v) {
  if constexpr (std::is_same_v<T, BF16>) p[i].bits = conv::float_to_bf16(float(v));
  else if constexpr (std::is_same_v<T, F16>) p[i].bits = conv::float_to_half(float(v));
  else p[i] = T(v);
}

// fn(tag) with tag a value of the C++ type of dtype.
template <typename Fn>
decltype(auto) with_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: return fn(float{});
    case DType::kFloat64: return fn(double{});
    case DType::kFloat16: return fn(F16{});
    case DType::kBFloat16: return fn(BF16{});
  }
  throw std::invalid_argument("flow kernels: unsupported dtype code " + std::to_string(int(dtype)));
}

// dst[0:n] = a's elements [first, first + n) converted to R.
template <typename R>
FK_TILE_INLINE void load_tile(const FlowArr& a, int64_t first, int64_t n, R* dst) {
  with_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* src = reinterpret_cast<const T*>(a.ptr) + first;
    for (int64_t i = 0; i < n; ++i) dst[i] = load_elem<R>(src, i);
  });
}

// a's elements [first, first + n) as R: a pointer into a itself when it already holds R (no copy), else the
// elements converted into buf.
template <typename R>
FK_TILE_INLINE const R* view_tile(const FlowArr& a, int64_t first, int64_t n, R* buf) {
  constexpr DType kSame = std::is_same_v<R, double> ? DType::kFloat64 : DType::kFloat32;
  if (a.dtype == kSame) return reinterpret_cast<const R*>(a.ptr) + first;
  load_tile(a, first, n, buf);
  return buf;
}

// a's elements [first, first + n) = src[0:n] rounded to a's dtype.
template <typename R>
FK_TILE_INLINE void store_tile(const FlowArr& a, int64_t first, int64_t n, const R* src) {
  with_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* dst = reinterpret_cast<T*>(a.ptr) + first;
    for (int64_t i = 0; i < n; ++i) store_elem(dst, i, src[i]);
  });
}

// Where a tile of results for a's elements [first, first + n) is computed: straight into a when it already holds R
// (no staging copy: on a small batch the extra store pass costs as much as the arithmetic), else into buf, which
// finish_tile then rounds into a.
template <typename R>
FK_TILE_INLINE R* out_tile(const FlowArr& a, int64_t first, R* buf) {
  constexpr DType kSame = std::is_same_v<R, double> ? DType::kFloat64 : DType::kFloat32;
  return a.dtype == kSame ? reinterpret_cast<R*>(a.ptr) + first : buf;
}

template <typename R>
FK_TILE_INLINE void finish_tile(const FlowArr& a, int64_t first, int64_t n, const R* tile) {
  constexpr DType kSame = std::is_same_v<R, double> ? DType::kFloat64 : DType::kFloat32;
  if (a.dtype != kSame) store_tile(a, first, n, tile);
}

// The per-item loops of the flow kernels are also compiled for AVX2 and picked at load time (torch picks its own
// CPU kernels the same way): at the default x86-64-v2 they run at half the vector width of torch's ops. An ISA
// name rather than an arch= level, so that GCC may inline the tile helpers into the clone; no AVX-512 clone, which
// made the next torch op on the thread (the gradient accumulation) take milliseconds in the bench. No fused
// multiply-adds (-ffp-contract=off) and per-lane partial sums: every version gives the same bits.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define FK_FLOW_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FK_FLOW_CLONES
#endif

// One value of a per-sample tensor (t, weight, k), as double.
inline double load_scalar(const FlowArr& a, int64_t b) {
  return with_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    return load_elem<double>(reinterpret_cast<const T*>(a.ptr), b * a.stride);
  });
}

}  // namespace fk
