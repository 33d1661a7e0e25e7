// Transactions over ordered string keys with serializable isolation: what part 2's metadata
// service keeps its inodes and directory entries in (docs/fs-design.md, "Part 2: transactions";
// 3FS runs on FoundationDB's). A transaction reads at one snapshot (its read version), buffers
// its writes, and commits only if nothing it read -- keys and ranges -- was changed by a commit
// after that snapshot; then all its writes become visible at once, at a new version.
//
// Engines behind one interface: in memory (tests), RocksDB (the embedded default) and etcd
// (several machines). Every
// engine takes scoped fault injection, as 3FS's tests do: the next commits fail, or apply but
// answer that the outcome is unknown.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ff::fs {

enum class TxnStatus : uint8_t {
  Committed,
  Conflict,  // a key or range it read changed since its snapshot: nothing applied; retry
  Unknown,   // the store may or may not have applied it (a lost answer): retry idempotently
  Failed,    // the store refused it (an injected failure, an unavailable store): nothing applied
};
const char* txn_status_name(TxnStatus s);

using KeyValues = std::vector<std::pair<std::string, std::string>>;

class ReadTxn {
 public:
  virtual ~ReadTxn() = default;
  virtual uint64_t read_version() const = 0;
  // Reads that a read-write transaction's commit checks (serializable).
  virtual std::optional<std::string> get(std::string_view key) = 0;
  // Pairs with begin <= key < end ("" end: no bound), ascending, at most `limit`. The range
  // checked at commit is what the scan covered: to end when fewer than `limit` came back, to
  // just past the last key otherwise.
  virtual KeyValues range(std::string_view begin, std::string_view end,
                          size_t limit = SIZE_MAX) = 0;
  // Reads at the snapshot that no commit checks (a stale answer is fine for the caller).
  virtual std::optional<std::string> snapshot_get(std::string_view key) = 0;
};

class Txn : public ReadTxn {
 public:
  // Writes are buffered; the transaction's own reads see them.
  virtual void set(std::string_view key, std::string_view value) = 0;
  virtual void clear(std::string_view key) = 0;
  // Ends the transaction (every later call is an error).
  virtual TxnStatus commit() = 0;
};

class TxnStore {
 public:
  virtual ~TxnStore() = default;
  virtual std::unique_ptr<Txn> begin() = 0;
  virtual std::unique_ptr<ReadTxn> begin_read() = 0;
  // Fault injection: the next `count` commits (of any thread) answer `what` (Failed: nothing
  // applied; Unknown: applied, or not when `applied` is false; Conflict: nothing applied).
  virtual void inject(TxnStatus what, int count = 1, bool applied = true) = 0;
};

std::unique_ptr<TxnStore> make_memory_txn_store();
// Opens (creating) the store in `dir`, for this process alone; ff::Error naming it on failure.
std::unique_ptr<TxnStore> open_rocksdb_txn_store(const std::string& dir);
// An etcd v3 server's (or cluster member's) client address, "host:port"; ff::Error when it does
// not answer. Needs etcd 3.3 or later (comparisons over key ranges).
std::unique_ptr<TxnStore> open_etcd_txn_store(const std::string& endpoint);

// Runs `body` in a fresh transaction and commits, retrying a conflict, an unknown outcome or a
// failure up to `attempts` times. An unknown outcome may have applied the body already, so a
// body that is retried must be idempotent (3FS's metadata operations check what they would
// create or remove first). Returns the last status.
TxnStatus run_txn(TxnStore& store, const std::function<void(Txn&)>& body, int attempts = 16);

}  // namespace ff::fs
