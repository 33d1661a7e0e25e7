// get_mla_metadata: FlashMLA's greedy linear partition of the work, on CPU threads.
//
// A request (one sequence and KV head, or one sequence and query token when sparse) costs its
// number of 64-token blocks plus kFixedOverheadBlocks (FlashMLA's figure for the setup and the
// write-out). The requests are laid end to end and each part takes consecutive pieces up to an
// equal share, so every thread gets the same number of cache blocks to within one request's
// overhead. A request cut into several pieces gets one split slot per piece in o_accum/lse_accum.
#include <algorithm>

#include "mla/schedule.h"

namespace ff::mla {

namespace {

constexpr int64_t kFixedOverheadBlocks = 5;

void plan(MlaSchedule::Impl& s, int num_parts) {
  const int64_t P = std::max(num_parts, 1);
  int64_t total = 0;
  for (int64_t b : s.request_blocks) total += b + kFixedOverheadBlocks;
  const int64_t payload = (total + P - 1) / P;
  s.parts.assign(size_t(P), {});
  int64_t p = 0, used = 0;
  for (int64_t r = 0; r < s.num_requests; ++r) {
    const int64_t nb = s.request_blocks[size_t(r)];
    int64_t cur = 0;
    do {
      if (p + 1 < P && used > 0 && used + kFixedOverheadBlocks >= payload) {
        ++p;
        used = 0;
      }
      const int64_t room =
          p + 1 == P ? nb - cur : std::max<int64_t>(payload - used - kFixedOverheadBlocks, 1);
      const int64_t take = std::min(room, nb - cur);
      s.parts[size_t(p)].push_back({r, cur, cur + take, -1});
      used += take + kFixedOverheadBlocks;
      cur += take;
    } while (cur < nb);
  }
  // Count the pieces per request; split ones get consecutive slots.
  std::vector<int32_t> pieces(size_t(s.num_requests), 0);
  for (auto& part : s.parts)
    for (auto& it : part) ++pieces[size_t(it.request)];
  s.num_splits.assign(size_t(s.num_requests) + 1, 0);
  for (int64_t r = 0; r < s.num_requests; ++r)
    s.num_splits[size_t(r) + 1] = s.num_splits[size_t(r)] + pieces[size_t(r)];
  std::vector<int32_t> slot(size_t(s.num_requests), 0), next(size_t(s.num_requests), 0);
  int32_t slots = 0;
  for (int64_t r = 0; r < s.num_requests; ++r) {
    slot[size_t(r)] = slots;
    if (pieces[size_t(r)] > 1) slots += pieces[size_t(r)];
  }
  for (auto& part : s.parts)
    for (auto& it : part)
      if (pieces[size_t(it.request)] > 1)
        it.split = slot[size_t(it.request)] + next[size_t(it.request)]++;

  const int64_t d = s.head_dim, dv = s.head_dim_v, rp = s.row_pad;
  s.buffers.assign(size_t(P), {});
  for (auto& b : s.buffers) {
    b.q_rows.assign(size_t(s.rows * d), 0.f);
    b.q_packed.assign(size_t(round_up(d, 2) * rp), 0.f);
    b.scores.assign(size_t(kChunkCap * rp), 0.f);
    b.p_packed.assign(size_t(kChunkCap * rp), 0.f);
    b.v_packed.assign(size_t(kChunkCap * dv), 0.f);
    b.kv_rows.assign(size_t(kChunkCap * d), 0.f);
    b.zero_row.assign(size_t(round_up(d, 16)), 0.f);
    b.o_acc.assign(size_t(dv * rp), 0.f);
    b.m.assign(size_t(rp), 0.f);
    b.l.assign(size_t(rp), 0.f);
    b.alpha.assign(size_t(rp), 0.f);
    b.limit.assign(size_t(rp), 0);
    b.out_rows.assign(size_t(s.rows * dv), 0.f);
    b.lse_rows.assign(size_t(s.rows), 0.f);
    b.row_ptrs.assign(size_t(kChunkCap), nullptr);
  }
  s.o_accum.assign(size_t(slots) * size_t(s.rows * dv), 0.f);
  s.lse_accum.assign(size_t(slots) * size_t(s.rows), 0.f);
}

void check_dims(const MlaMetadataOptions& opt) {
  FF_CHECK(opt.head_dim > 0 && opt.head_dim_v > 0 && opt.head_dim_v <= opt.head_dim,
           "get_mla_metadata: head_dim {} and head_dim_v {} must satisfy 0 < dv <= d", opt.head_dim,
           opt.head_dim_v);
  FF_CHECK(opt.num_threads >= 0, "get_mla_metadata: num_threads {} < 0", opt.num_threads);
}

int parts_of(const MlaMetadataOptions& opt) {
  return opt.num_threads > 0 ? opt.num_threads : ThreadPool::global().size();
}

// Reads a [n] I32 view's values, checking each is in [0, max_value].
std::vector<int32_t> read_lengths(const TensorView& v, int64_t n, int64_t max_value,
                                  const char* what) {
  FF_CHECK(v.ndim == 1 && v.dtype == DType::I32 && v.shape[0] == n,
           "get_mla_metadata: {} must be I32 [{}], got {} {}", what, n, dtype_name(v.dtype),
           v.shape_str());
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t x = *v.at<int32_t>({i});
    FF_CHECK(x >= 0 && x <= max_value, "get_mla_metadata: {}[{}] = {} out of range [0, {}]", what,
             i, x, max_value);
    out[size_t(i)] = x;
  }
  return out;
}

}  // namespace

MlaSchedule::MlaSchedule() : impl_(std::make_unique<Impl>()) {}
MlaSchedule::~MlaSchedule() = default;
MlaSchedule::MlaSchedule(MlaSchedule&&) noexcept = default;
MlaSchedule& MlaSchedule::operator=(MlaSchedule&&) noexcept = default;
int MlaSchedule::num_parts() const {
  return int(impl_->parts.size());
}
const std::vector<int32_t>& MlaSchedule::num_splits() const {
  return impl_->num_splits;
}

MlaSchedule get_mla_metadata(const TensorView& cache_seqlens, int64_t num_q_tokens_per_head_k,
                             int64_t num_heads_k, const MlaMetadataOptions& opt) {
  check_dims(opt);
  FF_CHECK(num_q_tokens_per_head_k > 0 && num_heads_k > 0,
           "get_mla_metadata: num_q_tokens_per_head_k {} and num_heads_k {} must be > 0",
           num_q_tokens_per_head_k, num_heads_k);
  FF_CHECK(cache_seqlens.ndim == 1, "get_mla_metadata: cache_seqlens must be [b], got {}",
           cache_seqlens.shape_str());
  MlaSchedule sched;
  auto& s = sched.impl();
  s.batch = cache_seqlens.shape[0];
  s.lengths = read_lengths(cache_seqlens, s.batch, INT32_MAX, "cache_seqlens");
  s.rows = num_q_tokens_per_head_k;
  s.h_kv = num_heads_k;
  s.head_dim = opt.head_dim;
  s.head_dim_v = opt.head_dim_v;
  s.row_pad = round_up(s.rows, kRowPad);
  s.num_requests = s.batch * s.h_kv;
  s.request_blocks.resize(size_t(s.num_requests));
  for (int64_t r = 0; r < s.num_requests; ++r)
    s.request_blocks[size_t(r)] = (s.lengths[size_t(r / s.h_kv)] + kBlockSize - 1) / kBlockSize;
  plan(s, parts_of(opt));
  return sched;
}

MlaSchedule get_mla_sparse_metadata(int64_t batch, int64_t s_q, int64_t h_q, int64_t topk,
                                    const TensorView& topk_length, const MlaMetadataOptions& opt) {
  check_dims(opt);
  FF_CHECK(batch >= 0 && s_q > 0 && h_q > 0 && topk > 0,
           "get_mla_sparse_metadata: batch {}, s_q {}, h_q {}, topk {} must be positive", batch,
           s_q, h_q, topk);
  MlaSchedule sched;
  auto& s = sched.impl();
  s.sparse = true;
  s.batch = batch;
  s.s_q = s_q;
  s.topk = topk;
  if (topk_length.ndim == 0)
    s.lengths.assign(size_t(batch), int32_t(topk));
  else
    s.lengths = read_lengths(topk_length, batch, topk, "topk_length");
  s.rows = h_q;
  s.h_kv = 1;
  s.head_dim = opt.head_dim;
  s.head_dim_v = opt.head_dim_v;
  s.row_pad = round_up(s.rows, kRowPad);
  s.num_requests = batch * s_q;
  s.request_blocks.resize(size_t(s.num_requests));
  for (int64_t r = 0; r < s.num_requests; ++r)
    s.request_blocks[size_t(r)] = (s.lengths[size_t(r / s_q)] + kBlockSize - 1) / kBlockSize;
  plan(s, parts_of(opt));
  return sched;
}

}  // namespace ff::mla
