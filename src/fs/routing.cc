#include "fs/routing.h"

#include <algorithm>

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

std::string Layout::check() const {
  if (chunk_size < 4096 || chunk_size > (64u << 20) || (chunk_size & (chunk_size - 1)) != 0)
    return fmt::format("chunk size {} is not a power of two from 4 KiB to 64 MiB", chunk_size);
  if (stripe == 0 || stripe > 4096) return fmt::format("stripe {} is not 1 .. 4096", stripe);
  return "";
}

std::vector<uint32_t> file_chains(const Routing& r, const Layout& layout) {
  const auto it = r.tables.find(layout.table_id);
  if (it == r.tables.end() || it->second.chain_ids.empty()) return {};
  std::vector<uint32_t> ids = it->second.chain_ids;
  // Fisher-Yates driven by splitmix64 of the seed: the same list on every client.
  uint64_t x = layout.seed;
  const auto next = [&x] {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  for (size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[next() % i]);
  ids.resize(std::min<size_t>(ids.size(), std::max<uint32_t>(layout.stripe, 1)));
  return ids;
}

std::string describe(const ChainRoute& chain) {
  std::vector<ChainTarget> ts;
  for (const TargetRoute& t : chain.targets) ts.push_back({t.target_id, t.state, t.local});
  return fmt::format("chain {} v{}: {}", chain.chain_id, chain.version, describe(ts));
}

}  // namespace ff::fs
