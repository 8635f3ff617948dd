"""The in-kernel noise stream: four normals per Philox call, the same bits on every backend.

Element e of a buffer gets normal e % 4 of `tl.randint4x(seed, e // 4)` (Philox4x32-10). Each pair of its 32-bit
outputs becomes two normals by Box-Muller, evaluated only with operations that are exactly rounded everywhere
(integer ops, int -> float conversion, a product with a constant, fma, sqrt_rn), so a GPU, the Triton interpreter
(numpy) and the native CPU kernels (csrc/flow/flow_noise.h, which documents the formulation) give the same bits:
a seeded run reproduces across devices. `tl.randn4x` would not: its log/sin/cos are approximations whose last
bits differ between a GPU, numpy and a C library.
"""
from __future__ import annotations

import triton
import triton.language as tl

# The polynomial coefficients below are float32 values fitted for this use (ln(1 + f) = f + f^2 P(f) on
# [sqrt(1/2) - 1, sqrt(2) - 1]; sin(p) = p + p z S(z), cos(p) = 1 + z C(z), z = p^2, on [-pi/4, pi/4]); the C++
# twin holds the same values. 0.6931471824645996 is float32(ln 2), 1.462918119976564e-09 is float32(pi) * 2^-31.


@triton.jit
def _radius(i):
    """sqrt(-2 ln u) for u = float((i >> 1) | 1) / 2^31 (i: uint32)."""
    x = ((i >> 1) | 1).to(tl.int32, bitcast=True).to(tl.float32)
    bits = x.to(tl.int32, bitcast=True)
    mant = bits & 0x7FFFFF
    big = mant > 0x3504F3  # mantissa above sqrt(2): halve it, one more in the exponent
    exponent = (bits >> 23) - 127 - 31 + big.to(tl.int32)
    f = (mant | tl.where(big, 0x3F000000, 0x3F800000)).to(tl.float32, bitcast=True) - 1.0  # exact
    p = tl.fma(f, -0.08066228777170181, 0.12920697033405304)
    p = tl.fma(p, f, -0.1307329684495926)
    p = tl.fma(p, f, 0.14173077046871185)
    p = tl.fma(p, f, -0.16628789901733398)
    p = tl.fma(p, f, 0.20002707839012146)
    p = tl.fma(p, f, -0.2500075697898865)
    p = tl.fma(p, f, 0.3333331346511841)
    p = tl.fma(p, f, -0.4999999701976776)
    ln_m = tl.fma(f * f, p, f)
    ln_u = tl.fma(exponent.to(tl.float32), 0.6931471824645996, ln_m)
    return tl.sqrt_rn(-2.0 * ln_u)


@triton.jit
def _turn(i):
    """(cos, sin) of 2 pi i / 2^32 (i: uint32): an exact split into quarter turn j and remainder, polynomials on
    [-pi/4, pi/4), then a rotation by j quarter turns."""
    rem = (i << 2).to(tl.int32, bitcast=True) >> 2  # i - j 2^30, sign-extended
    j = ((i >> 30) + ((i >> 29) & 1)) & 3
    phi = rem.to(tl.float32) * 1.462918119976564e-09
    z = phi * phi
    s = tl.fma(z, 2.7539990696823224e-06, -0.0001984289410756901)
    s = tl.fma(s, z, 0.008333338424563408)
    s = tl.fma(s, z, -0.1666666716337204)
    sin_phi = tl.fma(phi * z, s, phi)
    c = tl.fma(z, -9.55277187131287e-07, 2.5645884306868538e-05)
    c = tl.fma(c, z, -0.0013892168644815683)
    c = tl.fma(c, z, 0.04166670888662338)
    c = tl.fma(c, z, -0.5)
    cos_phi = tl.fma(z, c, 1.0)
    odd = (j & 1) != 0
    a = tl.where(odd, sin_phi, cos_phi)
    b = tl.where(odd, cos_phi, sin_phi)
    return tl.where(((j + 1) & 2) != 0, -a, a), tl.where((j & 2) != 0, -b, b)


@triton.jit
def randn4x_exact(seed, counter):
    """Four float32 normals per int64 counter (elements 4 counter + 0..3 of the stream)."""
    i1, i2, i3, i4 = tl.randint4x(seed, counter)
    r12 = _radius(i1)
    c12, s12 = _turn(i2)
    r34 = _radius(i3)
    c34, s34 = _turn(i4)
    return r12 * c12, r12 * s12, r34 * c34, r34 * s34


@triton.jit
def normal_quads(seed, first, QUADS: tl.constexpr):
    """[QUADS, 4] normals of elements first .. first + 4 QUADS - 1 (first: int64, a multiple of 4), row q holding
    the four normals of counter first // 4 + q."""
    counter = first // 4 + tl.arange(0, QUADS).to(tl.int64)
    n1, n2, n3, n4 = randn4x_exact(seed, counter)
    lane = tl.arange(0, 4)[None, :]
    return tl.where(lane == 0, n1[:, None], tl.where(lane == 1, n2[:, None], tl.where(lane == 2, n3[:, None],
                                                                                      n4[:, None])))
