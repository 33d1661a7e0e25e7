// EPLB, the expert-parallel load balancer (DeepSeek's eplb.py): given each MoE layer's expert
// loads, choose how many copies ("replicas") of each logical expert to run and which GPU slot
// holds each copy, so that the GPUs' loads are as even as the heuristic manages.
//
// Placement model: num_replicas slots per layer, num_replicas / num_gpus consecutive slots per
// GPU (slot p lives on GPU p / (num_replicas / num_gpus)), num_gpus / num_nodes consecutive GPUs
// per node. A token routed to a logical expert is served by one of its copies, so a copy carries
// load / count of its expert's load.
//
// Policies (docs/plan.md has the whole story):
//   hierarchical  when num_groups % num_nodes == 0: the expert groups (num_experts / num_groups
//                 consecutive experts each) are packed onto nodes, so a group's experts and all
//                 their copies stay on one node; each node then replicates its own experts to
//                 num_replicas / num_nodes slots and packs the copies onto its GPUs.
//   global        otherwise: the same steps with one group and one node, i.e. replicate over all
//                 experts and pack the copies onto all GPUs (upstream after its PR #16).
//
// Determinism: every order is total. Sorts are descending and stable (equal loads keep the lower
// index first), "lightest pack" is the first lightest, "hottest expert" the first hottest. This
// is the fix for upstream issue #8, where torch.sort's unspecified tie order gave different plans
// on different machines. Loads are doubles (upstream rounds them to float32 first).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ff::plan {

// Expert loads of every MoE layer, [num_layers][num_experts] row-major: e.g. tokens routed to
// each expert over a recent window. Every load must be finite and >= 0 (rebalance_experts
// checks).
struct LoadMatrix {
  int num_layers = 0;
  int num_experts = 0;
  std::vector<double> values;

  double at(int layer, int expert) const {
    return values[size_t(layer) * size_t(num_experts) + size_t(expert)];
  }
  // Throws ff::Error for no rows, an empty row or rows of different lengths (naming the layer).
  static LoadMatrix from_rows(const std::vector<std::vector<double>>& rows);
};

enum class EplbPolicy {
  Auto,          // hierarchical when num_groups % num_nodes == 0, else global (upstream's rule)
  Hierarchical,  // an error unless num_groups % num_nodes == 0
  Global,
};

struct EplbOptions {
  EplbPolicy policy = EplbPolicy::Auto;
  // Upstream issue #22: when packing copies onto GPUs, a copy avoids a GPU that already holds a
  // copy of the same expert whenever some GPU with a free slot does not (it then takes the
  // lightest such GPU, the first on ties). Costs a little balance (docs/plan.md has figures).
  bool spread_replicas = false;
};

// The plan for every layer. Index layouts (all row-major, int32):
//   phy2log   [num_layers][num_replicas]             logical expert held by each slot
//   log2phy   [num_layers][num_experts][max_count]   slots of each expert's copies, by replica
//                                                    rank (0: the original), -1 past its count
//   logcnt    [num_layers][num_experts]              copies of each expert (>= 1)
//   gpu_load  [num_layers][num_gpus]                 summed load of the copies on each GPU
// max_count is the largest logcnt over all layers (upstream's padding).
struct EplbPlan {
  int num_layers = 0;
  int num_experts = 0;
  int num_replicas = 0;
  int num_gpus = 0;
  int num_nodes = 0;
  int max_count = 0;
  bool hierarchical = false;  // the policy used

  std::vector<int32_t> phy2log;
  std::vector<int32_t> log2phy;
  std::vector<int32_t> logcnt;
  std::vector<double> gpu_load;
  // Max / mean GPU load per layer (1 = perfect; 1 too for a layer whose loads are all 0).
  // "before": the unreplicated contiguous placement, GPU g holding experts
  // [g * E / num_gpus, (g + 1) * E / num_gpus) (E / num_gpus each when it divides; otherwise
  // the counts differ by at most one and a GPU may hold none). "after": this plan.
  std::vector<double> imbalance_before;
  std::vector<double> imbalance_after;

  int slots_per_gpu() const { return num_replicas / num_gpus; }
  int gpu_of_slot(int slot) const { return slot / slots_per_gpu(); }
  int phy_to_log(int layer, int slot) const {
    return phy2log[size_t(layer) * size_t(num_replicas) + size_t(slot)];
  }
  int count(int layer, int expert) const {
    return logcnt[size_t(layer) * size_t(num_experts) + size_t(expert)];
  }
  // The slot of `expert`'s copy of replica rank `rank` (< count(layer, expert)).
  int log_to_phy(int layer, int expert, int rank) const {
    return log2phy[(size_t(layer) * size_t(num_experts) + size_t(expert)) * size_t(max_count) +
                   size_t(rank)];
  }
  double load_of_gpu(int layer, int gpu) const {
    return gpu_load[size_t(layer) * size_t(num_gpus) + size_t(gpu)];
  }
};

// Plans every layer. Throws ff::Error (one line, naming the argument, or the layer and expert)
// when a count is not positive, num_replicas > 65536, num_gpus > 8192 or num_replicas x GPUs per
// node > 2^24, a layer's loads sum past
// the largest double, num_experts % num_groups, num_gpus % num_nodes or
// num_replicas % num_gpus is not 0, num_replicas < num_experts, a load is negative or not finite,
// or the hierarchical policy is asked for with num_groups % num_nodes != 0.
EplbPlan rebalance_experts(const LoadMatrix& loads, int num_replicas, int num_groups, int num_nodes,
                           int num_gpus, const EplbOptions& options = {});

}  // namespace ff::plan
