// A second EPLB, written from the rules in plan/eplb.h and nothing else, for the tests to compare
// against and bench_plan to time as its baseline. Plain loops over logical expert ids: every
// "largest" and "lightest" is a linear scan over what is left (so O(n^2) where eplb.cc sorts),
// no renumbering of experts, nested vectors, one layer at a time.
//
// It also reports whether any choice it made was a tie between different experts (equal group
// loads, equal loads per copy): those are where a plan depends on the tie-breaking convention,
// which the tests check separately.
#pragma once
#include <vector>

namespace ff::plan::reference {

struct Plan {
  std::vector<std::vector<int>> phy2log;               // [layer][slot]
  std::vector<std::vector<std::vector<int>>> log2phy;  // [layer][expert][rank], no padding
  std::vector<std::vector<int>> logcnt;                // [layer][expert]
  bool had_tie = false;
};

namespace detail {

struct Copy {
  int expert = 0;
  int rank = 0;
  double load = 0;
};

// Index of the first smallest load among bins with fewer than `capacity` items for which
// `allowed` holds; -1 if none.
template <typename Allowed>
int first_lightest(const std::vector<double>& bin_load, const std::vector<int>& bin_items,
                   int capacity, Allowed allowed) {
  int best = -1;
  for (int b = 0; b < int(bin_load.size()); ++b) {
    if (bin_items[size_t(b)] >= capacity || !allowed(b)) continue;
    if (best == -1 || bin_load[size_t(b)] < bin_load[size_t(best)]) best = b;
  }
  return best;
}

inline void plan_layer(const std::vector<double>& w, int R, int G, int N, int P, bool spread,
                       std::vector<int>& phy2log, std::vector<std::vector<int>>& log2phy,
                       std::vector<int>& logcnt, bool& had_tie) {
  const int E = int(w.size());
  const int group_size = E / G, groups_per_node = G / N;
  const int slots_per_node = R / N, gpus_per_node = P / N, per_gpu = R / P;

  // Groups to nodes: node_groups[n] lists node n's groups in the order it received them.
  std::vector<std::vector<int>> node_groups(static_cast<size_t>(N));
  if (groups_per_node == 1) {
    for (int g = 0; g < G; ++g) node_groups[size_t(g)].push_back(g);
  } else {
    std::vector<double> group_load(size_t(G), 0.0);
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < group_size; ++j) group_load[size_t(g)] += w[size_t(g * group_size + j)];
    std::vector<bool> placed(size_t(G), false);
    std::vector<double> node_load(size_t(N), 0.0);
    std::vector<int> node_items(size_t(N), 0);
    for (int step = 0; step < G; ++step) {
      int pick = -1;
      for (int g = 0; g < G; ++g) {
        if (placed[size_t(g)]) continue;
        if (pick == -1 || group_load[size_t(g)] > group_load[size_t(pick)]) pick = g;
      }
      for (int g = 0; g < G; ++g)
        if (!placed[size_t(g)] && g != pick && group_load[size_t(g)] == group_load[size_t(pick)])
          had_tie = true;
      placed[size_t(pick)] = true;
      const int n =
          first_lightest(node_load, node_items, groups_per_node, [](int) { return true; });
      node_groups[size_t(n)].push_back(pick);
      node_load[size_t(n)] += group_load[size_t(pick)];
      ++node_items[size_t(n)];
    }
  }

  logcnt.assign(size_t(E), 0);
  phy2log.assign(size_t(R), -1);
  std::vector<int> slot_rank(size_t(R), -1);
  for (int n = 0; n < N; ++n) {
    std::vector<int> experts;  // the node's experts, group by group
    for (const int g : node_groups[size_t(n)])
      for (int j = 0; j < group_size; ++j) experts.push_back(g * group_size + j);

    // Copies: one of each expert, then one more at a time for the largest load per copy.
    std::vector<Copy> copies;
    for (const int e : experts) {
      copies.push_back({e, 0, 0.0});
      logcnt[size_t(e)] = 1;
    }
    while (int(copies.size()) < slots_per_node) {
      const auto per_copy = [&](int e) { return w[size_t(e)] / logcnt[size_t(e)]; };
      int pick = -1;
      for (const int e : experts)
        if (pick == -1 || per_copy(e) > per_copy(pick)) pick = e;
      for (const int e : experts)
        if (e != pick && per_copy(e) == per_copy(pick)) had_tie = true;
      copies.push_back({pick, logcnt[size_t(pick)], 0.0});
      ++logcnt[size_t(pick)];
    }
    for (Copy& c : copies) c.load = w[size_t(c.expert)] / logcnt[size_t(c.expert)];

    // Copies to the node's GPUs: gpu_copies[g] in the order GPU g received them.
    std::vector<std::vector<Copy>> gpu_copies(static_cast<size_t>(gpus_per_node));
    if (per_gpu == 1) {
      for (int i = 0; i < slots_per_node; ++i) gpu_copies[size_t(i)].push_back(copies[size_t(i)]);
    } else {
      std::vector<bool> placed(copies.size(), false);
      std::vector<double> gpu_load(size_t(gpus_per_node), 0.0);
      std::vector<int> gpu_items(size_t(gpus_per_node), 0);
      for (size_t step = 0; step < copies.size(); ++step) {
        int pick = -1;
        for (int i = 0; i < int(copies.size()); ++i) {
          if (placed[size_t(i)]) continue;
          if (pick == -1 || copies[size_t(i)].load > copies[size_t(pick)].load) pick = i;
        }
        for (int i = 0; i < int(copies.size()); ++i) {
          const Copy& c = copies[size_t(i)];
          if (!placed[size_t(i)] && c.expert != copies[size_t(pick)].expert &&
              c.load == copies[size_t(pick)].load)
            had_tie = true;
        }
        placed[size_t(pick)] = true;
        const Copy& c = copies[size_t(pick)];
        const auto lacks_expert = [&](int g) {
          for (const Copy& held : gpu_copies[size_t(g)])
            if (held.expert == c.expert) return false;
          return true;
        };
        int g = -1;
        if (spread) g = first_lightest(gpu_load, gpu_items, per_gpu, lacks_expert);
        if (g == -1) g = first_lightest(gpu_load, gpu_items, per_gpu, [](int) { return true; });
        gpu_copies[size_t(g)].push_back(c);
        gpu_load[size_t(g)] += c.load;
        ++gpu_items[size_t(g)];
      }
    }
    for (int g = 0; g < gpus_per_node; ++g) {
      for (int pos = 0; pos < per_gpu; ++pos) {
        const int slot = n * slots_per_node + g * per_gpu + pos;
        phy2log[size_t(slot)] = gpu_copies[size_t(g)][size_t(pos)].expert;
        slot_rank[size_t(slot)] = gpu_copies[size_t(g)][size_t(pos)].rank;
      }
    }
  }

  log2phy.assign(size_t(E), {});
  for (int e = 0; e < E; ++e) log2phy[size_t(e)].assign(size_t(logcnt[size_t(e)]), -1);
  for (int slot = 0; slot < R; ++slot)
    log2phy[size_t(phy2log[size_t(slot)])][size_t(slot_rank[size_t(slot)])] = slot;
}

}  // namespace detail

// weight[layer][expert]; the arguments' divisibility is the caller's business (unchecked).
inline Plan rebalance(const std::vector<std::vector<double>>& weight, int num_replicas,
                      int num_groups, int num_nodes, int num_gpus, bool spread = false) {
  const bool hierarchical = num_groups % num_nodes == 0;
  Plan out;
  out.phy2log.resize(weight.size());
  out.log2phy.resize(weight.size());
  out.logcnt.resize(weight.size());
  for (size_t l = 0; l < weight.size(); ++l) {
    detail::plan_layer(weight[l], num_replicas, hierarchical ? num_groups : 1,
                       hierarchical ? num_nodes : 1, num_gpus, spread, out.phy2log[l],
                       out.log2phy[l], out.logcnt[l], out.had_tie);
  }
  return out;
}

}  // namespace ff::plan::reference
