// The seeded normal stream on the CPU (see flow_noise.h for its definition). Counters are processed in blocks,
// structure of arrays, so each Philox round and each Box-Muller step is a loop over lanes that vectorizes.
#include <algorithm>
#include <cstring>

#include "flow_noise.h"

// On x86-64 Linux the function is also compiled for x86-64-v3 (AVX2 + FMA) and picked at load time: without a
// hardware fma every std::fma is a libm call and nothing vectorizes. Both versions give the same bits.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define FK_NOISE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FK_NOISE_CLONES
#endif

namespace fk {

namespace {
constexpr int kBlock = 64;  // Philox counters per block (256 normals)
}

FK_NOISE_CLONES
void fill_normals(uint64_t seed, int64_t first, int64_t n, float* out) {
  if (n <= 0) return;
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

}  // namespace fk
