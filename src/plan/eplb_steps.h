// EPLB's two building blocks, on one row of loads at a time (plan/eplb.h composes them). They
// write into caller-owned spans and keep their working memory in a scratch object the caller
// reuses, so planning many layers allocates only while the scratch grows.
#pragma once
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace ff::plan::eplb_detail {

struct PackScratch {
  std::vector<std::pair<double, int32_t>> order;  // (weight, item), in packing order
  std::vector<double> pack_load;
  std::vector<int32_t> pack_items;
  std::vector<int32_t> open;                    // packs with room, ascending
  std::vector<std::vector<int32_t>> key_packs;  // [key]: the packs holding it (spread_keys only)
  std::vector<int32_t> marked;                  // [pack]: the item whose key it holds, if any
};

// Splits n = weights.size() items into num_packs packs of exactly n / num_packs items each (n %
// num_packs must be 0), trying to even out the packs' summed weights: items in descending weight
// order (equal weights: lower index first) each go to the lightest pack that still has room (the
// first on ties). With one item per pack it is the identity, item i in pack i.
//
// spread_keys (empty, or one key in [0, num_keys) per item): an item avoids packs already
// holding an item with its key, as long as a pack with room that does not exists (then the
// lightest such, first on ties); only when none does it falls back to the rule above.
//
// Writes pack[i] and rank_in_pack[i] (the order in which its pack received it, from 0).
void balanced_packing(std::span<const double> weights, int num_packs,
                      std::span<const int32_t> spread_keys, int num_keys, PackScratch& scratch,
                      std::span<int32_t> pack, std::span<int32_t> rank_in_pack);

struct ReplicateScratch {
  std::vector<std::pair<double, int32_t>> heap;  // (load per copy, expert)
};

// Gives num_slots >= E = weights.size() slots to E experts: slot e < E holds expert e's
// original (rank 0); each further slot goes to the expert whose load per copy, weight / count,
// is the largest at that point (the lowest expert index on ties), as its next rank.
// Writes slot_expert[num_slots], slot_rank[num_slots] and count[E].
void replicate_experts(std::span<const double> weights, int num_slots, ReplicateScratch& scratch,
                       std::span<int32_t> slot_expert, std::span<int32_t> slot_rank,
                       std::span<int32_t> count);

}  // namespace ff::plan::eplb_detail
