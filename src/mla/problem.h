// Private: a decode call's arguments after validation (validate.cc), shared by the driver.
#pragma once
#include "mla/schedule.h"

namespace ff::mla {

struct Problem {
  bool sparse = false, fp8 = false, causal = false;
  int64_t b = 0, s_q = 0, h_q = 0, h_kv = 0, d = 0, dv = 0, rows = 0, num_blocks = 0, topk = 0;
  float scale_log2 = 0.f;
  TensorView q, kcache, block_table, out, lse, indices, sink;
};

// Checks every argument of mla_decode_with_kvcache against each other and the schedule: shapes,
// dtypes, strides, lengths, every block-table entry a length covers and every sparse index that
// will be read. Throws ff::Error with a one-line message naming the argument.
Problem validate(const TensorView& q, const TensorView& kcache, const TensorView& block_table,
                 const TensorView& cache_seqlens, int64_t head_dim_v, const MlaSchedule& schedule,
                 float softmax_scale, bool causal, const TensorView& out, const TensorView& lse,
                 const MlaDecodeOptions& opt);

}  // namespace ff::mla
