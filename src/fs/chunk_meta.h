// Chunk identity and metadata, and the diff a recovering target's predecessor runs on the two
// metadata lists (docs/fs-design.md, "Recovery"; after 3FS's ResyncWorker rules).
#pragma once
#include <array>
#include <compare>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ff::fs {

// 16 bytes, big-endian: the file's inode, then the chunk's index in the file. Byte order is
// numeric order, so a file's chunks are adjacent and ordered in a key-value store.
struct ChunkId {
  std::array<uint8_t, 16> bytes{};
  static ChunkId of(uint64_t inode, uint64_t index);
  uint64_t inode() const;
  uint64_t index() const;
  std::string hex() const;
  auto operator<=>(const ChunkId&) const = default;
};

struct ChunkMeta {
  ChunkId id;
  uint32_t chain_version = 0;  // the chain version of the last write
  uint64_t committed = 0;      // committed version (0: none yet)
  uint64_t update = 0;         // latest stored version: == committed, or committed + 1 pending
  uint32_t length = 0;
  uint32_t crc32c = 0;
  uint32_t update_length = 0;  // the latest stored version's (the pending one's, if any)
  uint32_t update_crc32c = 0;
  bool pending() const { return update != committed; }
};

enum class SyncAction : uint8_t { Send, Remove };

struct SyncStep {
  ChunkId id;
  SyncAction action;
  bool operator==(const SyncStep&) const = default;
};

// What the predecessor (`local`) does to bring a syncing successor (`remote`) up to date; both
// lists sorted by id. Send (a full-chunk replace) when the chunk is only here, when this side's
// chain version differs, or when the versions differ and no write to it is in flight here (that
// write, forwarded as a full chunk, replaces it anyway); Remove when it is only there.
std::vector<SyncStep> sync_plan(std::span<const ChunkMeta> local,
                                std::span<const ChunkMeta> remote);

}  // namespace ff::fs
