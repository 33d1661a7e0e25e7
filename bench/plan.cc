// bench_plan: the planning algorithms of src/plan, one function per case, each printing its
// BENCH lines (docs/plan.md, docs/BENCHMARKS.md).
//
//   bench_eplb   EPLB on DeepSeek-V3's shape (61 layers x 256 experts -> 288 slots, 8 groups,
//                4 nodes, 32 GPUs), timed next to the straightforward implementation the tests
//                compare with (tests/plan/eplb_reference.h); and what spread_replicas costs in
//                balance, on that shape and on random ones.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "../tests/plan/eplb_reference.h"
#include "bench_util.h"
#include "plan/plan.h"

namespace ff::bench {
namespace {

using Rows = std::vector<std::vector<double>>;

// Tokens per expert with a heavy tail, as routing statistics look: lognormal, sigma 1.
Rows skewed_loads(std::mt19937_64& rng, int layers, int experts) {
  std::lognormal_distribution<double> tokens(6.0, 1.0);
  Rows rows(static_cast<size_t>(layers), std::vector<double>(static_cast<size_t>(experts)));
  for (auto& row : rows)
    for (double& x : row) x = tokens(rng);
  return rows;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (const double x : v) s += x;
  return s / double(v.size());
}

// GPUs holding two copies of one expert, over all layers.
int gpus_with_duplicates(const plan::EplbPlan& p) {
  int n = 0;
  for (int l = 0; l < p.num_layers; ++l) {
    for (int g = 0; g < p.num_gpus; ++g) {
      std::set<int> seen;
      bool dup = false;
      for (int s = g * p.slots_per_gpu(); s < (g + 1) * p.slots_per_gpu(); ++s)
        dup |= !seen.insert(p.phy_to_log(l, s)).second;
      n += dup;
    }
  }
  return n;
}

void bench_eplb(bool quick) {
  constexpr int kLayers = 61, kExperts = 256, kReplicas = 288, kGroups = 8, kNodes = 4;
  constexpr int kGpus = 32;
  std::mt19937_64 rng(61256);
  const Rows rows = skewed_loads(rng, kLayers, kExperts);
  const plan::LoadMatrix loads = plan::LoadMatrix::from_rows(rows);

  plan::EplbPlan got;
  const Timing t =
      time_runs([&] { got = plan::rebalance_experts(loads, kReplicas, kGroups, kNodes, kGpus); },
                quick ? 5 : 51, 2);
  plan::reference::Plan want;
  const Timing tb =
      time_runs([&] { want = plan::reference::rebalance(rows, kReplicas, kGroups, kNodes, kGpus); },
                quick ? 3 : 11, 1);
  bool same = true;
  for (int l = 0; l < kLayers; ++l)
    for (int p = 0; p < kReplicas; ++p)
      same &= got.phy_to_log(l, p) == want.phy2log[size_t(l)][size_t(p)];
  std::printf(
      "BENCH plan eplb_61x256 ms=%.3f best_ms=%.3f baseline=straightforward baseline_ms=%.3f "
      "ratio=%.1f target_ms=5 same_plan=%s\n",
      t.median * 1e3, t.best * 1e3, tb.median * 1e3, tb.median / t.median, same ? "yes" : "NO");

  // spread_replicas on the same loads: balance (max / mean GPU load, mean over layers) and
  // GPUs holding two copies of one expert, against the default.
  const plan::EplbPlan spread =
      plan::rebalance_experts(loads, kReplicas, kGroups, kNodes, kGpus, {.spread_replicas = true});
  std::printf(
      "BENCH plan eplb_61x256_spread imbalance=%.4f max_imbalance=%.4f dup_gpus=%d "
      "baseline=default baseline_imbalance=%.4f baseline_max_imbalance=%.4f baseline_dup_gpus=%d "
      "ratio=%.4f before=%.4f\n",
      mean(spread.imbalance_after),
      *std::max_element(spread.imbalance_after.begin(), spread.imbalance_after.end()),
      gpus_with_duplicates(spread), mean(got.imbalance_after),
      *std::max_element(got.imbalance_after.begin(), got.imbalance_after.end()),
      gpus_with_duplicates(got), mean(spread.imbalance_after) / mean(got.imbalance_after),
      mean(got.imbalance_before));

  // The same on random shapes (both policies; 1-4 nodes of 2-8 GPUs, 1-3 spare slots a GPU).
  const int cases = quick ? 200 : 2000;
  std::vector<double> cost;
  int dup_default = 0, dup_spread = 0, avoidable = 0, avoidable_dup_default = 0;
  int avoidable_dup_spread = 0;
  for (int c = 0; c < cases; ++c) {
    const int nodes = 1 + int(rng() % 4), gpus = nodes * (2 + int(rng() % 7));
    const int groups = c % 2 == 0 ? nodes * (1 + int(rng() % 4)) : 1;
    const int experts = gpus * groups * (1 + int(rng() % 3));
    const int replicas = experts + gpus * (1 + int(rng() % 3));
    const plan::LoadMatrix l = plan::LoadMatrix::from_rows(skewed_loads(rng, 1, experts));
    const plan::EplbPlan a = plan::rebalance_experts(l, replicas, groups, nodes, gpus);
    const plan::EplbPlan b =
        plan::rebalance_experts(l, replicas, groups, nodes, gpus, {.spread_replicas = true});
    cost.push_back(b.imbalance_after[0] / a.imbalance_after[0] - 1);
    dup_default += gpus_with_duplicates(a) > 0;
    dup_spread += gpus_with_duplicates(b) > 0;
    // Avoidable: no expert has more copies than its node has GPUs.
    if (a.max_count <= gpus / nodes) {
      ++avoidable;
      avoidable_dup_default += gpus_with_duplicates(a) > 0;
      avoidable_dup_spread += gpus_with_duplicates(b) > 0;
    }
  }
  std::sort(cost.begin(), cost.end());
  std::printf(
      "BENCH plan eplb_spread_random cases=%d imbalance_change_mean=%+.4f "
      "imbalance_change_median=%+.4f imbalance_change_min=%+.4f imbalance_change_max=%+.4f "
      "cases_with_dups=%d "
      "avoidable=%d avoidable_with_dups=%d baseline=default baseline_cases_with_dups=%d "
      "baseline_avoidable_with_dups=%d\n",
      cases, mean(cost), cost[cost.size() / 2], cost.front(), cost.back(), dup_spread, avoidable,
      avoidable_dup_spread, dup_default, avoidable_dup_default);
  std::fflush(stdout);
}

}  // namespace
}  // namespace ff::bench

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  try {
    ff::bench::bench_eplb(quick);
    // Further cases (the pipeline schedules) go here, one function each.
  } catch (const ff::Error& e) {
    std::fprintf(stderr, "bench_plan: %s\n", e.what());
    return 1;
  }
  return 0;
}
