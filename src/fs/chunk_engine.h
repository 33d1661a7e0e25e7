// One storage target's chunks on a local directory (docs/fs-design.md, "Chunk engine"): data in
// pre-allocated block files per size class (64 KiB ... 64 MiB, powers of two), metadata and the
// block allocation in the target's key-value store, every change one atomic batch. Updates are
// copy-on-write: a write stores a pending version in a new block next to the committed one, and
// commit makes it current and frees the old block, so a crash at any point leaves the committed
// data readable. CRC32C per chunk, checked on every read.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fs/chunk_meta.h"
#include "fs/kv.h"

namespace ff::fs {

constexpr uint32_t kMinBlock = 64 << 10;  // size classes 64 KiB ... 64 MiB
constexpr int kSizeClasses = 11;
constexpr uint32_t kBlocksPerFile = 256;

// Where a version's bytes lie: block `block` of file `file` of size class `size_class`.
struct BlockPos {
  int8_t size_class = -1;  // -1: no block (an empty chunk)
  uint32_t file = 0, block = 0;
  bool operator==(const BlockPos&) const = default;
};

// Errors the service maps to its status codes.
enum class ChunkError {
  None,
  NotFound,
  NotCommitted,
  BadRange,
  NoSpace,
  ChecksumMismatch,
  BadVersion
};
const char* chunk_error_name(ChunkError e);

class ChunkEngine {
 public:
  // Opens (creating) the target in `dir` (dir/meta: the RocksDB store; dir/data: block files).
  // capacity_bytes: blocks it may allocate in all (0: no limit). sync: every stored version is
  // on the medium (fdatasync, synced metadata) before the call returns; without it a stored
  // version survives the death of the process (the OS has it) but not a crash of the machine.
  ChunkEngine(const std::string& dir, uint64_t capacity_bytes = 0, bool sync = true);
  ~ChunkEngine();

  std::optional<ChunkMeta> meta(const ChunkId& id) const;
  // Every chunk's metadata, ascending (recovery's syncStart).
  std::vector<ChunkMeta> all_metas() const;
  // The highest chunk of `inode` (its length gives the file's), if any.
  std::optional<ChunkMeta> last_chunk(uint64_t inode) const;

  // Committed bytes [offset, offset + length) (fewer past the chunk's end), or the pending
  // version's with `pending`. Checks the whole chunk's CRC32C first.
  // `meta`, when given, gets the chunk's metadata as of the read (same lock).
  ChunkError read(const ChunkId& id, uint32_t offset, uint32_t length, std::string* out,
                  bool pending = false, ChunkMeta* meta = nullptr) const;

  // Asks the OS to start reading the chunk's committed bytes (a batch of reads: the disk
  // works on all of them at once).
  void prefetch(const ChunkId& id) const;

  // Writes data at offset into a new pending version `update_version` (= committed + 1) of at
  // most chunk_size bytes, copy-on-write; crc: the expected CRC32C of the whole new chunk (0:
  // not checked). A pending version already there is replaced (a retried forward).
  ChunkError write(const ChunkId& id, uint32_t offset, std::string_view data, uint32_t chunk_size,
                   uint32_t chain_version, uint64_t update_version, uint32_t crc = 0);
  // A pending version `update_version` (= committed + 1) of `length` bytes: the committed bytes
  // cut, or extended with zeros. crc as for write.
  ChunkError truncate(const ChunkId& id, uint32_t length, uint32_t chunk_size,
                      uint32_t chain_version, uint64_t update_version, uint32_t crc = 0);
  // The two halves of write / truncate, for a caller that forwards the new chunk while it
  // stores it: `prepare` computes the new chunk's bytes and CRC32C (update_version must be
  // committed + 1; nothing stored), `put_pending` stores them as that pending version.
  enum class Edit : uint8_t { Write, Truncate };
  // With `is_data` given, a write that replaces the whole chunk (offset 0, at least its length)
  // sets *is_data and leaves *bytes empty: the new chunk is `data` itself, not copied.
  ChunkError prepare(const ChunkId& id, Edit edit, uint32_t offset, std::string_view data,
                     uint32_t length, uint32_t chunk_size, uint64_t update_version,
                     std::string* bytes, uint32_t* crc, bool* is_data = nullptr) const;
  ChunkError put_pending(const ChunkId& id, const std::string& bytes, uint32_t crc,
                         uint32_t chain_version, uint64_t update_version);
  // Makes the pending version `update_version` committed, freeing the old block.
  ChunkError commit(const ChunkId& id, uint64_t update_version);
  // Drops the pending version `update_version` (an update that failed further down the chain);
  // the committed version stays. None when there is no such pending version.
  ChunkError abort(const ChunkId& id, uint64_t update_version);
  // Replaces the chunk by `data` at version `version`, committed (recovery's full-chunk sends).
  ChunkError replace(const ChunkId& id, std::string_view data, uint32_t chain_version,
                     uint64_t version);
  ChunkError remove(const ChunkId& id);

  uint64_t used_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ff::fs
