// The storage cluster's routing info (docs/fs-design.md, "Model"): nodes and their addresses,
// chains with their targets in order and their states, chain tables, all under one version that
// every change bumps. mgmtd owns it; storage services and clients hold copies it pushes.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fs/chain_state.h"
#include "fs/chunk_meta.h"

namespace ff::fs {

struct TargetRoute {
  uint32_t target_id = 0;
  uint32_t node_id = 0;
  PublicState state = PublicState::Serving;
  LocalState local = LocalState::UpToDate;
  bool operator==(const TargetRoute&) const = default;
};

struct ChainRoute {
  uint32_t chain_id = 0;
  uint32_t version = 0;
  std::vector<TargetRoute> targets;  // chain order: head first
  bool operator==(const ChainRoute&) const = default;

  // The head: the first serving target (nullptr when none serves).
  const TargetRoute* head() const;
  // The target after `target_id` that takes writes (serving or syncing), or nullptr (a tail).
  const TargetRoute* successor(uint32_t target_id) const;
  // The target before `target_id` that takes writes, or nullptr.
  const TargetRoute* predecessor(uint32_t target_id) const;
  const TargetRoute* find(uint32_t target_id) const;
  std::vector<const TargetRoute*> serving() const;
};

struct TableRoute {
  uint32_t table_id = 0;
  uint32_t version = 0;
  std::vector<uint32_t> chain_ids;
  bool operator==(const TableRoute&) const = default;
};

struct Routing {
  uint64_t version = 0;
  std::map<uint32_t, std::string> nodes;  // node id -> "host:port"
  std::map<uint32_t, ChainRoute> chains;
  std::map<uint32_t, TableRoute> tables;
  // The metadata services' addresses (mgmtd lists those with a live lease; not versioned).
  std::vector<std::string> meta;
  bool operator==(const Routing&) const = default;

  const ChainRoute* chain(uint32_t chain_id) const;
  // The address of the node holding `target_id` ("" when unknown).
  std::string address_of(uint32_t target_id) const;
  // Chunk `index` of file `inode` in table `table_id`: chains[(inode + index) % size] (3FS
  // stripes a file's chunks over its table's chains from a per-file start; ours is the inode).
  uint32_t chain_for(uint32_t table_id, uint64_t inode, uint64_t index) const;
};

std::string describe(const ChainRoute& chain);

// A file's layout (3FS's): its chunks of chunk_size bytes go round-robin over `stripe` chains of
// chain table `table_id`, the first `stripe` of the table's chains after a shuffle by `seed` (so
// files start and spread over different chains). Chunk `index` of the file lives on
// chains[index % stripe].
struct Layout {
  uint32_t table_id = 1;
  uint32_t chunk_size = 1 << 20;  // a power of two, 4 KiB .. 64 MiB
  uint32_t stripe = 1;
  uint64_t seed = 0;
  bool operator==(const Layout&) const = default;
  // Empty string, or what is wrong with it.
  std::string check() const;
};

// The chains of a file with `layout` (stripe clamped to the table's size); empty when the routing
// has no such table.
std::vector<uint32_t> file_chains(const Routing& r, const Layout& layout);

}  // namespace ff::fs
