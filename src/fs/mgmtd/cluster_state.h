// mgmtd's state and rules, without transport (docs/fs-design.md, "Cluster manager"): nodes with
// heartbeat leases, targets and their local states, chains and chain tables, and the routing
// info they make. Nodes, targets, chains and tables are kept in a key-value store (one atomic
// batch per change), so a new ClusterState on the same store resumes the same chains. Local
// states come from heartbeats and are not stored: after a restart every node gets a new lease.
// Thread-safe.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "fs/kv.h"
#include "fs/routing.h"

namespace ff::fs {

using Clock = std::chrono::steady_clock;

class ClusterState {
 public:
  ClusterState(KvEngine& kv, std::chrono::milliseconds lease, Clock::time_point now);

  // A storage process starts (or restarts): its address and targets are recorded, and its
  // targets count as offline until its heartbeats say otherwise, so a target that was serving
  // moves to its chain's end now and can only come back through syncing. Empty string or an
  // error (a target of another node, no targets).
  std::string register_node(uint32_t node_id, const std::string& address,
                            const std::vector<uint32_t>& target_ids, Clock::time_point now);
  // The node's targets' local states; false for a node that must register first.
  bool heartbeat(uint32_t node_id, const std::vector<std::pair<uint32_t, LocalState>>& targets,
                 Clock::time_point now);
  // Expires leases and applies the state machine to every chain (each changed chain: version + 1,
  // routing version + 1, stored). True when the routing changed.
  bool update(Clock::time_point now);

  // Chain table `table_id` of chains of `replicas` targets on different nodes, from every
  // registered target not yet in a chain, all serving. Empty string or an error.
  std::string create_chains(uint32_t table_id, uint32_t replicas);

  Routing routing() const;
  uint64_t version() const;

 private:
  void store_locked();
  bool update_locked(Clock::time_point now);

  KvEngine& kv_;
  std::chrono::milliseconds lease_;
  mutable std::mutex mu_;
  Routing routing_;                                // public states; local states filled in
  std::map<uint32_t, uint32_t> target_node_;       // target -> node
  std::map<uint32_t, Clock::time_point> expires_;  // node -> lease end
  std::map<uint32_t, LocalState> local_;           // target -> reported local state
};

}  // namespace ff::fs
