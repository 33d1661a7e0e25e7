// ClusterState: the whole state is one record ("mgmtd/state": a wire::MgmtdStore) rewritten in
// one batch per change, which is small next to its change rate (registrations, chain updates).
#include "fs/mgmtd/cluster_state.h"

#include <algorithm>
#include <set>

#include "core/core.h"
#include "fs/wire.h"

namespace ff::fs {
namespace {

constexpr char kStateKey[] = "mgmtd/state";

// Local states that reproduce the stored public states on the first update after a restart,
// until the nodes' heartbeats (or expired leases) say otherwise.
LocalState assumed_local(PublicState s) {
  switch (s) {
    case PublicState::Serving:
      return LocalState::UpToDate;
    case PublicState::Syncing:
    case PublicState::Waiting:
      return LocalState::Online;
    default:
      return LocalState::Offline;
  }
}

}  // namespace

ClusterState::ClusterState(KvEngine& kv, std::chrono::milliseconds lease, Clock::time_point now)
    : kv_(kv), lease_(lease) {
  const auto stored = kv_.get(kStateKey);
  if (!stored) return;
  wire::MgmtdStore s;
  FF_CHECK(s.ParseFromString(*stored), "mgmtd: the stored cluster state is not readable");
  routing_ = from_wire(s.routing());
  for (const auto& n : s.nodes()) {
    expires_[n.node_id()] = now + lease_;
    for (const uint32_t t : n.target_ids()) {
      target_node_[t] = n.node_id();
      local_[t] = LocalState::Online;
    }
  }
  for (const auto& [id, c] : routing_.chains)
    for (const TargetRoute& t : c.targets) local_[t.target_id] = assumed_local(t.state);
}

void ClusterState::store_locked() {
  wire::MgmtdStore s;
  Routing r = routing_;
  for (auto& [id, c] : r.chains)
    for (TargetRoute& t : c.targets) t.local = LocalState::Offline;
  *s.mutable_routing() = to_wire(r);
  std::map<uint32_t, std::vector<uint32_t>> by_node;
  for (const auto& [t, n] : target_node_) by_node[n].push_back(t);
  for (const auto& [n, ts] : by_node) {
    auto* sn = s.add_nodes();
    sn->set_node_id(n);
    for (const uint32_t t : ts) sn->add_target_ids(t);
  }
  KvBatch b;
  b.put(kStateKey, s.SerializeAsString());
  kv_.write(b);
}

std::string ClusterState::register_node(uint32_t node_id, const std::string& address,
                                        const std::vector<uint32_t>& target_ids,
                                        Clock::time_point now) {
  if (node_id == 0) return "node id 0 is not valid";
  if (target_ids.empty()) return fmt::format("node {} has no targets", node_id);
  if (address.empty()) return fmt::format("node {} has no address", node_id);
  std::lock_guard lk(mu_);
  for (const uint32_t t : target_ids) {
    if (t == 0) return "target id 0 is not valid";
    const auto it = target_node_.find(t);
    if (it != target_node_.end() && it->second != node_id)
      return fmt::format("target {} belongs to node {}, not {}", t, it->second, node_id);
  }
  for (const auto& [t, n] : target_node_)
    if (n == node_id && std::find(target_ids.begin(), target_ids.end(), t) == target_ids.end())
      return fmt::format("node {} registered before with target {}, which it no longer has",
                         node_id, t);
  routing_.nodes[node_id] = address;
  for (const uint32_t t : target_ids) {
    target_node_[t] = node_id;
    local_[t] = LocalState::Offline;
  }
  expires_[node_id] = now + lease_;
  update_locked(now);
  ++routing_.version;  // the address may have changed
  store_locked();
  return "";
}

bool ClusterState::heartbeat(uint32_t node_id,
                             const std::vector<std::pair<uint32_t, LocalState>>& targets,
                             Clock::time_point now) {
  std::lock_guard lk(mu_);
  const auto e = expires_.find(node_id);
  if (e == expires_.end() || !routing_.nodes.count(node_id)) return false;
  e->second = now + lease_;
  for (const auto& [t, s] : targets) {
    const auto n = target_node_.find(t);
    if (n != target_node_.end() && n->second == node_id) local_[t] = s;
  }
  return true;
}

bool ClusterState::update(Clock::time_point now) {
  std::lock_guard lk(mu_);
  const bool changed = update_locked(now);
  if (changed) store_locked();
  return changed;
}

bool ClusterState::update_locked(Clock::time_point now) {
  for (const auto& [node, end] : expires_)
    if (now >= end)
      for (const auto& [t, n] : target_node_)
        if (n == node) local_[t] = LocalState::Offline;
  bool changed = false;
  for (auto& [id, c] : routing_.chains) {
    std::vector<ChainTarget> old;
    for (const TargetRoute& t : c.targets)
      old.push_back({t.target_id, t.state, local_[t.target_id]});
    const std::vector<ChainTarget> next = next_chain(old);
    bool moved = false;
    for (size_t i = 0; i < next.size(); ++i)
      moved |= next[i].target_id != old[i].target_id || next[i].state != old[i].state;
    std::vector<TargetRoute> targets;
    for (const ChainTarget& t : next)
      targets.push_back({t.target_id, target_node_[t.target_id], t.state, t.local});
    c.targets = std::move(targets);
    if (moved) {
      ++c.version;
      changed = true;
    }
  }
  if (changed) ++routing_.version;
  return changed;
}

std::string ClusterState::create_chains(uint32_t table_id, uint32_t replicas) {
  std::lock_guard lk(mu_);
  if (table_id == 0) return "table id 0 is not valid";
  if (routing_.tables.count(table_id)) return fmt::format("chain table {} exists", table_id);
  if (replicas == 0) return "replicas must be at least 1";
  std::set<uint32_t> used;
  uint32_t next_chain_id = 1;
  for (const auto& [id, c] : routing_.chains) {
    next_chain_id = std::max(next_chain_id, id + 1);
    for (const TargetRoute& t : c.targets) used.insert(t.target_id);
  }
  std::map<uint32_t, std::vector<uint32_t>> free;  // node -> free targets, ascending
  size_t total = 0;
  for (const auto& [t, n] : target_node_)
    if (!used.count(t) && local_[t] == LocalState::Offline)
      return fmt::format("target {} of node {} is offline (no heartbeat since it registered)", t,
                         n);
  for (const auto& [t, n] : target_node_)
    if (!used.count(t)) {
      free[n].push_back(t);
      ++total;
    }
  if (free.size() < replicas)
    return fmt::format("{} replicas need targets on {} nodes; {} node(s) have free targets",
                       replicas, replicas, free.size());
  const size_t count = total / replicas;
  if (count == 0) return "no free targets";
  std::vector<uint32_t> nodes;
  for (const auto& [n, ts] : free) nodes.push_back(n);
  std::map<uint32_t, size_t> taken;
  TableRoute table{table_id, 1, {}};
  for (size_t k = 0; k < count; ++k) {
    // The nodes with the most free targets left, the ties rotated so that heads spread out.
    std::vector<size_t> order(nodes.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const size_t la = free[nodes[a]].size() - taken[nodes[a]];
      const size_t lb = free[nodes[b]].size() - taken[nodes[b]];
      if (la != lb) return la > lb;
      return (a + nodes.size() - k % nodes.size()) % nodes.size() <
             (b + nodes.size() - k % nodes.size()) % nodes.size();
    });
    ChainRoute c;
    c.chain_id = next_chain_id++;
    c.version = 1;
    for (uint32_t r = 0; r < replicas; ++r) {
      const uint32_t n = nodes[order[r]];
      if (taken[n] >= free[n].size())
        return fmt::format("cannot place {} replicas on different nodes", replicas);
      const uint32_t t = free[n][taken[n]++];
      c.targets.push_back({t, n, PublicState::Serving, local_[t]});
    }
    table.chain_ids.push_back(c.chain_id);
    routing_.chains[c.chain_id] = std::move(c);
  }
  routing_.tables[table_id] = std::move(table);
  ++routing_.version;
  store_locked();
  return "";
}

Routing ClusterState::routing() const {
  std::lock_guard lk(mu_);
  Routing r = routing_;
  for (auto& [id, c] : r.chains)
    for (TargetRoute& t : c.targets) {
      const auto l = local_.find(t.target_id);
      t.local = l == local_.end() ? LocalState::Offline : l->second;
    }
  return r;
}

uint64_t ClusterState::version() const {
  std::lock_guard lk(mu_);
  return routing_.version;
}

}  // namespace ff::fs
