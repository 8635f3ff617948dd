// Per-sample coefficients of the flow-matching conventions, in double: the C++ twin of `coefficients_torch` in
// flowkernels/flow_algebra.py (same codes, same formulas, same order of operations).
//   x_t = a D + b N,  residual = p O + cD D + cN N,  loss weight w.
#pragma once
#include <cmath>

#include "flow_api.h"

namespace fk {

enum FlowSchemeCode { kSitLinear = 0, kSitGvp = 1, kSitVp = 2, kRectified = 3 };
enum FlowPredictionCode { kVelocity = 0, kNoise = 1, kScore = 2, kData = 3 };
enum FlowWeightingCode { kWeightNone = 0, kWeightVelocity = 1, kWeightLikelihood = 2, kWeightSigmaSqrt = 3,
                         kWeightCosmap = 4 };

struct FlowCoefficients {
  double a, b, p, cD, cN, w;
};

inline FlowCoefficients flow_coefficients(double t, const FlowScheme& s) {
  constexpr double kHalfPi = 1.5707963267948966, kPi = 3.141592653589793;
  constexpr double kVpMin = 0.1, kVpMax = 20.0;
  double a, b, da, db;
  if (s.scheme == kSitLinear) {
    a = t, b = 1.0 - t, da = 1.0, db = -1.0;
  } else if (s.scheme == kSitGvp) {
    a = std::sin(kHalfPi * t), b = std::cos(kHalfPi * t);
    da = kHalfPi * b, db = -kHalfPi * a;
  } else if (s.scheme == kSitVp) {
    const double r = 1.0 - t;
    const double L = -0.25 * r * r * (kVpMax - kVpMin) - 0.5 * r * kVpMin;
    const double dL = 0.5 * r * (kVpMax - kVpMin) + 0.5 * kVpMin;
    a = std::exp(L);
    const double e2 = std::exp(2.0 * L);
    b = std::sqrt(1.0 - e2);
    da = a * dL, db = -e2 * dL / b;
  } else {
    a = 1.0 - t, b = s.sigma_min + (1.0 - s.sigma_min) * t;
    da = -1.0, db = 1.0 - s.sigma_min;
  }
  FlowCoefficients c{a, b, 1.0, 0.0, 0.0, 1.0};
  if (s.scheme == kRectified) {
    if (s.prediction == kData) c.p = -t, c.cD = a - 1.0, c.cN = b;
    else c.p = 1.0, c.cD = 1.0, c.cN = -db;
  } else if (s.prediction == kVelocity) {
    c.p = 1.0, c.cD = -da, c.cN = -db;
  } else if (s.prediction == kNoise) {
    c.p = 1.0, c.cD = 0.0, c.cN = -1.0;
  } else {
    c.p = b, c.cD = 0.0, c.cN = 1.0;
  }
  if (s.weighting == kWeightVelocity || s.weighting == kWeightLikelihood) {
    const double drift_var = s.scheme == kSitVp ? 0.5 * (kVpMin + (1.0 - t) * (kVpMax - kVpMin))
                                                : (da / a) * b * b - b * db;
    c.w = s.weighting == kWeightVelocity ? (drift_var / b) * (drift_var / b) : drift_var / (b * b);
  } else if (s.weighting == kWeightSigmaSqrt) {
    c.w = 1.0 / (t * t);
  } else if (s.weighting == kWeightCosmap) {
    c.w = 2.0 / (kPi * (1.0 - 2.0 * t + 2.0 * t * t));
  }
  return c;
}

}  // namespace fk
