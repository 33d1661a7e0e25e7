// Normal-mode (throughput) dispatch and combine, docs/ep.md "Protocol": the count matrix is
// exchanged first, then every row is written straight to its final place (direct addressing):
// into the destination's shared segment within a node, or sent once per destination node to
// the rank there with the sender's local index, which writes it into its node's segments.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/core.h"
#include "ep/ep_impl.h"
#include "ep/rows.h"

namespace ff::ep {
namespace {

size_t align64(size_t v) {
  return (v + 63) / 64 * 64;
}

int64_t scale_cols(int64_t hidden) {
  return hidden / kScaleBlock;
}

// The call's view of its rows' fields.
struct RowData {
  bool fp8 = false;
  int64_t hidden = 0;
  int num_topk = 0;
  bool f32 = false;
  size_t x_bytes() const { return size_t(hidden) * (fp8 ? 1 : f32 ? 4 : 2); }
  size_t scale_bytes() const { return fp8 ? size_t(scale_cols(hidden)) * 4 : 0; }
};

// Where each rank's rows for each destination start, from the count matrix.
struct Routing {
  int R = 0, nodes = 1, per_node = 1;
  std::vector<int> counts;       // [R, R]
  std::vector<int> node_counts;  // [R, nodes] (internode)
  std::vector<int64_t> starts;   // [R + 1, R]: tabulate() of counts
  int count(int s, int d) const { return counts[size_t(s * R + d)]; }
  // After counts is set: starts[s][d] = rows ranks < s sent to d.
  void tabulate() {
    starts.assign(size_t(R + 1) * R, 0);
    for (int s = 0; s < R; ++s)
      for (int d = 0; d < R; ++d)
        starts[size_t((s + 1) * R + d)] = starts[size_t(s * R + d)] + count(s, d);
  }
  // Where s's rows start in d's dispatch area.
  int64_t dispatch_start(int s, int d) const { return starts[size_t(s * R + d)]; }
  int64_t received(int d) const { return dispatch_start(R, d); }
  // The ranks whose tokens rank f forwards into its node: the other nodes' ranks with f's
  // local index, ascending.
  std::vector<int> forwarded_sources(int f) const {
    std::vector<int> v;
    for (int b = 0; b < nodes; ++b)
      if (b != f / per_node) v.push_back(b * per_node + f % per_node);
    return v;
  }
};

void copy_row(char* dst_area, const DispatchRows& dr, const RowData& rd, int64_t row, const void* x,
              const float* scales, int d, int experts_per_rank, const int64_t* topk, const float* w,
              int src_idx) {
  std::memcpy(dst_area + dr.x + size_t(row) * rd.x_bytes(), x, rd.x_bytes());
  if (rd.fp8)
    std::memcpy(dst_area + dr.scales + size_t(row) * rd.scale_bytes(), scales, rd.scale_bytes());
  if (topk) {
    auto* idx = reinterpret_cast<int64_t*>(dst_area + dr.idx) + row * rd.num_topk;
    auto* wt = reinterpret_cast<float*>(dst_area + dr.weights) + row * rd.num_topk;
    const int64_t lo = int64_t(d) * experts_per_rank, hi = lo + experts_per_rank;
    for (int k = 0; k < rd.num_topk; ++k) {
      const bool local = topk[k] >= lo && topk[k] < hi;
      idx[k] = local ? topk[k] - lo : -1;
      wt[k] = local && w ? w[k] : 0.f;
    }
  }
  reinterpret_cast<int32_t*>(dst_area + dr.src)[row] = src_idx;
}

void set_error(CallHeader& h, const std::string& msg) {
  h.status = 1;
  std::snprintf(h.message, sizeof h.message, "%s", msg.c_str());
}

}  // namespace

RowSizes row_sizes(int64_t hidden, int num_topk, bool fp8, bool f32) {
  const RowData rd{fp8, hidden, num_topk, f32};
  const size_t dispatch = rd.x_bytes() + rd.scale_bytes() + size_t(num_topk) * 12 + 4;
  return {dispatch, size_t(hidden) * 2 + size_t(num_topk) * 4, (8 + dispatch + 7) / 8 * 8};
}

DispatchRows dispatch_rows(size_t area, int64_t hidden, int num_topk, bool fp8, bool f32) {
  const RowData rd{fp8, hidden, num_topk, f32};
  const size_t per_row = row_sizes(hidden, num_topk, fp8, f32).dispatch;
  DispatchRows r;
  r.cap = area > 5 * 64 ? int64_t((area - 5 * 64) / per_row) : 0;
  const size_t cap = size_t(r.cap);
  r.x = 0;
  r.scales = align64(r.x + cap * rd.x_bytes());
  r.idx = align64(r.scales + cap * rd.scale_bytes());
  r.weights = align64(r.idx + cap * size_t(num_topk) * 8);
  r.src = align64(r.weights + cap * size_t(num_topk) * 4);
  return r;
}

DispatchResult Buffer::dispatch(const DispatchArgs& a) {
  Impl& b = *impl_;
  b.enter();
  const int R = b.num_ranks, nodes = b.num_nodes, me = b.rank;
  const Tokens& x = a.x;
  const bool cached = a.handle != nullptr;
  CallHeader h;
  h.kind = x.fp8 ? 1 : x.f32 ? 3 : 0;
  h.num_tokens = x.num_tokens;
  h.hidden = x.hidden;
  h.num_topk = cached ? 0 : a.num_topk;
  h.num_experts = cached ? 0 : a.num_experts;
  h.cached = cached;
  h.with_weights = !cached && a.topk_weights != nullptr;
  // Local validation; the verdict travels with the header.
  std::string err;
  if (b.low_latency)
    err =
        "the buffer was built for the low-latency mode (its receive halves share the areas): "
        "use a separate Buffer for dispatch / combine";
  else if (x.num_tokens < 0 || x.hidden <= 0)
    err = fmt::format("bad x shape [{}, {}]", x.num_tokens, x.hidden);
  else if (x.num_tokens > 0 && !x.data)
    err = "x has no data";
  else if (x.fp8 && x.f32)
    err = "x is marked both fp8 and f32";
  else if (x.fp8 && (x.hidden % kScaleBlock != 0 || (x.num_tokens > 0 && !x.scales)))
    err = fmt::format("FP8 x needs hidden divisible by {} and scales (hidden {})", kScaleBlock,
                      x.hidden);
  else if (a.expert_alignment < 1)
    err = fmt::format("expert_alignment {} must be >= 1", a.expert_alignment);
  else if (cached && (a.handle->num_ranks != R || a.handle->num_tokens != x.num_tokens))
    err = fmt::format("the cached handle is for {} tokens on {} ranks, not {} on {}",
                      a.handle->num_tokens, a.handle->num_ranks, x.num_tokens, R);
  else if (!cached)
    err = routing_error(a.topk_idx, x.num_tokens, a.num_topk, a.num_experts, R);
  // The routing: this rank's row of the count matrix, the per-expert counts, slots.
  const int E = cached ? 0 : a.num_experts, K = cached ? 0 : a.num_topk;
  Handle hd;
  if (err.empty()) {
    if (cached) {
      hd = *a.handle;
    } else {
      const Layout l = a.layout ? *a.layout : get_dispatch_layout(a.topk_idx, x.num_tokens, K, E);
      if (l.is_token_in_rank.size() != size_t(x.num_tokens * R) ||
          l.num_tokens_per_expert.size() != size_t(E))
        err = "the layout does not match topk_idx (pass get_dispatch_layout's result)";
      hd.num_ranks = R;
      hd.num_tokens = x.num_tokens;
      hd.is_token_in_rank = l.is_token_in_rank;
      hd.num_recv_tokens_per_expert = l.num_tokens_per_expert;  // this rank's, for the exchange
    }
  }
  if (!err.empty()) set_error(h, err);
  const std::vector<CallHeader> heads = agree(b, h, "dispatch");
  hd.hidden = x.hidden;
  const RowData rd{x.fp8, x.hidden, K, x.f32};
  // The count matrix, per-node counts and per-expert counts: exchanged, or the handle's.
  Routing rt;
  rt.R = R;
  rt.nodes = nodes;
  rt.per_node = b.per_node;
  std::vector<int> expert_counts;  // [R, E] (not cached)
  if (!cached) {
    hd.send_slot.assign(size_t(x.num_tokens * R), -1);
    std::vector<int> mine(size_t(R + nodes + E), 0);
    std::vector<uint8_t> in_node(static_cast<size_t>(nodes));
    for (int64_t t = 0; t < x.num_tokens; ++t) {
      std::fill(in_node.begin(), in_node.end(), 0);
      for (int d = 0; d < R; ++d)
        if (hd.is_token_in_rank[size_t(t * R + d)]) {
          hd.send_slot[size_t(t * R + d)] = mine[size_t(d)]++;
          in_node[size_t(b.node_of(d))] = 1;
        }
      for (int n = 0; n < nodes; ++n) mine[size_t(R + n)] += in_node[size_t(n)];
    }
    std::copy(hd.num_recv_tokens_per_expert.begin(), hd.num_recv_tokens_per_expert.end(),
              mine.begin() + R + nodes);
    const auto all = b.exchange({reinterpret_cast<const char*>(mine.data()), mine.size() * 4},
                                "dispatch counts");
    rt.counts.resize(size_t(R * R));
    rt.node_counts.resize(size_t(R * nodes));
    expert_counts.resize(size_t(R * E));
    for (int s = 0; s < R; ++s) {
      const int* v = reinterpret_cast<const int*>(all[size_t(s)].data());
      std::copy(v, v + R, rt.counts.begin() + s * R);
      std::copy(v + R, v + R + nodes, rt.node_counts.begin() + s * nodes);
      std::copy(v + R + nodes, v + R + nodes + E, expert_counts.begin() + int64_t(s) * E);
    }
    hd.counts = rt.counts;
    hd.node_counts = rt.node_counts;
  } else {
    rt.counts = hd.counts;
    rt.node_counts = hd.node_counts;
  }
  rt.tabulate();
  // Rows of ranks <= s for d (inclusive): the next rank's start.
  hd.rank_prefix_matrix.assign(rt.starts.begin() + R, rt.starts.end());
  // Capacities, checked for every rank on every rank (the same verdict everywhere).
  const RowSizes rs = row_sizes(x.hidden, K, rd.fp8, rd.f32);
  const DispatchRows dr = dispatch_rows(b.nvl_bytes, x.hidden, K, rd.fp8, rd.f32);
  for (int d = 0; d < R; ++d)
    FF_CHECK(rt.received(d) <= dr.cap,
             "ep: dispatch: rank {} receives {} rows of {} bytes, more than its num_nvl_bytes {} "
             "holds ({} rows; Buffer::size_hint gives enough)",
             d, rt.received(d), rs.dispatch, b.nvl_bytes, dr.cap);
  if (nodes > 1)
    for (int r = 0; r < R; ++r) {
      int64_t out = 0, in = 0;
      for (int n = 0; n < nodes; ++n)
        if (n != b.node_of(r)) out += rt.node_counts[size_t(r * nodes + n)];
      for (const int s : rt.forwarded_sources(r))
        in += rt.node_counts[size_t(s * nodes + b.node_of(r))];
      FF_CHECK(size_t(std::max(out, in)) * rs.forward <= b.rdma_bytes,
               "ep: dispatch: rank {} stages {} rows of {} bytes for other nodes, more than its "
               "num_rdma_bytes {} holds (Buffer::size_hint gives enough)",
               r, std::max(out, in), rs.forward, b.rdma_bytes);
    }
  const int experts_per_rank = cached ? 0 : E / R;
  const auto* xb = static_cast<const char*>(x.data);
  const float* xs = x.fp8 ? x.scales : nullptr;
  const int64_t sc = rd.fp8 ? scale_cols(x.hidden) : 0;
  const int64_t* topk = cached ? nullptr : a.topk_idx;
  const auto token_x = [&](int64_t t) { return xb + size_t(t) * rd.x_bytes(); };
  // Own node: straight into the destinations' segments.
  for (int64_t t = 0; t < x.num_tokens; ++t)
    for (int d = b.node * b.per_node; d < (b.node + 1) * b.per_node; ++d) {
      const int slot = hd.send_slot[size_t(t * R + d)];
      if (slot < 0) continue;
      copy_row(b.dispatch_area(d % b.per_node), dr, rd, rt.dispatch_start(me, d) + slot, token_x(t),
               xs ? xs + t * sc : nullptr, d, experts_per_rank, topk ? topk + t * K : nullptr,
               a.topk_weights && !cached ? a.topk_weights + t * K : nullptr, int(t));
    }
  // Other nodes: one message per node to the rank with this local index, forwarded there.
  if (nodes > 1) {
    const size_t fwd = rs.forward;
    std::vector<std::span<const char>> sends(static_cast<size_t>(R));
    std::vector<std::span<char>> recvs(static_cast<size_t>(R));
    size_t at = 0;
    for (int n = 0; n < nodes; ++n) {
      if (n == b.node) continue;
      const int f = b.global_rank(n, b.local);
      const size_t begin = at;
      for (int64_t t = 0; t < x.num_tokens; ++t) {
        uint32_t mask = 0;
        for (int l = 0; l < b.per_node; ++l)
          if (hd.is_token_in_rank[size_t(t * R + b.global_rank(n, l))]) mask |= 1u << l;
        if (!mask) continue;
        char* p = b.stage_send.data() + at;
        const int32_t src = int32_t(t);
        std::memcpy(p, &src, 4);
        std::memcpy(p + 4, &mask, 4);
        std::memcpy(p + 8, token_x(t), rd.x_bytes());
        char* q = p + 8 + rd.x_bytes();
        if (xs) std::memcpy(q, xs + t * sc, rd.scale_bytes());
        q += rd.scale_bytes();
        if (topk) {
          std::memcpy(q, topk + t * K, size_t(K) * 8);
          if (a.topk_weights)
            std::memcpy(q + size_t(K) * 8, a.topk_weights + t * K, size_t(K) * 4);
          else
            std::memset(q + size_t(K) * 8, 0, size_t(K) * 4);
        }
        at += fwd;
      }
      sends[size_t(f)] = {b.stage_send.data() + begin, at - begin};
    }
    at = 0;
    for (const int s : rt.forwarded_sources(me)) {
      const size_t n = size_t(rt.node_counts[size_t(s * nodes + b.node)]) * fwd;
      recvs[size_t(s)] = {b.stage_recv.data() + at, n};
      at += n;
    }
    b.transfer(sends, recvs, "dispatch (internode)");
    // Forward: each source's tokens, in order, to the local destinations in their masks.
    hd.fwd_masks.clear();
    at = 0;
    for (const int s : rt.forwarded_sources(me)) {
      std::vector<int> next(size_t(b.per_node), 0);  // slot per local destination
      const int64_t n = rt.node_counts[size_t(s * nodes + b.node)];
      for (int64_t i = 0; i < n; ++i, at += fwd) {
        const char* p = b.stage_recv.data() + at;
        int32_t src = 0;
        uint32_t mask = 0;
        std::memcpy(&src, p, 4);
        std::memcpy(&mask, p + 4, 4);
        hd.fwd_masks.push_back(mask);
        const char* q = p + 8 + rd.x_bytes();
        const float* scales = reinterpret_cast<const float*>(q);
        const auto* tk = reinterpret_cast<const int64_t*>(q + rd.scale_bytes());
        const auto* tw = reinterpret_cast<const float*>(q + rd.scale_bytes() + size_t(K) * 8);
        for (int l = 0; l < b.per_node; ++l) {
          if (!(mask >> l & 1u)) continue;
          const int d = b.global_rank(b.node, l);
          copy_row(b.dispatch_area(l), dr, rd, rt.dispatch_start(s, d) + next[size_t(l)]++, p + 8,
                   rd.fp8 ? scales : nullptr, d, experts_per_rank, cached ? nullptr : tk,
                   heads[size_t(s)].with_weights ? tw : nullptr, src);
        }
      }
    }
  }
  b.node_barrier("dispatch (rows delivered)");
  // This rank's rows are complete: views for the data, copies of the small fields.
  DispatchResult res;
  char* area = b.dispatch_area(b.local);
  res.num_recv = rt.received(me);
  hd.num_recv = res.num_recv;
  if (rd.fp8) {
    res.recv_x_fp8 = reinterpret_cast<uint8_t*>(area + dr.x);
    res.recv_scales = reinterpret_cast<float*>(area + dr.scales);
  } else if (rd.f32) {
    res.recv_x_f32 = reinterpret_cast<float*>(area + dr.x);
  } else {
    res.recv_x = reinterpret_cast<uint16_t*>(area + dr.x);
  }
  const auto* src = reinterpret_cast<const int32_t*>(area + dr.src);
  hd.recv_src_idx.assign(src, src + res.num_recv);
  if (!cached) {
    const auto* idx = reinterpret_cast<const int64_t*>(area + dr.idx);
    const auto* wt = reinterpret_cast<const float*>(area + dr.weights);
    res.recv_topk_idx.assign(idx, idx + res.num_recv * K);
    res.recv_topk_weights.assign(wt, wt + res.num_recv * K);
    hd.num_recv_tokens_per_expert.assign(size_t(experts_per_rank), 0);
    for (int e = 0; e < experts_per_rank; ++e) {
      int64_t c = 0;
      for (int s = 0; s < R; ++s)
        c += expert_counts[size_t(int64_t(s) * E + me * experts_per_rank + e)];
      c = (c + a.expert_alignment - 1) / a.expert_alignment * a.expert_alignment;
      hd.num_recv_tokens_per_expert[size_t(e)] = int(c);
    }
  }
  res.num_recv_tokens_per_expert = hd.num_recv_tokens_per_expert;
  res.handle = std::move(hd);
  return res;
}

namespace {

// combine for BF16 rows (f32 false: sums rounded to BF16 when they cross nodes and at the end)
// or F32 rows (kept in fp32). out_x: [num_tokens, hidden] of the rows' type.
std::vector<float> combine_rows(Buffer::Impl& b, const void* x, bool f32, const Handle& hd,
                                const float* topk_weights, int num_topk, const uint16_t* bias0,
                                const uint16_t* bias1, void* out_x) {
  const int R = b.num_ranks, nodes = b.num_nodes, me = b.rank, L = b.per_node;
  CallHeader h;
  h.kind = f32 ? 4 : 2;
  h.num_tokens = hd.num_tokens;
  h.hidden = hd.hidden;
  h.num_topk = num_topk;
  h.with_weights = num_topk > 0;
  std::string err;
  if (b.low_latency)
    err = "the buffer was built for the low-latency mode: use a separate Buffer for combine";
  else if (hd.num_ranks != R || hd.counts.size() != size_t(R * R) ||
           hd.send_slot.size() != size_t(hd.num_tokens * R) ||
           (nodes > 1 && hd.node_counts.size() != size_t(R * nodes)))
    err = "the handle is not from a dispatch on this buffer";
  else if (hd.num_recv > 0 && !x)
    err = fmt::format("x is null but {} rows were received", hd.num_recv);
  else if (num_topk < 0 || num_topk > kMaxTopk)
    err = fmt::format("num_topk {} is outside [0, {}]", num_topk, kMaxTopk);
  else if (num_topk > 0 && hd.num_recv > 0 && !topk_weights)
    err = fmt::format("topk_weights is null but num_topk is {}", num_topk);
  if (!err.empty()) set_error(h, err);
  agree(b, h, "combine");
  const int K = num_topk;
  const int64_t H = hd.hidden;
  Routing rt;
  rt.R = R;
  rt.nodes = nodes;
  rt.per_node = L;
  rt.counts = hd.counts;
  rt.node_counts = hd.node_counts;
  rt.tabulate();
  const size_t row_bytes = size_t(H) * (f32 ? 4 : 2), wbytes = size_t(K) * 4;
  const size_t per_row = row_bytes + wbytes;
  const int64_t cap = int64_t(b.nvl_bytes / std::max<size_t>(per_row, 1)) - 1;
  for (int r = 0; r < R; ++r)
    FF_CHECK(rt.received(r) <= cap,
             "ep: combine: rank {} returns {} rows of {} bytes, more than its num_nvl_bytes {} "
             "holds (Buffer::size_hint gives enough)",
             r, rt.received(r), per_row, b.nvl_bytes);
  // Each rank's rows stay where they are if they already lie in its segment (the dispatch
  // view, combined in place, or combine_buffer()); otherwise they are copied to its combine
  // area. The sources then read them there: no copy at all in the first two cases.
  const auto weights_of = [&](char* area) {
    return reinterpret_cast<float*>(area + align64(size_t(cap) * row_bytes));
  };
  char* own = b.combine_area(b.local);
  uint32_t where = 0;  // 0: combine area, 1: dispatch area
  if (x == b.dispatch_area(b.local))
    where = 1;
  else if (x != own && hd.num_recv > 0)
    std::memcpy(own, x, size_t(hd.num_recv) * row_bytes);
  if (K && hd.num_recv > 0)
    std::memcpy(weights_of(own), topk_weights, size_t(hd.num_recv) * wbytes);
  b.control(b.local)->combine_rows_at.store(where, std::memory_order_relaxed);
  b.node_barrier("combine (rows in place)");
  std::vector<const char*> rows_of(static_cast<size_t>(L));
  std::vector<const float*> weights_at(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) {
    const bool disp = b.control(l)->combine_rows_at.load(std::memory_order_relaxed) == 1;
    rows_of[size_t(l)] = disp ? b.dispatch_area(l) : b.combine_area(l);
    weights_at[size_t(l)] = weights_of(b.combine_area(l));
  }
  std::vector<float> acc(static_cast<size_t>(H));
  std::vector<float> wacc(static_cast<size_t>(K));
  const auto add_row = [&](float* sum, const char* row) {
    if (f32)
      add_f32(sum, reinterpret_cast<const float*>(row), H);
    else
      add_bf16(sum, reinterpret_cast<const uint16_t*>(row), H);
  };
  // A finished sum as a row of the rows' type.
  const auto store_row = [&](const float* sum, void* dst) {
    if (f32)
      std::memcpy(dst, sum, size_t(H) * 4);
    else
      convert_f32_to_bf16(sum, static_cast<uint16_t*>(dst), size_t(H));
  };
  char* out_rows = static_cast<char*>(out_x);
  // Sums, over this node's ranks ascending, the rows they received from rank s for one token
  // (its slot among s's rows for each of them; -1 or a clear mask bit: not sent there).
  const auto node_sum = [&](int s, const int* slots, uint32_t mask_or_all, bool use_mask) {
    std::fill(acc.begin(), acc.end(), 0.f);
    std::fill(wacc.begin(), wacc.end(), 0.f);
    for (int l = 0; l < L; ++l) {
      const int d = b.global_rank(b.node, l);
      const int slot = slots[l];
      if (use_mask ? !(mask_or_all >> l & 1u) : slot < 0) continue;
      const int64_t row = rt.dispatch_start(s, d) + slot;
      add_row(acc.data(), rows_of[size_t(l)] + size_t(row) * row_bytes);
      for (int k = 0; k < K; ++k) wacc[size_t(k)] += weights_at[size_t(l)][row * K + k];
    }
  };
  std::vector<float> out_weights(size_t(hd.num_tokens * K));
  if (nodes == 1) {
    // Per token, in chunks of channels whose sum stays in L1: the rows (ranks ascending), then
    // the biases, rounded once -- per channel the same operations as node_sum's.
    constexpr int64_t kChunk = 512;
    std::vector<const char*> src(static_cast<size_t>(L));
    for (int64_t t = 0; t < hd.num_tokens; ++t) {
      const int* slots = &hd.send_slot[size_t(t * R)];
      int n = 0;
      std::fill(wacc.begin(), wacc.end(), 0.f);
      for (int l = 0; l < L; ++l) {
        if (slots[l] < 0) continue;
        const int64_t row = rt.dispatch_start(me, l) + slots[l];
        src[size_t(n++)] = rows_of[size_t(l)] + size_t(row) * row_bytes;
        for (int k = 0; k < K; ++k) wacc[size_t(k)] += weights_at[size_t(l)][row * K + k];
      }
      char* dst = out_rows + size_t(t) * row_bytes;
      const size_t es = f32 ? 4 : 2;
      for (int64_t c0 = 0; c0 < H; c0 += kChunk) {
        const int64_t nc = std::min(kChunk, H - c0);
        std::fill(acc.begin(), acc.begin() + nc, 0.f);
        for (int i = 0; i < n; ++i) {
          if (f32)
            add_f32(acc.data(), reinterpret_cast<const float*>(src[size_t(i)]) + c0, nc);
          else
            add_bf16(acc.data(), reinterpret_cast<const uint16_t*>(src[size_t(i)]) + c0, nc);
        }
        if (bias0) add_bf16(acc.data(), bias0 + t * H + c0, nc);
        if (bias1) add_bf16(acc.data(), bias1 + t * H + c0, nc);
        if (f32)
          std::memcpy(dst + size_t(c0) * es, acc.data(), size_t(nc) * 4);
        else
          convert_f32_to_bf16(acc.data(), reinterpret_cast<uint16_t*>(dst) + c0, size_t(nc));
      }
      std::copy(wacc.begin(), wacc.end(), out_weights.begin() + t * K);
    }
    b.node_barrier("combine (rows read)");  // the rows were read in place: now reusable
    return out_weights;
  }
  // Forwarders: each forwarded token's node sum (BF16, weights f32) back to its source.
  const size_t msg_row = row_bytes + wbytes;
  std::vector<std::span<const char>> sends(static_cast<size_t>(R));
  std::vector<std::span<char>> recvs(static_cast<size_t>(R));
  std::vector<char> send_buf, recv_buf;
  {
    int64_t total = 0;
    for (const int s : rt.forwarded_sources(me))
      total += rt.node_counts[size_t(s * nodes + b.node)];
    send_buf.resize(size_t(total) * msg_row);
    size_t at = 0, q = 0;
    std::vector<int> slots(static_cast<size_t>(L));
    for (const int s : rt.forwarded_sources(me)) {
      const size_t begin = at;
      std::vector<int> next(size_t(L), 0);
      const int64_t n = rt.node_counts[size_t(s * nodes + b.node)];
      for (int64_t t = 0; t < n; ++t, ++q, at += msg_row) {
        const uint32_t mask = hd.fwd_masks[q];
        for (int l = 0; l < L; ++l) slots[size_t(l)] = mask >> l & 1u ? next[size_t(l)]++ : -1;
        node_sum(s, slots.data(), mask, true);
        store_row(acc.data(), send_buf.data() + at);
        if (K) std::memcpy(send_buf.data() + at + row_bytes, wacc.data(), wbytes);
      }
      sends[size_t(s)] = {send_buf.data() + begin, at - begin};
    }
    int64_t back = 0;
    for (int n = 0; n < nodes; ++n)
      if (n != b.node) back += rt.node_counts[size_t(me * nodes + n)];
    recv_buf.resize(size_t(back) * msg_row);
    at = 0;
    for (int n = 0; n < nodes; ++n) {
      if (n == b.node) continue;
      const size_t len = size_t(rt.node_counts[size_t(me * nodes + n)]) * msg_row;
      recvs[size_t(b.global_rank(n, b.local))] = {recv_buf.data() + at, len};
      at += len;
    }
  }
  b.transfer(sends, recvs, "combine (internode)");
  // Sources: per token, the node sums in ascending node order (BF16: this node's rounded like
  // the others'), then the biases; one rounding at the end.
  std::vector<size_t> node_msg(size_t(nodes), 0);  // next row of each node's message
  {
    size_t at = 0;
    for (int n = 0; n < nodes; ++n) {
      node_msg[size_t(n)] = at;
      if (n != b.node) at += size_t(rt.node_counts[size_t(me * nodes + n)]) * msg_row;
    }
  }
  std::vector<float> total(static_cast<size_t>(H)), wtotal(static_cast<size_t>(K));
  std::vector<uint16_t> rounded(static_cast<size_t>(H));
  for (int64_t t = 0; t < hd.num_tokens; ++t) {
    std::fill(total.begin(), total.end(), 0.f);
    std::fill(wtotal.begin(), wtotal.end(), 0.f);
    const int* slots = &hd.send_slot[size_t(t * R)];
    for (int n = 0; n < nodes; ++n) {
      bool in = false;
      for (int l = 0; l < L; ++l) in = in || slots[b.global_rank(n, l)] >= 0;
      if (!in) continue;
      if (n == b.node) {
        node_sum(me, slots + n * L, 0, false);
        if (f32) {
          add_f32(total.data(), acc.data(), H);
        } else {
          convert_f32_to_bf16(acc.data(), rounded.data(), size_t(H));
          add_bf16(total.data(), rounded.data(), H);
        }
        for (int k = 0; k < K; ++k) wtotal[size_t(k)] += wacc[size_t(k)];
      } else {
        const char* p = recv_buf.data() + node_msg[size_t(n)];
        node_msg[size_t(n)] += msg_row;
        add_row(total.data(), p);
        const auto* w = reinterpret_cast<const float*>(p + row_bytes);
        for (int k = 0; k < K; ++k) wtotal[size_t(k)] += w[k];
      }
    }
    if (bias0) add_bf16(total.data(), bias0 + t * H, H);
    if (bias1) add_bf16(total.data(), bias1 + t * H, H);
    store_row(total.data(), out_rows + size_t(t) * row_bytes);
    std::copy(wtotal.begin(), wtotal.end(), out_weights.begin() + t * K);
  }
  b.node_barrier("combine (rows read)");
  return out_weights;
}

}  // namespace

CombineResult Buffer::combine(const uint16_t* x, const Handle& hd, const float* topk_weights,
                              int num_topk, const uint16_t* bias0, const uint16_t* bias1,
                              uint16_t* out_x) {
  impl_->enter();
  CombineResult out;
  if (!out_x) {
    out.x.resize(size_t(std::max<int64_t>(hd.num_tokens, 0) * std::max<int64_t>(hd.hidden, 0)));
    out_x = out.x.data();
  }
  out.topk_weights =
      combine_rows(*impl_, x, false, hd, topk_weights, num_topk, bias0, bias1, out_x);
  return out;
}

std::vector<float> Buffer::combine_f32(const float* x, const Handle& hd, float* out,
                                       const float* topk_weights, int num_topk) {
  impl_->enter();
  FF_CHECK(out != nullptr || hd.num_tokens == 0, "ep: combine_f32: out is null");
  return combine_rows(*impl_, x, true, hd, topk_weights, num_topk, nullptr, nullptr, out);
}

uint16_t* Buffer::combine_buffer(const Handle& handle) {
  Impl& b = *impl_;
  FF_CHECK(size_t(handle.num_recv) * size_t(handle.hidden) * 2 <= b.nvl_bytes,
           "ep: combine_buffer: {} rows of hidden {} do not fit num_nvl_bytes {}", handle.num_recv,
           handle.hidden, b.nvl_bytes);
  return reinterpret_cast<uint16_t*>(b.combine_area(b.local));
}

}  // namespace ff::ep
