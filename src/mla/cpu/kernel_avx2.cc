// AVX2 backend: the f32 SIMD kernel (kernel_simd.h) with 8 lanes and 8 accumulators (16 registers).
#include <immintrin.h>

#include "mla/cpu/kernel_simd.h"

namespace ff::mla {
namespace {

struct Avx2 {
  using vec = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kAcc = 8;
  static vec zero() { return _mm256_setzero_ps(); }
  static vec set1(float f) { return _mm256_set1_ps(f); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
  static vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  static vec round(vec x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // 2^n for integral n in [-127, 127] (n = -127 gives +0).
  static vec pow2i(vec n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static vec mask_past_limit(vec x, const int32_t* limit, int32_t pos, vec fill) {
    const __m256i lim = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(limit));
    const __m256i visible = _mm256_cmpgt_epi32(lim, _mm256_set1_epi32(pos));
    return _mm256_blendv_ps(fill, x, _mm256_castsi256_ps(visible));
  }
  static vec zero_where_neg_inf(vec x) {
    const vec ninf = _mm256_set1_ps(-__builtin_inff());
    return _mm256_andnot_ps(_mm256_cmp_ps(x, ninf, _CMP_EQ_OQ), x);
  }
};

}  // namespace

Kernel kernel_avx2() {
  Kernel k;
  k.kv_dtype = DType::F32;
  k.row_align = Avx2::kLanes;
  k.begin = simd::begin_f32<Avx2>;
  k.chunk = simd::chunk_f32<Avx2>;
  return k;
}

}  // namespace ff::mla
