// Private: scratch buffers of a Model's forward pass. They only grow, so steady-state decode
// does not allocate.
#pragma once
#include <cstdint>
#include <vector>

#include "mla/mla.h"
#include "model/model.h"

namespace ff {

struct Model::Workspace {
  std::vector<float> x, h, tmp, q, qa, kva, attn_o;
  // attention
  std::vector<float> lat_all, kv_up, qd, q_lat, o_lat, od;
  std::vector<float> k_heads, v_heads_t, scores;   // prefill: per-head K, V^T, score block
  std::vector<gemm::Weight> head_weights;          // prefill: per-head K / V^T as F32 weights
  std::vector<gemm::LinearProblem> head_problems;  // one product per head (prefill and decode)
  std::vector<int64_t> pos;
  // decode attention (src/mla)
  std::vector<float> q_mla, lse;
  std::vector<uint16_t> q_mla16;
  std::vector<int32_t> block_table, seqlens;
  int64_t block_table_cols = 0;
  mla::MlaSchedule schedule;
  // moe
  std::vector<float> router_logits, route_w, xe, ge, ue, de, sg, su, sd;
  std::vector<int32_t> route_idx;
  std::vector<int64_t> expert_rows, expert_begin, moe_fill;  // contiguous layout: slot -> token
  std::vector<int64_t> token_slots;                          // token t's picks: [t * K, t * K + K)
  std::vector<float> expert_w;
  std::vector<gemm::LinearProblem> moe_problems;
  // logits
  std::vector<float> last;

  static float* get(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

}  // namespace ff
