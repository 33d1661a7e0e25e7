// The loops of rows.h, compiled three times like core's bulk conversions (baseline x86-64, AVX2,
// AVX-512, the vectoriser on) and chosen by active_isa() (FF_ISA forces one).
#include "ep/rows.h"

#include <algorithm>

#include "core/core.h"

namespace ff::ep {
namespace {

#define FF_EP_VARIANTS(ret, name, params, body)                                                  \
  __attribute__((optimize("fp-contract=off"))) ret name##_base params body                       \
      __attribute__((target("avx2"), optimize("tree-vectorize", "fp-contract=off")))             \
      ret name##_avx2 params body __attribute__((target("avx512f,avx512bw,avx512vl"),            \
                                                 optimize("tree-vectorize", "fp-contract=off"))) \
      ret name##_avx512 params body

FF_EP_VARIANTS(void, add_loop, (float* __restrict acc, const uint16_t* __restrict row, int64_t n), {
  for (int64_t i = 0; i < n; ++i) acc[i] += bf16_to_f32(row[i]);
})
FF_EP_VARIANTS(void, add_f32_loop, (float* __restrict acc, const float* __restrict row, int64_t n),
               {
                 for (int64_t i = 0; i < n; ++i) acc[i] += row[i];
               })
FF_EP_VARIANTS(void, axpy_loop,
               (float* __restrict acc, float w, const uint16_t* __restrict row, int64_t n), {
                 for (int64_t i = 0; i < n; ++i) {
                   const float p = w * bf16_to_f32(row[i]);
                   acc[i] += p;
                 }
               })
FF_EP_VARIANTS(void, axpy_f32_loop,
               (float* __restrict acc, float w, const float* __restrict row, int64_t n), {
                 for (int64_t i = 0; i < n; ++i) {
                   const float p = w * row[i];
                   acc[i] += p;
                 }
               })
FF_EP_VARIANTS(void, scale_loop,
               (const uint16_t* __restrict row, int64_t groups, int64_t group,
                const float* __restrict s, float* __restrict out),
               {
                 for (int64_t g = 0; g < groups; ++g)
                   for (int64_t i = g * group; i < (g + 1) * group; ++i)
                     out[i] = bf16_to_f32(row[i]) * s[g];
               })
// The largest magnitude's bits: for non-NaN bf16, ordering the 15 magnitude bits as integers
// orders the values.
FF_EP_VARIANTS(void, absmax_loop,
               (const uint16_t* __restrict row, int64_t groups, int64_t group,
                uint16_t* __restrict out),
               {
                 for (int64_t g = 0; g < groups; ++g) {
                   uint16_t m = 0;
                   for (int64_t i = g * group; i < (g + 1) * group; ++i)
                     m = std::max<uint16_t>(m, uint16_t(row[i] & 0x7fffu));
                   out[g] = m;
                 }
               })
#undef FF_EP_VARIANTS

}  // namespace

#define FF_EP_DISPATCH(name, args) \
  switch (active_isa()) {          \
    case Isa::Avx512:              \
      return name##_avx512 args;   \
    case Isa::Avx2:                \
      return name##_avx2 args;     \
    default:                       \
      return name##_base args;     \
  }

void add_bf16(float* acc, const uint16_t* row, int64_t n) {
  FF_EP_DISPATCH(add_loop, (acc, row, n))
}
void add_f32(float* acc, const float* row, int64_t n) {
  FF_EP_DISPATCH(add_f32_loop, (acc, row, n))
}
void axpy_bf16(float* acc, float w, const uint16_t* row, int64_t n) {
  FF_EP_DISPATCH(axpy_loop, (acc, w, row, n))
}
void axpy_f32(float* acc, float w, const float* row, int64_t n) {
  FF_EP_DISPATCH(axpy_f32_loop, (acc, w, row, n))
}
void scale_groups_bf16(const uint16_t* row, int64_t groups, int64_t group, const float* s,
                       float* out) {
  FF_EP_DISPATCH(scale_loop, (row, groups, group, s, out))
}
void absmax_groups_bf16(const uint16_t* row, int64_t groups, int64_t group, float* amax) {
  uint16_t bits[256];
  for (int64_t g0 = 0; g0 < groups; g0 += 256) {
    const int64_t n = std::min<int64_t>(256, groups - g0);
    [&] { FF_EP_DISPATCH(absmax_loop, (row + g0 * group, n, group, bits)) }();
    for (int64_t g = 0; g < n; ++g) amax[g0 + g] = bf16_to_f32(bits[g]);
  }
}
#undef FF_EP_DISPATCH

}  // namespace ff::ep
