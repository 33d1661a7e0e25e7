// Private: the schedule's contents (the work split and the buffers it owns).
#pragma once
#include <cstdint>
#include <vector>

#include "mla/mla.h"

namespace ff::mla {

// A part's share of one request: blocks (of 64 tokens or 64 sparse indices) [block0, block1).
struct WorkItem {
  int64_t request = 0;
  int64_t block0 = 0, block1 = 0;
  int32_t split = -1;  // -1: the request is not split, write out/lse directly; else its slot
};

// Rows padded to this many so every SIMD backend works on whole vectors.
constexpr int64_t kRowPad = 16;
// Chunk tokens are padded (with a zero row) to a multiple of this.
constexpr int64_t kTokenPad = 16;
constexpr int64_t kChunkCap = kBlockSize + kTokenPad;

inline int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

// One part's scratch memory, sized once by the schedule.
struct PartBuffers {
  std::vector<float> q_rows;          // [rows][d] the request's queries as f32
  std::vector<float> q_packed;        // backend layout, d * row_pad floats
  std::vector<float> scores;          // [kChunkCap][row_pad]
  std::vector<float> p_packed;        // [kChunkCap][row_pad]
  std::vector<float> v_packed;        // [kChunkCap][dv] (bf16 pairs use half)
  std::vector<float> kv_rows;         // [kChunkCap][d] converted chunk rows (f32 or bf16)
  std::vector<float> zero_row;        // [d] zeros: padding tokens
  std::vector<float> o_acc;           // [dv][row_pad] backend accumulator
  std::vector<float> m, l;            // [row_pad] running max (log2 units) and sum
  std::vector<float> alpha;           // [row_pad] a chunk's rescale factors
  std::vector<int32_t> limit;         // [row_pad] keys each row may see (absolute position)
  std::vector<float> out_rows;        // [rows][dv] finished (normalised) output
  std::vector<float> lse_rows;        // [rows] natural lse; +inf when empty
  std::vector<const void*> row_ptrs;  // [kChunkCap]
};

struct MlaSchedule::Impl {
  bool sparse = false;
  int64_t batch = 0, rows = 0, h_kv = 1, s_q = 1, topk = 0;
  int64_t head_dim = 0, head_dim_v = 0, row_pad = 0;
  std::vector<int32_t> lengths;  // per batch entry: cache_seqlens or topk_length values
  int64_t num_requests = 0;
  std::vector<int64_t> request_blocks;       // per request
  std::vector<std::vector<WorkItem>> parts;  // per part
  std::vector<int32_t> num_splits;           // prefix sums, num_requests + 1
  std::vector<PartBuffers> buffers;          // per part
  std::vector<float> o_accum;                // [num split slots][rows][dv]
  std::vector<float> lse_accum;              // [num split slots][rows]
};

}  // namespace ff::mla
