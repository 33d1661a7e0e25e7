// get_dispatch_layout and the buffer size hint: local computations, no communication.
#include <algorithm>

#include "core/core.h"
#include "ep/ep_impl.h"

namespace ff::ep {

std::string routing_error(const int64_t* topk_idx, int64_t num_tokens, int num_topk,
                          int num_experts, int num_ranks) {
  if (num_tokens < 0) return fmt::format("num_tokens {} is negative", num_tokens);
  if (num_topk < 1 || num_topk > kMaxTopk)
    return fmt::format("num_topk {} is outside [1, {}]", num_topk, kMaxTopk);
  if (num_experts < 1 || num_experts > kMaxExperts)
    return fmt::format("num_experts {} is outside [1, {}]", num_experts, kMaxExperts);
  if (num_experts % num_ranks != 0)
    return fmt::format("num_experts {} is not divisible by the {} ranks", num_experts, num_ranks);
  if (num_tokens > 0 && !topk_idx) return "topk_idx is null";
  for (int64_t i = 0; i < num_tokens * num_topk; ++i)
    if (topk_idx[i] < -1 || topk_idx[i] >= num_experts)
      return fmt::format("topk_idx[{}][{}] = {} is outside [-1, {})", i / num_topk, i % num_topk,
                         topk_idx[i], num_experts);
  return {};
}

Layout Buffer::get_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int num_topk,
                                   int num_experts) const {
  const Impl& b = *impl_;
  const int R = b.num_ranks;
  const std::string err = routing_error(topk_idx, num_tokens, num_topk, num_experts, R);
  FF_CHECK(err.empty(), "ep: get_dispatch_layout: {}", err);
  const int per_rank = num_experts / R;
  Layout l;
  l.num_tokens_per_rank.assign(size_t(R), 0);
  if (b.num_nodes > 1) l.num_tokens_per_node.assign(size_t(b.num_nodes), 0);
  l.num_tokens_per_expert.assign(size_t(num_experts), 0);
  l.is_token_in_rank.assign(size_t(num_tokens * R), 0);
  std::vector<uint8_t> in_node(size_t(b.num_nodes));
  for (int64_t t = 0; t < num_tokens; ++t) {
    uint8_t* in_rank = &l.is_token_in_rank[size_t(t * R)];
    std::fill(in_node.begin(), in_node.end(), 0);
    for (int k = 0; k < num_topk; ++k) {
      const int64_t e = topk_idx[t * num_topk + k];
      if (e < 0) continue;
      ++l.num_tokens_per_expert[size_t(e)];
      const int r = int(e / per_rank);
      if (!in_rank[r]) ++l.num_tokens_per_rank[size_t(r)];
      in_rank[r] = 1;
      in_node[size_t(b.node_of(r))] = 1;
    }
    for (int n = 0; n < b.num_nodes && b.num_nodes > 1; ++n)
      l.num_tokens_per_node[size_t(n)] += in_node[size_t(n)];
  }
  return l;
}

size_t Buffer::size_hint(int64_t tokens, int64_t hidden, int num_topk, int num_ranks, int num_nodes,
                         bool f32) {
  FF_CHECK(tokens >= 0 && hidden > 0 && num_topk > 0 && num_ranks > 0 && num_nodes > 0 &&
               num_ranks % num_nodes == 0,
           "ep::Buffer::size_hint: bad arguments (tokens {}, hidden {}, topk {}, ranks {}, "
           "nodes {})",
           tokens, hidden, num_topk, num_ranks, num_nodes);
  // Every rank's every token to one rank: the dispatch area's rows; combine reads the rows
  // where they are or copies them into an area of the same size (a combined row, data and
  // weights, is never longer than a dispatched one). The largest row type asked for.
  const size_t row = std::max({row_sizes(hidden, num_topk, true).dispatch,
                               row_sizes(hidden, num_topk, false).dispatch,
                               f32 ? row_sizes(hidden, num_topk, false, true).dispatch : 0});
  return size_t(num_ranks * tokens + 1) * row + 16 * 64;
}

}  // namespace ff::ep
