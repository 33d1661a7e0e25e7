// EPLB on random shapes and loads, both policies: the plan's structural invariants, a load bound
// that provably holds, and exact agreement with the independent implementation in
// eplb_reference.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "eplb_reference.h"
#include "plan/eplb.h"

namespace ff::plan {
namespace {

using Rows = std::vector<std::vector<double>>;

struct Shape {
  int experts, replicas, groups, nodes, gpus;
  bool hierarchical() const { return groups % nodes == 0; }
};

// A random valid shape, hierarchical or global as asked: 1-4 nodes of 1-4 GPUs, groups of 1-6
// experts, 0-3 spare slots per GPU beyond the fewest that fit.
Shape random_shape(std::mt19937_64& rng, bool hierarchical) {
  for (;;) {
    const int nodes = 1 + int(rng() % 4), gpus = nodes * (1 + int(rng() % 4));
    const int groups = hierarchical ? nodes * (1 + int(rng() % 3)) : 1 + int(rng() % 8);
    if (!hierarchical && groups % nodes == 0) continue;
    const int experts_per_group = 1 + int(rng() % 6);
    const int experts = groups * experts_per_group;
    const int replicas = ((experts + gpus - 1) / gpus + int(rng() % 4)) * gpus;
    return {experts, replicas, groups, nodes, gpus};
  }
}

// Loads of every kind: skewed (lognormal), small integers (many ties), some zeros.
Rows random_loads(std::mt19937_64& rng, int layers, int experts) {
  Rows rows(static_cast<size_t>(layers), std::vector<double>(static_cast<size_t>(experts)));
  std::lognormal_distribution<double> skewed(0.0, 1.5);
  for (auto& row : rows) {
    const int kind = int(rng() % 3);
    for (double& x : row) {
      if (kind == 0) x = skewed(rng);
      if (kind == 1) x = double(rng() % 8);
      if (kind == 2) x = rng() % 4 == 0 ? 0.0 : skewed(rng) * 100;
    }
  }
  return rows;
}

// Loads where no two quantities EPLB compares can be equal by accident: an integer part and a
// random fraction (2^-53 resolution), so equal loads per copy, w_a / c_a == w_b / c_b, or equal
// group sums have probability ~0. The reference still reports any tie it meets.
Rows distinct_loads(std::mt19937_64& rng, int layers, int experts) {
  Rows rows(static_cast<size_t>(layers), std::vector<double>(static_cast<size_t>(experts)));
  std::uniform_real_distribution<double> frac(0.0, 1.0);
  for (auto& row : rows)
    for (double& x : row) x = double(rng() % 1000) + frac(rng);
  return rows;
}

void check_structure(const EplbPlan& plan, const Rows& w, const Shape& s) {
  const int E = int(w[0].size()), R = s.replicas;
  ASSERT_EQ(plan.hierarchical, s.hierarchical());
  ASSERT_EQ(plan.slots_per_gpu() * s.gpus, R);  // every GPU has R / gpus slots
  for (int l = 0; l < plan.num_layers; ++l) {
    std::vector<int> held(size_t(E), 0);
    for (int p = 0; p < R; ++p) {
      const int e = plan.phy_to_log(l, p);
      ASSERT_TRUE(e >= 0 && e < E);
      ++held[size_t(e)];
    }
    int total = 0;
    std::vector<int> slot_seen(size_t(R), 0);
    for (int e = 0; e < E; ++e) {
      EXPECT_GE(plan.count(l, e), 1);
      EXPECT_EQ(plan.count(l, e), held[size_t(e)]);
      total += plan.count(l, e);
      for (int r = 0; r < plan.max_count; ++r) {
        const int p = plan.log_to_phy(l, e, r);
        if (r >= plan.count(l, e)) {
          EXPECT_EQ(p, -1);
          continue;
        }
        ASSERT_TRUE(p >= 0 && p < R);
        EXPECT_EQ(plan.phy_to_log(l, p), e);
        ++slot_seen[size_t(p)];
      }
    }
    EXPECT_EQ(total, R);
    EXPECT_EQ(std::count(slot_seen.begin(), slot_seen.end(), 1), R);  // each slot listed once

    // Hierarchical: a group's experts, and all their copies, on one node.
    if (plan.hierarchical) {
      const int group_size = E / s.groups, slots_per_node = R / s.nodes;
      std::vector<int> node_of_group(size_t(s.groups), -1);
      for (int p = 0; p < R; ++p) {
        int& node = node_of_group[size_t(plan.phy_to_log(l, p) / group_size)];
        if (node == -1) node = p / slots_per_node;
        EXPECT_EQ(node, p / slots_per_node) << "layer " << l << " slot " << p;
      }
    }

    // gpu_load is the sum of the copies' loads, load / count; the total is conserved.
    double sum = 0, want_sum = 0;
    for (int g = 0; g < s.gpus; ++g) {
      double want = 0;
      for (int p = g * plan.slots_per_gpu(); p < (g + 1) * plan.slots_per_gpu(); ++p) {
        const int e = plan.phy_to_log(l, p);
        want += w[size_t(l)][size_t(e)] / plan.count(l, e);
      }
      EXPECT_NEAR(plan.load_of_gpu(l, g), want, 1e-9 * (1 + want));
      sum += plan.load_of_gpu(l, g);
    }
    for (const double x : w[size_t(l)]) want_sum += x;
    EXPECT_NEAR(sum, want_sum, 1e-9 * (1 + want_sum));
  }
}

// What replication guarantees about the max GPU load.
//
// Not this: "never above the unreplicated plan's" (the same routine with num_replicas =
// num_experts). The greedy packing is not monotone: ReplicationCanRaiseTheMaxGpuLoad below has
// a case, and random layers show more.
//
// This: (1) the hottest copy is never hotter than the hottest expert, and (2) within a node,
// GPU loads differ by at most the hottest copy on that node. So (3) the node's max GPU load is at
// most its mean + (1 - 1/g) x the hottest copy (g GPUs a node), a bound that only tightens as
// copies are added, the unreplicated plan's being the same with the hottest expert.
//
// Proof of (2), for balanced_packing (items in non-increasing order, each to the lightest pack
// with room; k items a pack at the end; k = 1 is the identity and trivial). Take packs A and B,
// their items in arrival order a_1 >= ... >= a_k and b_1 >= ... >= b_k. If every a_i (i >= 2)
// arrived after b_{i-1}, then a_i <= b_{i-1} and A <= a_1 + (b_1 + ... + b_{k-1}) <= a_1 + B.
// Otherwise let i be the last index whose a_i arrived before b_{i-1}: B then held c <= i-2 items
// and had room, and A was picked as the lightest, so a_1 + ... + a_{i-1} <= b_1 + ... + b_c;
// every later a_j (j > i) arrived after b_{j-1}, so a_j <= b_{j-1}. Summing, A <= a_i +
// (b_1 + ... + b_c) + (b_i + ... + b_{k-1}) <= a_i + B, the two b ranges being disjoint.
// spread_replicas breaks "the lightest pack with room", so the bound is checked without it.
void check_load_bound(const EplbPlan& plan, const Rows& w, const Shape& s) {
  const int gpus_per_node = s.gpus / s.nodes, per_gpu = plan.slots_per_gpu();
  for (int l = 0; l < plan.num_layers; ++l) {
    const double hottest_expert = *std::max_element(w[size_t(l)].begin(), w[size_t(l)].end());
    for (int n = 0; n < s.nodes; ++n) {
      double hottest_copy = 0, node_load = 0, max_gpu = 0, min_gpu = 1e300;
      for (int g = n * gpus_per_node; g < (n + 1) * gpus_per_node; ++g) {
        for (int p = g * per_gpu; p < (g + 1) * per_gpu; ++p) {
          const int e = plan.phy_to_log(l, p);
          hottest_copy = std::max(hottest_copy, w[size_t(l)][size_t(e)] / plan.count(l, e));
        }
        node_load += plan.load_of_gpu(l, g);
        max_gpu = std::max(max_gpu, plan.load_of_gpu(l, g));
        min_gpu = std::min(min_gpu, plan.load_of_gpu(l, g));
      }
      const double tol = 1e-9 * (1 + node_load);
      EXPECT_LE(hottest_copy, hottest_expert);                                             // (1)
      EXPECT_LE(max_gpu - min_gpu, hottest_copy + tol) << "layer " << l << " node " << n;  // (2)
      const double g = gpus_per_node;
      EXPECT_LE(max_gpu, node_load / g + (1 - 1 / g) * hottest_copy + tol);  // (3)
    }
  }
}

TEST(EplbRandom, InvariantsOnBothPolicies) {
  std::mt19937_64 rng(2026);
  for (int c = 0; c < 400; ++c) {
    const Shape s = random_shape(rng, c % 2 == 0);
    const int layers = 1 + int(rng() % 3);
    const Rows w = random_loads(rng, layers, s.experts);
    const bool spread = c % 4 == 1 || c % 4 == 2;
    SCOPED_TRACE(::testing::Message()
                 << "case " << c << ": " << w[0].size() << " experts, " << s.replicas
                 << " replicas, " << s.groups << " groups, " << s.nodes << " nodes, " << s.gpus
                 << " gpus" << (spread ? ", spread" : ""));
    const EplbPlan plan = rebalance_experts(LoadMatrix::from_rows(w), s.replicas, s.groups, s.nodes,
                                            s.gpus, {.spread_replicas = spread});
    check_structure(plan, w, s);
    if (!spread) check_load_bound(plan, w, s);
  }
}

// The counterexample to "replication never raises the max GPU load": 8, 3, 18, 14 on 2 GPUs.
// Unreplicated: {18, 3} and {14, 8}, max 22. With 6 slots, 18 and 14 are split: copies 9, 9,
// 8, 7, 7, 3 pack as {9, 8, 3} and {9, 7, 7}, max 23.
TEST(EplbRandom, ReplicationCanRaiseTheMaxGpuLoad) {
  const LoadMatrix loads = LoadMatrix::from_rows({{8, 3, 18, 14}});
  const EplbPlan plain = rebalance_experts(loads, 4, 1, 1, 2);
  const EplbPlan replicated = rebalance_experts(loads, 6, 1, 1, 2);
  EXPECT_DOUBLE_EQ(std::max(plain.load_of_gpu(0, 0), plain.load_of_gpu(0, 1)), 22);
  EXPECT_DOUBLE_EQ(std::max(replicated.load_of_gpu(0, 0), replicated.load_of_gpu(0, 1)), 23);
}

// Exact agreement with the independent implementation, on loads without ties, with and without
// spread_replicas.
void compare_with_reference(bool spread) {
  std::mt19937_64 rng(spread ? 8 : 16);
  int compared = 0, cases = 0;
  for (int c = 0; c < 400; ++c, ++cases) {
    const Shape s = random_shape(rng, c % 2 == 0);
    const Rows w = distinct_loads(rng, 1 + int(rng() % 3), s.experts);
    const reference::Plan want =
        reference::rebalance(w, s.replicas, s.groups, s.nodes, s.gpus, spread);
    if (want.had_tie) continue;
    ++compared;
    const EplbPlan got = rebalance_experts(LoadMatrix::from_rows(w), s.replicas, s.groups, s.nodes,
                                           s.gpus, {.spread_replicas = spread});
    for (int l = 0; l < got.num_layers; ++l) {
      const int E = got.num_experts;
      for (int p = 0; p < s.replicas; ++p)
        ASSERT_EQ(got.phy_to_log(l, p), want.phy2log[size_t(l)][size_t(p)])
            << "case " << c << " layer " << l << " slot " << p;
      for (int e = 0; e < E; ++e) {
        const std::vector<int>& slots = want.log2phy[size_t(l)][size_t(e)];
        ASSERT_EQ(got.count(l, e), want.logcnt[size_t(l)][size_t(e)]) << "case " << c;
        for (int r = 0; r < got.max_count; ++r)
          ASSERT_EQ(got.log_to_phy(l, e, r), r < int(slots.size()) ? slots[size_t(r)] : -1)
              << "case " << c << " layer " << l << " expert " << e << " rank " << r;
      }
    }
  }
  EXPECT_GE(compared, cases * 95 / 100);  // ties must stay the rare exception
}

TEST(EplbRandom, MatchesTheReferenceWithoutTies) {
  compare_with_reference(false);
}
TEST(EplbRandom, MatchesTheReferenceWithoutTiesSpread) {
  compare_with_reference(true);
}

// Both follow the same tie convention, so they agree on tied loads too (small integers).
TEST(EplbRandom, MatchesTheReferenceWithTies) {
  std::mt19937_64 rng(8);
  int tied = 0;
  for (int c = 0; c < 200; ++c) {
    const Shape s = random_shape(rng, c % 2 == 0);
    Rows w(1, std::vector<double>(static_cast<size_t>(s.experts)));
    for (double& x : w[0]) x = double(rng() % 6);
    const reference::Plan want = reference::rebalance(w, s.replicas, s.groups, s.nodes, s.gpus);
    tied += want.had_tie;
    const EplbPlan got =
        rebalance_experts(LoadMatrix::from_rows(w), s.replicas, s.groups, s.nodes, s.gpus);
    EXPECT_EQ(std::vector<int>(got.phy2log.begin(), got.phy2log.end()), want.phy2log[0])
        << "case " << c;
  }
  EXPECT_GT(tied, 100);
}

}  // namespace
}  // namespace ff::plan
