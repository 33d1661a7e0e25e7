// The KV-cache store (3FS-KV's role; docs/fs.md, "KV-cache store"): immutable blocks -- an
// inference engine's saved attention state for a token prefix -- kept as files of the file
// system under <root>/<namespace>/<key>, keyed by a content hash, with a capacity beyond which
// the least recently used blocks are removed. A block is written under a temporary name and
// renamed into place, so a reader sees a whole block or none; each carries its length and
// CRC32C, checked on every read. Reads go by the block's inode straight to the storage (no
// metadata call once a block is known). Thread-safe.
//
// Several stores (processes) may share one root: each sees every block, and each evicts by its
// own view of recency (the blocks it put or read, the rest by modification time at open).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fs/file.h"

namespace ff::fs {

struct KvCacheOptions {
  std::string root = "/kvcache";  // a directory of the file system (made when missing)
  uint64_t capacity = 0;          // bytes of blocks (0: no limit)
  unsigned parallel = 16;         // reads of a batch_get in flight
};

struct KvCacheStats {
  uint64_t blocks = 0, bytes = 0;
  uint64_t hits = 0, misses = 0, puts = 0, evictions = 0, corrupt = 0;
};

class KvCache {
 public:
  // Lists what the root holds (every namespace); ff::Error when the file system cannot be used.
  KvCache(FsClient& fs, const KvCacheOptions& options);

  // A 32-hex-digit content hash of `data` (two independent 64-bit hashes).
  static std::string content_key(std::string_view data);

  // Stores a block (0); a key already stored is kept as it is (blocks are immutable). EINVAL for
  // a namespace or key that is empty, too long (namespace 64, key 128) or not [A-Za-z0-9._-]
  // (and not starting with '.'); EFBIG for a block larger than the capacity; ENOSPC / EIO from
  // the file system.
  int put(const std::string& ns, const std::string& key, std::string_view data);
  // The block (0), ENOENT when it is not stored (never, evicted, removed, or found damaged:
  // then it is removed), EINVAL for a bad name.
  int get(const std::string& ns, const std::string& key, std::string* out);
  // Several blocks at once; one code per key (as get), the blocks in `out`.
  std::vector<int> batch_get(const std::string& ns, const std::vector<std::string>& keys,
                             std::vector<std::string>* out);
  bool contains(const std::string& ns, const std::string& key);
  int remove(const std::string& ns, const std::string& key);
  KvCacheStats stats() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace ff::fs
