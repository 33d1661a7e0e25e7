#include "plan/eplb.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "core/error.h"
#include "plan/eplb_steps.h"

namespace ff::plan {

constexpr int kMaxReplicas = 1 << 16;
constexpr int kMaxGpus = 1 << 13;
constexpr int64_t kMaxPackingWork = int64_t{1} << 24;

using eplb_detail::balanced_packing;
using eplb_detail::replicate_experts;

LoadMatrix LoadMatrix::from_rows(const std::vector<std::vector<double>>& rows) {
  FF_CHECK(!rows.empty(), "expert loads are empty: no layers");
  LoadMatrix m;
  m.num_layers = int(rows.size());
  m.num_experts = int(rows[0].size());
  FF_CHECK(m.num_experts > 0, "expert loads: layer 0 has no experts");
  m.values.reserve(rows.size() * rows[0].size());
  for (size_t l = 0; l < rows.size(); ++l) {
    FF_CHECK(rows[l].size() == rows[0].size(),
             "expert loads: layer {} has {} experts, layer 0 has {} (rows must be equal)", l,
             rows[l].size(), rows[0].size());
    m.values.insert(m.values.end(), rows[l].begin(), rows[l].end());
  }
  return m;
}

namespace {

void check_inputs(const LoadMatrix& loads, int num_replicas, int num_groups, int num_nodes,
                  int num_gpus, bool hierarchical) {
  FF_CHECK(loads.num_layers > 0, "expert loads are empty: no layers");
  FF_CHECK(loads.num_experts > 0, "expert loads are empty: no experts");
  FF_CHECK(loads.values.size() == size_t(loads.num_layers) * size_t(loads.num_experts),
           "expert loads: {} values for {} layers x {} experts", loads.values.size(),
           loads.num_layers, loads.num_experts);
  FF_CHECK(num_replicas > 0, "num_replicas must be positive (got {})", num_replicas);
  FF_CHECK(num_groups > 0, "num_groups must be positive (got {})", num_groups);
  FF_CHECK(num_nodes > 0, "num_nodes must be positive (got {})", num_nodes);
  FF_CHECK(num_gpus > 0, "num_gpus must be positive (got {})", num_gpus);
  // Far past any real deployment (DeepSeek-V3: 256 experts, 288 slots, 32 to 320 GPUs); keeps a
  // plan's time and memory bounded (the packing scans a node's GPUs for every copy).
  FF_CHECK(num_replicas <= kMaxReplicas, "num_replicas must be at most {} (got {})", kMaxReplicas,
           num_replicas);
  FF_CHECK(num_gpus <= kMaxGpus, "num_gpus must be at most {} (got {})", kMaxGpus, num_gpus);
  FF_CHECK(num_gpus % num_nodes != 0 ||
               int64_t{num_replicas} * (num_gpus / num_nodes) <= kMaxPackingWork,
           "num_replicas x GPUs per node = {} x {} is more than {} (the packing weighs every GPU "
           "of a node for every copy)",
           num_replicas, num_gpus / num_nodes, kMaxPackingWork);
  const int E = loads.num_experts;
  FF_CHECK(E % num_groups == 0, "num_experts ({}) is not a multiple of num_groups ({})", E,
           num_groups);
  FF_CHECK(!hierarchical || num_groups % num_nodes == 0,
           "num_groups ({}) is not a multiple of num_nodes ({}), as the hierarchical policy needs",
           num_groups, num_nodes);
  FF_CHECK(num_gpus % num_nodes == 0, "num_gpus ({}) is not a multiple of num_nodes ({})", num_gpus,
           num_nodes);
  FF_CHECK(num_replicas % num_gpus == 0, "num_replicas ({}) is not a multiple of num_gpus ({})",
           num_replicas, num_gpus);
  FF_CHECK(num_replicas >= E,
           "num_replicas ({}) is less than num_experts ({}): every expert needs a slot",
           num_replicas, E);
  for (int l = 0; l < loads.num_layers; ++l) {
    double sum = 0;
    for (int e = 0; e < E; ++e) {
      const double w = loads.at(l, e);
      FF_CHECK(std::isfinite(w), "expert load at layer {}, expert {} is not finite ({})", l, e, w);
      FF_CHECK(w >= 0, "expert load at layer {}, expert {} is negative ({})", l, e, w);
      sum += w;
    }
    FF_CHECK(std::isfinite(sum),
             "expert loads of layer {} sum past the largest double; scale "
             "them down",
             l);
  }
}

// Max over mean; 1 when there is no load at all (nothing to balance).
double imbalance(std::span<const double> gpu_loads) {
  double sum = 0, max = 0;
  for (const double x : gpu_loads) {
    sum += x;
    max = std::max(max, x);
  }
  return sum > 0 ? max / (sum / double(gpu_loads.size())) : 1.0;
}

// One layer's plan, the hierarchical steps with the given groups and nodes (the global policy is
// groups = nodes = 1). Experts are renumbered so that each node's experts are consecutive
// ("node-local" ids: node n owns [n * E / N, (n + 1) * E / N)), which turns the per-node work
// into independent slices.
class LayerPlanner {
 public:
  LayerPlanner(int E, int R, int G, int N, int P, bool spread)
      : E_(E), R_(R), G_(G), N_(N), P_(P), spread_(spread) {
    group_load_.resize(size_t(G));
    group_node_.resize(size_t(G));
    group_rank_.resize(size_t(G));
    local_to_log_.resize(size_t(E));
    local_load_.resize(size_t(E / N));
    slot_local_.resize(size_t(R / N));
    slot_rank_.resize(size_t(R / N));
    local_count_.resize(size_t(E / N));
    copy_load_.resize(size_t(R / N));
    copy_gpu_.resize(size_t(R / N));
    copy_pos_.resize(size_t(R / N));
  }

  // w: [E] loads; writes phy2log / phy_rank [R] and logcnt [E].
  void plan(std::span<const double> w, std::span<int32_t> phy2log, std::span<int32_t> phy_rank,
            std::span<int32_t> logcnt) {
    const int group_size = E_ / G_, groups_per_node = G_ / N_;
    const int E_node = E_ / N_, R_node = R_ / N_, P_node = P_ / N_, per_gpu = R_ / P_;

    // Step 1: groups onto nodes.
    for (int g = 0; g < G_; ++g) {
      double sum = 0;
      for (int j = 0; j < group_size; ++j) sum += w[size_t(g * group_size + j)];
      group_load_[size_t(g)] = sum;
    }
    balanced_packing(group_load_, N_, {}, 0, pack_scratch_, group_node_, group_rank_);
    for (int g = 0; g < G_; ++g) {
      const int base =
          (group_node_[size_t(g)] * groups_per_node + group_rank_[size_t(g)]) * group_size;
      for (int j = 0; j < group_size; ++j) local_to_log_[size_t(base + j)] = g * group_size + j;
    }

    for (int node = 0; node < N_; ++node) {
      const std::span<const int32_t> node_experts(local_to_log_.data() + size_t(node * E_node),
                                                  size_t(E_node));
      for (int j = 0; j < E_node; ++j) local_load_[size_t(j)] = w[size_t(node_experts[size_t(j)])];
      // Step 2: copies within the node.
      replicate_experts(local_load_, R_node, replicate_scratch_, slot_local_, slot_rank_,
                        local_count_);
      // Step 3: the node's copies onto its GPUs.
      for (int i = 0; i < R_node; ++i) {
        const int j = slot_local_[size_t(i)];
        copy_load_[size_t(i)] = local_load_[size_t(j)] / double(local_count_[size_t(j)]);
      }
      balanced_packing(copy_load_, P_node,
                       spread_ ? std::span<const int32_t>(slot_local_) : std::span<const int32_t>(),
                       E_node, pack_scratch_, copy_gpu_, copy_pos_);
      // Step 4: back to global slots and logical ids.
      for (int i = 0; i < R_node; ++i) {
        const size_t slot =
            size_t(node * R_node + copy_gpu_[size_t(i)] * per_gpu + copy_pos_[size_t(i)]);
        phy2log[slot] = node_experts[size_t(slot_local_[size_t(i)])];
        phy_rank[slot] = slot_rank_[size_t(i)];
      }
      for (int j = 0; j < E_node; ++j)
        logcnt[size_t(node_experts[size_t(j)])] = local_count_[size_t(j)];
    }
  }

 private:
  int E_, R_, G_, N_, P_;
  bool spread_;
  eplb_detail::PackScratch pack_scratch_;
  eplb_detail::ReplicateScratch replicate_scratch_;
  std::vector<double> group_load_, local_load_, copy_load_;
  std::vector<int32_t> group_node_, group_rank_, local_to_log_;
  std::vector<int32_t> slot_local_, slot_rank_, local_count_, copy_gpu_, copy_pos_;
};

}  // namespace

EplbPlan rebalance_experts(const LoadMatrix& loads, int num_replicas, int num_groups, int num_nodes,
                           int num_gpus, const EplbOptions& options) {
  const bool hierarchical = options.policy == EplbPolicy::Hierarchical ||
                            (options.policy == EplbPolicy::Auto && num_groups > 0 &&
                             num_nodes > 0 && num_groups % num_nodes == 0);
  check_inputs(loads, num_replicas, num_groups, num_nodes, num_gpus, hierarchical);
  const int L = loads.num_layers, E = loads.num_experts, R = num_replicas, P = num_gpus;

  EplbPlan plan;
  plan.num_layers = L;
  plan.num_experts = E;
  plan.num_replicas = R;
  plan.num_gpus = P;
  plan.num_nodes = num_nodes;
  plan.hierarchical = hierarchical;
  plan.phy2log.resize(size_t(L) * size_t(R));
  plan.logcnt.resize(size_t(L) * size_t(E));
  std::vector<int32_t> phy_rank(size_t(L) * size_t(R));

  LayerPlanner planner(E, R, hierarchical ? num_groups : 1, hierarchical ? num_nodes : 1, P,
                       options.spread_replicas);
  for (int l = 0; l < L; ++l) {
    planner.plan(std::span<const double>(loads.values.data() + size_t(l) * size_t(E), size_t(E)),
                 std::span<int32_t>(plan.phy2log.data() + size_t(l) * size_t(R), size_t(R)),
                 std::span<int32_t>(phy_rank.data() + size_t(l) * size_t(R), size_t(R)),
                 std::span<int32_t>(plan.logcnt.data() + size_t(l) * size_t(E), size_t(E)));
  }

  plan.max_count = *std::max_element(plan.logcnt.begin(), plan.logcnt.end());
  const size_t C = size_t(plan.max_count);
  plan.log2phy.assign(size_t(L) * size_t(E) * C, -1);
  for (int l = 0; l < L; ++l) {
    for (int p = 0; p < R; ++p) {
      const size_t i = size_t(l) * size_t(R) + size_t(p);
      plan.log2phy[(size_t(l) * size_t(E) + size_t(plan.phy2log[i])) * C + size_t(phy_rank[i])] = p;
    }
  }

  plan.gpu_load.assign(size_t(L) * size_t(P), 0.0);
  plan.imbalance_before.resize(size_t(L));
  plan.imbalance_after.resize(size_t(L));
  std::vector<double> contiguous(static_cast<size_t>(P));
  const int per_gpu = R / P;
  for (int l = 0; l < L; ++l) {
    const std::span<double> after(plan.gpu_load.data() + size_t(l) * size_t(P), size_t(P));
    for (int p = 0; p < R; ++p) {
      const int e = plan.phy_to_log(l, p);
      after[size_t(p / per_gpu)] += loads.at(l, e) / double(plan.count(l, e));
    }
    std::fill(contiguous.begin(), contiguous.end(), 0.0);
    for (int g = 0; g < P; ++g) {
      const int64_t first = int64_t(g) * E / P, last = int64_t(g + 1) * E / P;
      for (int64_t e = first; e < last; ++e) contiguous[size_t(g)] += loads.at(l, int(e));
    }
    plan.imbalance_before[size_t(l)] = imbalance(contiguous);
    plan.imbalance_after[size_t(l)] = imbalance(after);
  }
  return plan;
}

}  // namespace ff::plan
