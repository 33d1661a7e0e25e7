// The key-value store behind the storage cluster's state (mgmtd's chain tables, a target's chunk
// metadata): ordered string keys, point reads, range scans and atomic write batches. Two engines
// with the same behaviour: in memory (tests) and RocksDB (on disk; a batch is written with the
// WAL synced, so an acknowledged batch survives a crash of the process).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ff::fs {

struct KvBatch {
  // In order: a value puts the key, nullopt erases it.
  std::vector<std::pair<std::string, std::optional<std::string>>> ops;
  // false: the batch survives a crash of the process (the OS has it) but not necessarily one
  // of the machine; for records that recovery can rebuild (a commit after a synced pending).
  bool sync = true;
  void put(std::string key, std::string value) {
    ops.emplace_back(std::move(key), std::move(value));
  }
  void erase(std::string key) { ops.emplace_back(std::move(key), std::nullopt); }
  bool empty() const { return ops.empty(); }
};

class KvEngine {
 public:
  virtual ~KvEngine() = default;
  virtual std::optional<std::string> get(std::string_view key) const = 0;
  // Pairs with begin <= key < end (end empty: no upper bound), ascending, at most `limit`.
  virtual std::vector<std::pair<std::string, std::string>> scan(std::string_view begin,
                                                                std::string_view end,
                                                                size_t limit = SIZE_MAX) const = 0;
  // All or nothing (ff::Error when the engine refuses it: nothing then changed).
  virtual void write(const KvBatch& batch) = 0;
};

std::unique_ptr<KvEngine> make_memory_kv();
// Opens (creating) a RocksDB database in `dir`; ff::Error naming the directory on failure.
std::unique_ptr<KvEngine> open_rocksdb_kv(const std::string& dir);

// The smallest key greater than every key that starts with `prefix` ("" when there is none):
// scan(prefix, prefix_end(prefix)) lists a prefix.
std::string prefix_end(std::string_view prefix);

}  // namespace ff::fs
