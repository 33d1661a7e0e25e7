// Four-lane fp32 math for baseline x86-64 (SSE2) through GCC vector extensions: no ISA dispatch
// needed, the same bits on every x86-64 system. Used where a plain loop would call libm per
// element (the sampler's softmax weights, the prefill attention's softmax).
#pragma once
#include <cstdint>
#include <cstring>

namespace ff {

using f4 = float __attribute__((vector_size(16)));
using i4 = int32_t __attribute__((vector_size(16)));

inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store4(float* p, f4 v) {
  std::memcpy(p, &v, sizeof(v));
}

// e^z for z <= 0: Cephes' expf (range reduction by ln 2 in two parts, degree-6 polynomial,
// relative error about 1e-7). z < -87 (where 2^n would leave the normal range), -inf included,
// gives exactly 0. Our own code rather than libm's, so results are the same on every system.
inline __attribute__((always_inline)) f4 exp_nonpositive(f4 z) {
  const i4 underflow = z < -87.f;
  const f4 x = underflow ? f4{} - 87.f : z;
  const f4 magic = f4{} + 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const f4 t = x * 1.44269504088896341f + magic;
  const f4 n = t - magic;                                  // round(x / ln 2)
  const i4 exponent = (i4)t - (i4)magic + 127;             // the same integer, biased: 1..127
  const f4 r = x - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln 2, |r| <= ln2 / 2
  f4 p = f4{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const f4 result = p * (f4)(exponent << 23);
  return underflow ? f4{} : result;
}

}  // namespace ff
