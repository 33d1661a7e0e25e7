// EPLB: upstream's README example, the tie convention (upstream issue #8), spread_replicas
// (issue #22), the building blocks, and one test per class of bad input.
// eplb_random_test.cc has the invariants and the comparison with an independent implementation.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "eplb_reference.h"
#include "plan/eplb.h"
#include "plan/eplb_steps.h"

namespace ff::plan {
namespace {

using Rows = std::vector<std::vector<double>>;

const Rows kReadmeLoads = {{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
                           {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};

std::vector<int32_t> row(const std::vector<int32_t>& flat, int layer, int width) {
  return {flat.begin() + layer * width, flat.begin() + (layer + 1) * width};
}

// Copies of one expert on one GPU, summed over GPUs and layers (0: every copy on its own GPU).
int duplicate_copies(const EplbPlan& plan) {
  int dups = 0;
  for (int l = 0; l < plan.num_layers; ++l) {
    for (int g = 0; g < plan.num_gpus; ++g) {
      std::set<int> seen;
      for (int s = g * plan.slots_per_gpu(); s < (g + 1) * plan.slots_per_gpu(); ++s)
        dups += seen.insert(plan.phy_to_log(l, s)).second ? 0 : 1;
    }
  }
  return dups;
}

TEST(Eplb, ReadmeExample) {
  const EplbPlan plan = rebalance_experts(LoadMatrix::from_rows(kReadmeLoads), 16, 4, 2, 8);
  EXPECT_TRUE(plan.hierarchical);
  EXPECT_EQ(row(plan.phy2log, 0, 16),
            (std::vector<int32_t>{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1}));
  EXPECT_EQ(row(plan.phy2log, 1, 16),
            (std::vector<int32_t>{7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}));
  EXPECT_EQ(row(plan.logcnt, 0, 12), (std::vector<int32_t>{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1}));
  EXPECT_EQ(row(plan.logcnt, 1, 12), (std::vector<int32_t>{1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1}));
  // Rank 0 is the original copy, wherever the packing put it (expert 1's is slot 15).
  ASSERT_EQ(plan.max_count, 2);
  EXPECT_EQ(row(plan.log2phy, 0, 24),
            (std::vector<int32_t>{12, -1, 15, 13, 11, -1, 6, -1, 7, 5,  0,  2,
                                  1,  -1, 3,  -1, 4,  -1, 9, -1, 8, 10, 14, -1}));
  EXPECT_EQ(row(plan.log2phy, 1, 24),
            (std::vector<int32_t>{13, -1, 15, 11, 8, -1, 14, -1, 9, -1, 10, 12,
                                  2,  4,  0,  -1, 6, 3,  7,  -1, 1, -1, 5,  -1}));
  for (int l = 0; l < 2; ++l) {
    for (int e = 0; e < 12; ++e) {
      for (int r = 0; r < plan.max_count; ++r) {
        if (r < plan.count(l, e))
          EXPECT_EQ(plan.phy_to_log(l, plan.log_to_phy(l, e, r)), e) << l << " " << e << " " << r;
        else
          EXPECT_EQ(plan.log_to_phy(l, e, r), -1);
      }
    }
  }
  // Per-GPU loads of layer 0, and max / mean load 1.21 and 1.24 (parallel.md's figures).
  const std::vector<double> gpu0 = {121.5, 86.5, 125, 113, 147.5, 131.5, 156, 152};
  for (int g = 0; g < 8; ++g) EXPECT_DOUBLE_EQ(plan.load_of_gpu(0, g), gpu0[size_t(g)]);
  EXPECT_NEAR(plan.imbalance_after[0], 1.21, 0.005);
  EXPECT_NEAR(plan.imbalance_after[1], 1.24, 0.005);
  // Before: 12 experts on 8 GPUs, GPU g holding experts [12g / 8, 12(g + 1) / 8): 0 | 1 2 |
  // 3 | 4 5 | 6 | 7 8 | 9 | 10 11. Max: 104 + 165 = 183 + 86 = 269, then 157 + 172 = 329.
  EXPECT_NEAR(plan.imbalance_before[0], 269.0 / (1033.0 / 8), 1e-12);
  EXPECT_NEAR(plan.imbalance_before[1], 329.0 / (1156.0 / 8), 1e-12);
}

// Upstream issue #8: in layer 1, expert 8's two copies (172 / 2 = 86) tie with expert 9 (86);
// torch.sort's tie order differs between versions, and one of the three plans seen puts both
// copies of expert 8 on one GPU. Here equal loads keep the lower index first: on node 0 the
// three 86s are expert 8's original (node-local 2), expert 9 (node-local 3) and expert 8's second
// copy (appended after the originals, 7), so GPU 3 takes the original and expert 9 and the copy
// goes to GPU 1. The plan is the README's, every time and on every machine.
TEST(Eplb, TieOrderIsFixedForIssue8) {
  const LoadMatrix layer1 = LoadMatrix::from_rows({kReadmeLoads[1]});
  const std::vector<int32_t> want = {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1};
  for (int run = 0; run < 5; ++run) {
    const EplbPlan plan = rebalance_experts(layer1, 16, 4, 2, 8);
    EXPECT_EQ(plan.phy2log, want);
    EXPECT_EQ(plan.gpu_of_slot(plan.log_to_phy(0, 8, 0)), 3);
    EXPECT_EQ(plan.gpu_of_slot(plan.log_to_phy(0, 8, 1)), 1);
    EXPECT_EQ(plan.gpu_of_slot(plan.log_to_phy(0, 9, 0)), 3);
  }
  // It is a tie: the reference implementation sees one (and, keeping the same convention,
  // agrees).
  const reference::Plan ref = reference::rebalance({kReadmeLoads[1]}, 16, 4, 2, 8);
  EXPECT_TRUE(ref.had_tie);
  EXPECT_EQ(std::vector<int32_t>(ref.phy2log[0].begin(), ref.phy2log[0].end()), want);
}

// Policies: groups % nodes != 0 falls back to the global policy (one group, one node), as
// upstream does; asking for the hierarchical policy then is an error (see BadInput below).
TEST(Eplb, GlobalPolicyWhenGroupsDoNotSplitOverNodes) {
  const LoadMatrix loads = LoadMatrix::from_rows(kReadmeLoads);
  const EplbPlan fallback = rebalance_experts(loads, 16, 3, 2, 8);
  const EplbPlan global = rebalance_experts(loads, 16, 1, 1, 8);
  const EplbPlan forced = rebalance_experts(loads, 16, 4, 2, 8, {.policy = EplbPolicy::Global});
  EXPECT_FALSE(fallback.hierarchical);
  EXPECT_FALSE(forced.hierarchical);
  EXPECT_EQ(fallback.phy2log, global.phy2log);
  EXPECT_EQ(forced.phy2log, global.phy2log);
  EXPECT_EQ(fallback.log2phy, global.log2phy);
  // Global packing ignores nodes: here it balances better than the hierarchical plan.
  EXPECT_LT(global.imbalance_after[0], 1.21);
}

TEST(EplbSteps, ReplicateGivesEachSlotToTheLargestLoadPerCopy) {
  std::vector<int32_t> expert(5), rank(5), count(3);
  eplb_detail::ReplicateScratch scratch;
  // 10, 30, 20 -> 30 is split (15 each), then 20 is the largest (10 each).
  eplb_detail::replicate_experts(std::vector<double>{10, 30, 20}, 5, scratch, expert, rank, count);
  EXPECT_EQ(expert, (std::vector<int32_t>{0, 1, 2, 1, 2}));
  EXPECT_EQ(rank, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(count, (std::vector<int32_t>{1, 2, 2}));
  // Ties go to the lowest index, and keep going there while it stays tied (all-zero loads).
  eplb_detail::replicate_experts(std::vector<double>{0, 0, 0}, 5, scratch, expert, rank, count);
  EXPECT_EQ(count, (std::vector<int32_t>{3, 1, 1}));
}

TEST(EplbSteps, BalancedPackingFillsTheLightestPackWithRoom) {
  std::vector<int32_t> pack(4), rank(4);
  eplb_detail::PackScratch scratch;
  // 9 -> p0, 7 -> p1, 5 -> p1 (7 < 9; p1 now full), 1 -> p0.
  eplb_detail::balanced_packing(std::vector<double>{5, 9, 1, 7}, 2, {}, 0, scratch, pack, rank);
  EXPECT_EQ(pack, (std::vector<int32_t>{1, 0, 0, 1}));
  EXPECT_EQ(rank, (std::vector<int32_t>{1, 0, 1, 0}));
  // All equal: index order, first lightest pack.
  eplb_detail::balanced_packing(std::vector<double>{3, 3, 3, 3}, 2, {}, 0, scratch, pack, rank);
  EXPECT_EQ(pack, (std::vector<int32_t>{0, 1, 0, 1}));
  // One item per pack: the identity, whatever the weights.
  eplb_detail::balanced_packing(std::vector<double>{1, 5, 3, 9}, 4, {}, 0, scratch, pack, rank);
  EXPECT_EQ(pack, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(rank, (std::vector<int32_t>{0, 0, 0, 0}));
  // Spread. Plain: 6 -> p0, 5 -> p1, 4 -> p1 (5 < 6), 1 -> p0.
  const std::vector<double> w = {6, 5, 4, 1};
  eplb_detail::balanced_packing(w, 2, {}, 0, scratch, pack, rank);
  EXPECT_EQ(pack, (std::vector<int32_t>{0, 1, 1, 0}));
  // 5 and 4 share a key: 4 avoids p1 although p1 is lighter.
  eplb_detail::balanced_packing(w, 2, std::vector<int32_t>{0, 1, 1, 2}, 3, scratch, pack, rank);
  EXPECT_EQ(pack, (std::vector<int32_t>{0, 1, 0, 1}));
  // 5, 4 and 1 share a key: 4 avoids p1, which fills p0, so 1 has no choice but p1.
  eplb_detail::balanced_packing(w, 2, std::vector<int32_t>{0, 1, 1, 1}, 2, scratch, pack, rank);
  EXPECT_EQ(pack, (std::vector<int32_t>{0, 1, 0, 1}));
}

// Upstream issue #22: copies of a hot expert can share a GPU. Two small global cases where the
// default packing does that and spread_replicas does not.
TEST(EplbSpread, KeepsCopiesApartWhereTheDefaultDoesNot) {
  {
    // Expert 3 gets 4 copies of 7 on 4 GPUs; the default puts two on one GPU.
    const LoadMatrix loads = LoadMatrix::from_rows({{8, 2, 18, 28}});
    const EplbPlan plain = rebalance_experts(loads, 8, 1, 1, 4);
    const EplbPlan spread = rebalance_experts(loads, 8, 1, 1, 4, {.spread_replicas = true});
    EXPECT_GT(duplicate_copies(plain), 0);
    EXPECT_EQ(duplicate_copies(spread), 0);
    EXPECT_DOUBLE_EQ(plain.imbalance_after[0], spread.imbalance_after[0]);  // here for free
  }
  {
    // Copies 9, 9 (expert 2), 8, 7, 7 (expert 3), 3 on 2 GPUs of 3 slots. Default: {9, 8, 3} and
    // {9, 7, 7}, max 23. Spread moves one 7 across: {9, 8, 7} and {9, 7, 3}, max 24: the cost.
    const LoadMatrix loads = LoadMatrix::from_rows({{8, 3, 18, 14}});
    const EplbPlan plain = rebalance_experts(loads, 6, 1, 1, 2);
    const EplbPlan spread = rebalance_experts(loads, 6, 1, 1, 2, {.spread_replicas = true});
    EXPECT_EQ(plain.phy2log, (std::vector<int32_t>{2, 0, 1, 2, 3, 3}));
    EXPECT_EQ(spread.phy2log, (std::vector<int32_t>{2, 0, 3, 2, 3, 1}));
    EXPECT_EQ(duplicate_copies(spread), 0);
    EXPECT_DOUBLE_EQ(plain.load_of_gpu(0, 1), 23);
    EXPECT_DOUBLE_EQ(spread.load_of_gpu(0, 0), 24);
  }
}

// Random layers with a few hot experts, on both policies. Wherever no expert has more copies
// than its node has GPUs (so a plan without duplicates exists), spread_replicas finds one. That
// is not guaranteed by the greedy rule in general (a copy placed last can find only GPUs holding
// its expert), but copies belong to hot experts, which sort early; the fixed seed keeps this a
// regression check. The default packing must show duplicates on the same inputs, or the test
// proves nothing.
TEST(EplbSpread, NoDuplicatesWhereAvoidableOnRandomLayers) {
  std::mt19937_64 rng(22);
  int avoidable = 0, plain_dups = 0;
  for (int c = 0; c < 1000; ++c) {
    const int nodes = 1 << (rng() % 3), gpus_per_node = 2 + int(rng() % 4);
    const bool hierarchical = rng() % 2 == 0;
    const int groups = hierarchical ? nodes * (1 + int(rng() % 3)) : 1;
    const int experts = groups * (1 + int(rng() % 4)) * gpus_per_node;
    const int gpus = nodes * gpus_per_node;
    const int replicas = (experts / gpus + 1 + int(rng() % 2)) * gpus;
    if (experts % gpus != 0) continue;
    std::vector<double> w(static_cast<size_t>(experts));
    std::uniform_real_distribution<double> cold(1, 10);
    for (double& x : w) x = cold(rng);
    for (int h = 0; h < 3; ++h) w[rng() % size_t(experts)] = 40 + cold(rng) * 10;
    const LoadMatrix loads = LoadMatrix::from_rows({w});
    const EplbPlan plain = rebalance_experts(loads, replicas, groups, nodes, gpus);
    const EplbPlan spread =
        rebalance_experts(loads, replicas, groups, nodes, gpus, {.spread_replicas = true});
    EXPECT_EQ(spread.logcnt, plain.logcnt);  // spreading moves copies, never adds them
    if (spread.max_count > gpus_per_node) continue;
    ++avoidable;
    plain_dups += duplicate_copies(plain) > 0;
    EXPECT_EQ(duplicate_copies(spread), 0) << "case " << c;
  }
  EXPECT_GT(avoidable, 200);   // 243 with this seed
  EXPECT_GT(plain_dups, 100);  // 145
}

std::string error_of(const LoadMatrix& loads, int replicas, int groups, int nodes, int gpus,
                     EplbOptions options = {}) {
  try {
    rebalance_experts(loads, replicas, groups, nodes, gpus, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string rows_error_of(const Rows& rows) {
  try {
    LoadMatrix::from_rows(rows);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const LoadMatrix kTwelve = LoadMatrix::from_rows(kReadmeLoads);

TEST(EplbBadInput, Empty) {
  EXPECT_EQ(rows_error_of({}), "expert loads are empty: no layers");
  EXPECT_EQ(rows_error_of({{}}), "expert loads: layer 0 has no experts");
  EXPECT_EQ(error_of(LoadMatrix{}, 16, 1, 1, 1), "expert loads are empty: no layers");
  EXPECT_EQ(error_of(LoadMatrix{.num_layers = 1, .num_experts = 0, .values = {}}, 16, 1, 1, 1),
            "expert loads are empty: no experts");
}

TEST(EplbBadInput, RaggedRows) {
  EXPECT_EQ(rows_error_of({{1, 2, 3}, {1, 2, 3}, {1, 2}}),
            "expert loads: layer 2 has 2 experts, layer 0 has 3 (rows must be equal)");
}

TEST(EplbBadInput, NonPositiveCounts) {
  EXPECT_EQ(error_of(kTwelve, 0, 4, 2, 8), "num_replicas must be positive (got 0)");
  EXPECT_EQ(error_of(kTwelve, 16, -1, 2, 8), "num_groups must be positive (got -1)");
  EXPECT_EQ(error_of(kTwelve, 16, 4, 0, 8), "num_nodes must be positive (got 0)");
  EXPECT_EQ(error_of(kTwelve, 16, 4, 2, 0), "num_gpus must be positive (got 0)");
}

TEST(EplbBadInput, ExpertsNotAMultipleOfGroups) {
  EXPECT_EQ(error_of(kTwelve, 16, 5, 1, 8), "num_experts (12) is not a multiple of num_groups (5)");
}

TEST(EplbBadInput, GroupsNotAMultipleOfNodesForTheHierarchicalPolicy) {
  EXPECT_EQ(error_of(kTwelve, 16, 3, 2, 8, {.policy = EplbPolicy::Hierarchical}),
            "num_groups (3) is not a multiple of num_nodes (2), as the hierarchical policy needs");
  EXPECT_EQ(error_of(kTwelve, 16, 3, 2, 8), "(no error)");  // auto: the global policy
}

TEST(EplbBadInput, GpusNotAMultipleOfNodes) {
  EXPECT_EQ(error_of(kTwelve, 18, 4, 2, 3), "num_gpus (3) is not a multiple of num_nodes (2)");
}

TEST(EplbBadInput, ReplicasNotAMultipleOfGpus) {
  EXPECT_EQ(error_of(kTwelve, 15, 4, 2, 8), "num_replicas (15) is not a multiple of num_gpus (8)");
}

TEST(EplbBadInput, FewerReplicasThanExperts) {
  EXPECT_EQ(error_of(kTwelve, 8, 4, 2, 8),
            "num_replicas (8) is less than num_experts (12): every expert needs a slot");
}

TEST(EplbBadInput, NegativeLoad) {
  Rows rows = kReadmeLoads;
  rows[1][3] = -2;
  EXPECT_EQ(error_of(LoadMatrix::from_rows(rows), 16, 4, 2, 8),
            "expert load at layer 1, expert 3 is negative (-2)");
}

TEST(EplbBadInput, NonFiniteLoad) {
  Rows rows = kReadmeLoads;
  rows[0][11] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(error_of(LoadMatrix::from_rows(rows), 16, 4, 2, 8),
            "expert load at layer 0, expert 11 is not finite (nan)");
  rows[0][11] = 1;
  rows[1][0] = std::numeric_limits<double>::infinity();
  EXPECT_EQ(error_of(LoadMatrix::from_rows(rows), 16, 4, 2, 8),
            "expert load at layer 1, expert 0 is not finite (inf)");
  rows[1][0] = 1e308;
  rows[1][1] = 1e308;
  EXPECT_EQ(error_of(LoadMatrix::from_rows(rows), 16, 4, 2, 8),
            "expert loads of layer 1 sum past the largest double; scale them down");
}

// Sizes far past any deployment are refused before any work: a plan's time and memory stay bounded.
TEST(EplbBadInput, TooLarge) {
  EXPECT_EQ(error_of(kTwelve, 2000000000, 4, 2, 8),
            "num_replicas must be at most 65536 (got 2000000000)");
  EXPECT_EQ(error_of(kTwelve, 16384, 4, 2, 16384), "num_gpus must be at most 8192 (got 16384)");
  EXPECT_EQ(error_of(kTwelve, 65536, 1, 1, 8192),
            "num_replicas x GPUs per node = 65536 x 8192 is more than 16777216 (the packing "
            "weighs every GPU of a node for every copy)");
}

}  // namespace
}  // namespace ff::plan
