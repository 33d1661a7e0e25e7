#include "fs/routing.h"

#include "core/core.h"

namespace ff::fs {

const TargetRoute* ChainRoute::head() const {
  for (const TargetRoute& t : targets)
    if (t.state == PublicState::Serving) return &t;
  return nullptr;
}

const TargetRoute* ChainRoute::find(uint32_t target_id) const {
  for (const TargetRoute& t : targets)
    if (t.target_id == target_id) return &t;
  return nullptr;
}

const TargetRoute* ChainRoute::successor(uint32_t target_id) const {
  bool seen = false;
  for (const TargetRoute& t : targets) {
    if (seen && takes_writes(t.state)) return &t;
    if (t.target_id == target_id) seen = true;
  }
  return nullptr;
}

const TargetRoute* ChainRoute::predecessor(uint32_t target_id) const {
  const TargetRoute* before = nullptr;
  for (const TargetRoute& t : targets) {
    if (t.target_id == target_id) return before;
    if (takes_writes(t.state)) before = &t;
  }
  return nullptr;
}

std::vector<const TargetRoute*> ChainRoute::serving() const {
  std::vector<const TargetRoute*> out;
  for (const TargetRoute& t : targets)
    if (serves_reads(t.state)) out.push_back(&t);
  return out;
}

const ChainRoute* Routing::chain(uint32_t chain_id) const {
  const auto it = chains.find(chain_id);
  return it == chains.end() ? nullptr : &it->second;
}

std::string Routing::address_of(uint32_t target_id) const {
  for (const auto& [id, c] : chains)
    if (const TargetRoute* t = c.find(target_id)) {
      const auto n = nodes.find(t->node_id);
      return n == nodes.end() ? "" : n->second;
    }
  return "";
}

uint32_t Routing::chain_for(uint32_t table_id, uint64_t inode, uint64_t index) const {
  const auto it = tables.find(table_id);
  FF_CHECK(it != tables.end() && !it->second.chain_ids.empty(), "fs: no chain table {}", table_id);
  const auto& ids = it->second.chain_ids;
  return ids[(inode + index) % ids.size()];
}

std::string describe(const ChainRoute& chain) {
  std::vector<ChainTarget> ts;
  for (const TargetRoute& t : chain.targets) ts.push_back({t.target_id, t.state, t.local});
  return fmt::format("chain {} v{}: {}", chain.chain_id, chain.version, describe(ts));
}

}  // namespace ff::fs
