// The in-kernel noise stream, shared bit for bit with the Triton kernels (flowkernels/ops/philox_normal.py).
//
// Element e of a buffer gets normal e & 3 of Philox4x32-10 at counter e >> 2 (counter words: low, high 32 bits of
// e >> 2, 0, 0; key: low, high 32 bits of the seed), i.e. four normals per Philox call. A pair (i1, i2) of its
// 32-bit outputs becomes two normals by Box-Muller, evaluated only with operations that are exactly rounded on
// every backend (integer ops, int->float conversion, multiplication by a constant, fused multiply-add, sqrt):
// the same bits come out of a GPU, of the Triton interpreter (numpy) and of this file, whatever their libm.
//   radius: x = float((i1 >> 1) | 1), u = x / 2^31 in (0, 1]; ln u from x's exponent and a polynomial in its
//           mantissa reduced to [sqrt(1/2), sqrt(2)) (relative error < 1e-7; no cancellation as u -> 1);
//           r = sqrt(-2 ln u), at most sqrt(62 ln 2) = 6.56.
//   angle:  theta = 2 pi i2 / 2^32, split exactly in integers into a quarter turn j and phi in [-pi/4, pi/4);
//           sin and cos of phi by polynomials, then rotated by j quarter turns (swaps and sign flips).
// Every multiply-add is an explicit fma and no plain product feeds a plain sum, so compilers that contract
// a*b+c (CUDA's ptxas, GCC with FMA) cannot change a result.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace fk {
namespace noise {

// Philox4x32 round and key constants (Salmon et al. 2011), as triton.language.random uses them.
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr int kRounds = 10;

// Polynomial coefficients (float32 values, fitted for this use; see the flow design note):
// ln(1 + f) = f + f^2 * P(f) on [sqrt(1/2) - 1, sqrt(2) - 1]; sin(p) = p + p z S(z), cos(p) = 1 + z C(z), z = p^2.
constexpr float kLogP[9] = {-0.4999999701976776f, 0.3333331346511841f, -0.2500075697898865f,
                            0.20002707839012146f, -0.16628789901733398f, 0.14173077046871185f,
                            -0.1307329684495926f, 0.12920697033405304f, -0.08066228777170181f};
constexpr float kSinS[4] = {-0.1666666716337204f, 0.008333338424563408f, -0.0001984289410756901f,
                            2.7539990696823224e-06f};
constexpr float kCosC[5] = {-0.5f, 0.04166670888662338f, -0.0013892168644815683f, 2.5645884306868538e-05f,
                            -9.55277187131287e-07f};
constexpr float kLn2 = 0.6931471824645996f;             // float32(ln 2)
constexpr float kTurnPerUnit = 1.462918119976564e-09f;  // float32(pi) * 2^-31: phi per unit of the remainder

inline uint32_t umulhi(uint32_t a, uint32_t b) { return uint32_t((uint64_t(a) * uint64_t(b)) >> 32); }

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Philox4x32-10 of counter (lo, hi, 0, 0) under key (k0, k1).
inline void philox(uint32_t lo, uint32_t hi, uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c0 = lo, c1 = hi, c2 = 0, c3 = 0;
  for (int r = 0; r < kRounds; ++r) {
    const uint32_t p0 = c0, p2 = c2;
    c0 = umulhi(kRoundB, p2) ^ c1 ^ k0;
    c2 = umulhi(kRoundA, p0) ^ c3 ^ k1;
    c1 = kRoundB * p2;
    c3 = kRoundA * p0;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// sqrt(-2 ln u) for u = float((i >> 1) | 1) / 2^31.
inline float radius(uint32_t i) {
  // selects are written as integer arithmetic and bit masks so the lane loops calling this vectorize
  const float x = float(int32_t((i >> 1) | 1u));  // odd: never 0 (and no branch for a compiler to add)
  const uint32_t bits = float_to_bits(x);
  const uint32_t mant = bits & 0x7FFFFFu;
  const uint32_t big = mant > 0x3504F3u;  // mantissa above sqrt(2): halve it, one more in the exponent
  const int32_t exponent = int32_t(bits >> 23) - 127 - 31 + int32_t(big);
  const float f = bits_to_float((mant | 0x3F800000u) - (big << 23)) - 1.0f;  // exact (Sterbenz)
  // Horner written out: the lane loops that call this vectorize only when nothing inside them loops
  float p = std::fma(f, kLogP[8], kLogP[7]);
  p = std::fma(p, f, kLogP[6]);
  p = std::fma(p, f, kLogP[5]);
  p = std::fma(p, f, kLogP[4]);
  p = std::fma(p, f, kLogP[3]);
  p = std::fma(p, f, kLogP[2]);
  p = std::fma(p, f, kLogP[1]);
  p = std::fma(p, f, kLogP[0]);
  const float ln_m = std::fma(f * f, p, f);
  const float ln_u = std::fma(float(exponent), kLn2, ln_m);
  return std::sqrt(-2.0f * ln_u);
}

// (cos, sin) of 2 pi i / 2^32.
inline void turn(uint32_t i, float& cos_out, float& sin_out) {
  int32_t rem;
  const uint32_t shifted = i << 2;
  std::memcpy(&rem, &shifted, 4);
  rem >>= 2;                                              // i - j 2^30 in [-2^29, 2^29), sign-extended
  const uint32_t j = ((i >> 30) + ((i >> 29) & 1u)) & 3u;  // the nearest quarter turn
  const float phi = float(rem) * kTurnPerUnit;
  const float z = phi * phi;
  float s = std::fma(z, kSinS[3], kSinS[2]);
  s = std::fma(s, z, kSinS[1]);
  s = std::fma(s, z, kSinS[0]);
  const float sin_phi = std::fma(phi * z, s, phi);
  float c = std::fma(z, kCosC[4], kCosC[3]);
  c = std::fma(c, z, kCosC[2]);
  c = std::fma(c, z, kCosC[1]);
  c = std::fma(c, z, kCosC[0]);
  const float cos_phi = std::fma(z, c, 1.0f);
  const uint32_t odd = 0u - (j & 1u);  // all ones on odd quarter turns: swap cos and sin
  const uint32_t a = (float_to_bits(sin_phi) & odd) | (float_to_bits(cos_phi) & ~odd);
  const uint32_t b = (float_to_bits(cos_phi) & odd) | (float_to_bits(sin_phi) & ~odd);
  cos_out = bits_to_float(a ^ (((j + 1u) & 2u) << 30));  // negate on quarter turns 1 and 2
  sin_out = bits_to_float(b ^ ((j & 2u) << 30));         // negate on quarter turns 2 and 3
}

}  // namespace noise

// Normals of elements [first, first + n) of the stream `seed` into out (any first, any n).
void fill_normals(uint64_t seed, int64_t first, int64_t n, float* out);

// fill_normals through one compiled version (0 baseline, 1 x86-64-v3, 2 x86-64-v4), for tests that check every
// version gives the same bits; false (nothing written) when this build or CPU has no such version.
bool fill_normals_at(int level, uint64_t seed, int64_t first, int64_t n, float* out);

}  // namespace fk
