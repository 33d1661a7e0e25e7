// Private to src/ep: the row arithmetic of combine and of the FP8 cast, vectorised per CPU
// (baseline / AVX2 / AVX-512 builds of the same loops, picked by core's active_isa()). Products
// and sums are separate operations (no FMA) so every path gives the same bits.
#pragma once
#include <cstdint>

namespace ff::ep {

void add_bf16(float* acc, const uint16_t* row, int64_t n);            // acc += row
void add_f32(float* acc, const float* row, int64_t n);                // acc += row
void axpy_bf16(float* acc, float w, const uint16_t* row, int64_t n);  // acc += w * row
void axpy_f32(float* acc, float w, const float* row, int64_t n);      // acc += w * row
// Per group of `group` elements: out = row * s[g]; amax[g] = max |row| (no NaN).
void scale_groups_bf16(const uint16_t* row, int64_t groups, int64_t group, const float* s,
                       float* out);
void absmax_groups_bf16(const uint16_t* row, int64_t groups, int64_t group, float* amax);

}  // namespace ff::ep
