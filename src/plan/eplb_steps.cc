#include "plan/eplb_steps.h"

#include <algorithm>
#include <numeric>

namespace ff::plan::eplb_detail {

namespace {

// The first lightest pack among `open` (the packs with room, in index order) that `avoid` does
// not reject; -1 if it rejects them all. A linear scan: the packs are one node's GPUs, a
// handful, where a heap only adds overhead; selects rather than branches on the loads, which
// are in no predictable order.
template <typename Avoid>
int lightest_open_pack(const PackScratch& s, Avoid&& avoid) {
  int best = -1;
  double best_load = 0;
  for (const int32_t p : s.open) {
    if (avoid(p)) continue;
    const double load = s.pack_load[size_t(p)];
    const bool lighter = best < 0 || load < best_load;
    best = lighter ? p : best;
    best_load = lighter ? load : best_load;
  }
  return best;
}

}  // namespace

void balanced_packing(std::span<const double> weights, int num_packs,
                      std::span<const int32_t> spread_keys, int num_keys, PackScratch& s,
                      std::span<int32_t> pack, std::span<int32_t> rank_in_pack) {
  const int n = int(weights.size());
  const int capacity = n / num_packs;
  if (capacity == 1) {
    std::iota(pack.begin(), pack.end(), 0);
    std::fill(rank_in_pack.begin(), rank_in_pack.end(), 0);
    return;
  }
  // Descending, made total by the index: the order of a stable sort, without the buffer
  // std::stable_sort allocates.
  s.order.resize(size_t(n));
  for (int i = 0; i < n; ++i) s.order[size_t(i)] = {weights[size_t(i)], i};
  std::sort(s.order.begin(), s.order.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  s.pack_load.assign(size_t(num_packs), 0.0);
  s.pack_items.assign(size_t(num_packs), 0);
  s.open.resize(size_t(num_packs));
  std::iota(s.open.begin(), s.open.end(), 0);
  const bool spread = !spread_keys.empty();
  if (spread) {
    // Per key, the few packs that hold it: memory follows the items, not packs x keys.
    s.key_packs.resize(size_t(num_keys));
    for (auto& packs : s.key_packs) packs.clear();
    s.marked.assign(size_t(num_packs), -1);
  }
  for (const auto& [weight, item] : s.order) {
    int p = -1;
    if (spread) {
      std::vector<int32_t>& holders = s.key_packs[size_t(spread_keys[size_t(item)])];
      for (const int32_t q : holders) s.marked[size_t(q)] = item;  // O(1) tests in the scan
      p = lightest_open_pack(s, [&](int q) { return s.marked[size_t(q)] == item; });
      if (p < 0) p = lightest_open_pack(s, [](int) { return false; });
      holders.push_back(p);
    } else {
      p = lightest_open_pack(s, [](int) { return false; });
    }
    pack[size_t(item)] = p;
    rank_in_pack[size_t(item)] = s.pack_items[size_t(p)]++;
    s.pack_load[size_t(p)] += weight;
    if (s.pack_items[size_t(p)] == capacity)
      s.open.erase(std::find(s.open.begin(), s.open.end(), p));
  }
}

void replicate_experts(std::span<const double> weights, int num_slots, ReplicateScratch& s,
                       std::span<int32_t> slot_expert, std::span<int32_t> slot_rank,
                       std::span<int32_t> count) {
  const int num_experts = int(weights.size());
  for (int e = 0; e < num_experts; ++e) {
    slot_expert[size_t(e)] = e;
    slot_rank[size_t(e)] = 0;
    count[size_t(e)] = 1;
  }
  if (num_slots == num_experts) return;
  // A max-heap on (load per copy, lower index): its top is exactly the first maximum a linear
  // scan would find, in O(log E) a slot instead of O(E).
  const auto below = [](const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) {
    return a.first < b.first || (a.first == b.first && a.second > b.second);
  };
  s.heap.resize(size_t(num_experts));
  for (int e = 0; e < num_experts; ++e) s.heap[size_t(e)] = {weights[size_t(e)], e};
  std::make_heap(s.heap.begin(), s.heap.end(), below);
  for (int slot = num_experts; slot < num_slots; ++slot) {
    std::pop_heap(s.heap.begin(), s.heap.end(), below);
    const int32_t e = s.heap.back().second;
    slot_expert[size_t(slot)] = e;
    slot_rank[size_t(slot)] = count[size_t(e)]++;
    s.heap.back().first = weights[size_t(e)] / double(count[size_t(e)]);
    std::push_heap(s.heap.begin(), s.heap.end(), below);
  }
}

}  // namespace ff::plan::eplb_detail
