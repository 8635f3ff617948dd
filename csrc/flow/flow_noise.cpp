// The seeded normal stream on the CPU (see flow_noise.h for its definition). Counters are processed in blocks,
// structure of arrays, so each Philox round and each Box-Muller step is a loop over lanes that vectorizes.
#include <algorithm>
#include <cstring>

#include "flow_noise.h"

// On x86-64 Linux the block loop is also compiled for x86-64-v4 (AVX-512, as torch's own CPU kernels use where
// the CPU has it) and x86-64-v3 (AVX2 + FMA), and fill_normals runs the best one the CPU supports: without a
// hardware fma every std::fma is a libm call and nothing vectorizes. Every version gives the same bits, which a
// test checks on each version the machine can run (fill_normals_at).
#if defined(__x86_64__) && defined(__GNUC__)
#define FK_NOISE_VERSIONS 1
#endif

namespace fk {

namespace {
constexpr int kBlock = 64;  // Philox counters per block (256 normals)

// The stream's body, inlined into one function per instruction set below.
__attribute__((always_inline)) inline void fill_normals_body(uint64_t seed, int64_t first, int64_t n, float* out) {
  const uint32_t key0 = uint32_t(seed), key1 = uint32_t(seed >> 32);
  const int64_t q_first = first >> 2, q_end = (first + n + 3) >> 2;
  for (int64_t q0 = q_first; q0 < q_end; q0 += kBlock) {
    const int lanes = int(std::min<int64_t>(kBlock, q_end - q0));
    uint32_t c0[kBlock], c1[kBlock], c2[kBlock], c3[kBlock];
    for (int l = 0; l < kBlock; ++l) {
      const uint64_t q = uint64_t(q0 + l);
      c0[l] = uint32_t(q), c1[l] = uint32_t(q >> 32), c2[l] = 0, c3[l] = 0;
    }
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < noise::kRounds; ++r) {
      for (int l = 0; l < kBlock; ++l) {
        const uint32_t p0 = c0[l], p2 = c2[l];
        c0[l] = noise::umulhi(noise::kRoundB, p2) ^ c1[l] ^ k0;
        c2[l] = noise::umulhi(noise::kRoundA, p0) ^ c3[l] ^ k1;
        c1[l] = noise::kRoundB * p2;
        c3[l] = noise::kRoundA * p0;
      }
      k0 += noise::kKeyA;
      k1 += noise::kKeyB;
    }
    float normals[4][kBlock];
    for (int l = 0; l < kBlock; ++l) {
      const float r01 = noise::radius(c0[l]), r23 = noise::radius(c2[l]);
      float cos01, sin01, cos23, sin23;
      noise::turn(c1[l], cos01, sin01);
      noise::turn(c3[l], cos23, sin23);
      normals[0][l] = r01 * cos01;
      normals[1][l] = r01 * sin01;
      normals[2][l] = r23 * cos23;
      normals[3][l] = r23 * sin23;
    }
    // element 4 q + j holds normal j of counter q; copy the part of the block inside [first, first + n) (a whole
    // block as a plain interleave the compiler vectorizes, the per-element walk only at the ends of the range)
    const int64_t e_lo = std::max(first, 4 * q0), e_hi = std::min(first + n, 4 * (q0 + lanes));
    if (e_lo == 4 * q0 && lanes == kBlock && e_hi == 4 * (q0 + kBlock)) {
      float* o = out + (e_lo - first);
      for (int l = 0; l < kBlock; ++l) {
        o[4 * l] = normals[0][l];
        o[4 * l + 1] = normals[1][l];
        o[4 * l + 2] = normals[2][l];
        o[4 * l + 3] = normals[3][l];
      }
    } else {
      for (int64_t e = e_lo; e < e_hi; ++e) out[e - first] = normals[e & 3][(e >> 2) - q0];
    }
  }
}

void fill_baseline(uint64_t seed, int64_t first, int64_t n, float* out) { fill_normals_body(seed, first, n, out); }

#if FK_NOISE_VERSIONS
__attribute__((target("arch=x86-64-v3"))) void fill_v3(uint64_t seed, int64_t first, int64_t n, float* out) {
  fill_normals_body(seed, first, n, out);
}
__attribute__((target("arch=x86-64-v4"))) void fill_v4(uint64_t seed, int64_t first, int64_t n, float* out) {
  fill_normals_body(seed, first, n, out);
}
#endif

using FillFn = void (*)(uint64_t, int64_t, int64_t, float*);

// The version for `level` (0 baseline, 1 x86-64-v3, 2 x86-64-v4), or nullptr when this build or CPU lacks it.
FillFn fill_version(int level) {
  if (level == 0) return fill_baseline;
#if FK_NOISE_VERSIONS
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
  if (level == 1 && v3) return fill_v3;
  if (level == 2 && v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return fill_v4;
#endif
  return nullptr;
}

FillFn best_fill() {
  for (int level = 2; level > 0; --level)
    if (FillFn fn = fill_version(level)) return fn;
  return fill_baseline;
}
}  // namespace

void fill_normals(uint64_t seed, int64_t first, int64_t n, float* out) {
  static const FillFn fill = best_fill();
  if (n > 0) fill(seed, first, n, out);
}

bool fill_normals_at(int level, uint64_t seed, int64_t first, int64_t n, float* out) {
  const FillFn fn = fill_version(level);
  if (fn && n > 0) fn(seed, first, n, out);
  return fn != nullptr;
}

}  // namespace fk
