#include "fs/chunk_meta.h"

#include "core/core.h"

namespace ff::fs {

ChunkId ChunkId::of(uint64_t inode, uint64_t index) {
  ChunkId c;
  for (int i = 0; i < 8; ++i) {
    c.bytes[size_t(i)] = uint8_t(inode >> (56 - 8 * i));
    c.bytes[size_t(8 + i)] = uint8_t(index >> (56 - 8 * i));
  }
  return c;
}

uint64_t ChunkId::inode() const {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | bytes[size_t(i)];
  return v;
}

uint64_t ChunkId::index() const {
  uint64_t v = 0;
  for (int i = 8; i < 16; ++i) v = v << 8 | bytes[size_t(i)];
  return v;
}

std::string ChunkId::hex() const {
  std::string s;
  for (const uint8_t b : bytes) s += fmt::format("{:02x}", b);
  return s;
}

std::vector<SyncStep> sync_plan(std::span<const ChunkMeta> local,
                                std::span<const ChunkMeta> remote) {
  for (size_t i = 1; i < local.size(); ++i)
    FF_INVARIANT(local[i - 1].id < local[i].id, "sync_plan: local chunks not sorted");
  for (size_t i = 1; i < remote.size(); ++i)
    FF_INVARIANT(remote[i - 1].id < remote[i].id, "sync_plan: remote chunks not sorted");
  std::vector<SyncStep> plan;
  size_t i = 0, j = 0;
  while (i < local.size() || j < remote.size()) {
    if (j == remote.size() || (i < local.size() && local[i].id < remote[j].id)) {
      plan.push_back({local[i++].id, SyncAction::Send});
    } else if (i == local.size() || remote[j].id < local[i].id) {
      plan.push_back({remote[j++].id, SyncAction::Remove});
    } else {
      const ChunkMeta& l = local[i++];
      const ChunkMeta& r = remote[j++];
      if (l.chain_version != r.chain_version || (l.committed != r.update && !l.pending()))
        plan.push_back({l.id, SyncAction::Send});
    }
  }
  return plan;
}

}  // namespace ff::fs
