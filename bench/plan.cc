// bench_plan: the planning algorithms of src/plan, one function per case, each printing its
// BENCH lines (docs/plan.md, docs/BENCHMARKS.md).
//
//   bench_eplb   EPLB on DeepSeek-V3's shape (61 layers x 256 experts -> 288 slots, 8 groups,
//                4 nodes, 32 GPUs), timed next to the straightforward implementation the tests
//                compare with (tests/plan/eplb_reference.h); and what spread_replicas costs in
//                balance, on that shape and on random ones.
//   bench_pipeline  one DualPipe training step of the executor's toy model on 4 and on 2 MPI
//                ranks (`mpirun -np 4 fireflyer train-pipeline ... --json`), next to the
//                simulator's prediction for the per-op durations the run measured.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
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

// Runs `cmd` through the shell and returns its standard output; throws if it fails.
std::string run_command(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  FF_CHECK(p, "cannot run: {}", cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  FF_CHECK(status == 0, "failed (status {}): {}\n{}", status, cmd, out);
  return out;
}

// The executor's DualPipe step on `pp` ranks against the simulator fed the per-op times the run
// measured. With more ranks than cores each op's time includes the contention for them, and the
// ratio shows what the real run loses beyond the schedule (transfers, polling, ranks slowed
// unevenly); with a core per rank it is the executor's own overhead.
//
// The bound: with `uncontended` op times (from a run with a core per rank, same shapes) the
// ranks' compute -- the simulator's busy time summed over ranks -- shared by the cores. Printed
// when `uncontended` is given. Returns the measured op durations.
plan::OpDurations bench_pipeline(bool quick, int pp, int chunks,
                                 const plan::OpDurations* uncontended = nullptr) {
  const int ranks = pp, steps = quick ? 1 : 3;
  const int hidden = quick ? 128 : 256, seq = quick ? 32 : 128, micro_batch = 3;
  // Open MPI refuses root and more ranks than cores unless told; the tests set the same.
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
  setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
  setenv("OMPI_MCA_btl", "self,vader", 0);
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  const std::string cmd = fmt::format(
      "{} --timeout 600 -np {} {} train-pipeline --method dualpipe --pp {} --chunks {} "
      "--hidden {} --seq {} --micro-batch {} --dtype f32 --steps {} --json",
      FF_MPIEXEC, ranks, FF_CLI_PATH, pp, chunks, hidden, seq, micro_batch, steps);
  const nlohmann::json j = nlohmann::json::parse(run_command(cmd));
  const auto& t = j.at("op_time_s");
  plan::OpDurations d;
  d.f = t.at("F").get<double>();
  d.b = t.at("B").get<double>();
  d.w = t.at("W").get<double>();
  d.fb = t.at("FB").get<double>();
  const plan::Schedule schedule = plan::make_schedule(plan::Method::DualPipe, pp, chunks);
  const plan::SimResult sim = plan::simulate(schedule, d);
  const double measured = j.at("step_time_s").get<double>();
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  std::string bound;
  if (uncontended) {
    const plan::SimResult work = plan::simulate(schedule, *uncontended);
    double busy = 0;
    for (const double b : work.busy) busy += b;
    const double cpu_bound = busy / double(std::min<long>(cores, ranks));
    bound = fmt::format(" cpu_bound_ms={:.1f} vs_cpu_bound={:.3f}", cpu_bound * 1e3,
                        measured / cpu_bound);
  }
  std::printf(
      "BENCH plan pipeline_dualpipe_pp%d_chunks%d step_ms=%.1f ranks=%d hidden=%d seq=%d "
      "micro_batch=%d f_ms=%.2f b_ms=%.2f bzb_ms=%.2f w_ms=%.2f fb_ms=%.2f cores=%ld%s "
      "baseline=simulator baseline_ms=%.1f ratio=%.3f\n",
      pp, chunks, measured * 1e3, ranks, hidden, seq, micro_batch, d.f * 1e3, d.b * 1e3,
      t.at("Bzb").get<double>() * 1e3, d.w * 1e3, d.fb * 1e3, cores, bound.c_str(),
      sim.step_time * 1e3, measured / sim.step_time);
  std::fflush(stdout);
  return d;
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
    // A core per rank first (on a 2-core machine); its op times give the 4-rank case its bound.
    const ff::plan::OpDurations one_core_each = ff::bench::bench_pipeline(quick, 2, 4);
    ff::bench::bench_pipeline(quick, 4, 8, &one_core_each);
  } catch (const ff::Error& e) {
    std::fprintf(stderr, "bench_plan: %s\n", e.what());
    return 1;
  }
  return 0;
}
