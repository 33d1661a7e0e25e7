// The embedded transactional store on RocksDB (one process owns the database, as RocksDB
// requires): a transaction reads through a RocksDB snapshot taken together with its read
// version; commits run one at a time, each checks the write sets of the commits made since that
// version (kept in memory while a transaction that began before them is open) against its read
// keys and read ranges, then writes its batch (WAL synced) at the next version. RocksDB's own
// optimistic transactions check point keys only; this checks ranges too.
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "core/core.h"
#include "fs/txn.h"

namespace ff::fs {
namespace {

struct Core {
  std::string dir;
  std::unique_ptr<rocksdb::DB> db;
  std::mutex mu;
  uint64_t version = 0;
  struct Commit {
    uint64_t version;
    std::vector<std::string> keys;  // sorted
  };
  std::deque<Commit> log;        // commits newer than the oldest open transaction
  std::multiset<uint64_t> open;  // read versions of open transactions
  TxnStatus inject_what = TxnStatus::Committed;
  int inject_count = 0;
  bool inject_applied = true;

  ~Core() {
    if (db) db->Close();
  }
  void prune_locked() {
    const uint64_t oldest = open.empty() ? version : *open.begin();
    while (!log.empty() && log.front().version <= oldest) log.pop_front();
  }
};

class RocksTxn final : public Txn {
 public:
  RocksTxn(std::shared_ptr<Core> core, bool writable)
      : core_(std::move(core)), writable_(writable) {
    std::lock_guard lk(core_->mu);
    version_ = core_->version;
    snap_ = core_->db->GetSnapshot();
    core_->open.insert(version_);
  }
  ~RocksTxn() override {
    std::lock_guard lk(core_->mu);
    core_->db->ReleaseSnapshot(snap_);
    core_->open.erase(core_->open.find(version_));
    core_->prune_locked();
  }
  uint64_t read_version() const override { return version_; }

  std::optional<std::string> get(std::string_view key) override {
    live();
    if (const auto w = writes_.find(key); w != writes_.end()) return w->second;
    reads_.emplace(key);
    return read(key);
  }
  std::optional<std::string> snapshot_get(std::string_view key) override {
    live();
    if (const auto w = writes_.find(key); w != writes_.end()) return w->second;
    return read(key);
  }

  KeyValues range(std::string_view begin, std::string_view end, size_t limit) override {
    live();
    std::map<std::string, std::string> all;
    // Enough stored pairs that the writes here cannot leave fewer than `limit` (clears remove).
    size_t want = limit;
    for (auto w = writes_.lower_bound(begin); w != writes_.end(); ++w) {
      if (!end.empty() && w->first >= end) break;
      if (want != SIZE_MAX) ++want;
    }
    rocksdb::ReadOptions ro;
    ro.snapshot = snap_;
    std::unique_ptr<rocksdb::Iterator> it(core_->db->NewIterator(ro));
    for (it->Seek(rocksdb::Slice(begin.data(), begin.size())); it->Valid() && all.size() < want;
         it->Next()) {
      const std::string_view k(it->key().data(), it->key().size());
      if (!end.empty() && k >= end) break;
      all.emplace(std::string(k), it->value().ToString());
    }
    FF_CHECK(it->status().ok(), "{}: scan failed: {}", core_->dir, it->status().ToString());
    const bool store_cut = all.size() == want && want != SIZE_MAX;
    const std::string stored_last = store_cut ? all.rbegin()->first : std::string();
    for (auto w = writes_.lower_bound(begin); w != writes_.end(); ++w) {
      if (!end.empty() && w->first >= end) break;
      if (store_cut && w->first > stored_last) break;  // past what was read from the store
      if (w->second)
        all[w->first] = *w->second;
      else
        all.erase(w->first);
    }
    KeyValues out;
    for (auto& [k, v] : all) {
      if (out.size() == limit) break;
      out.emplace_back(k, std::move(v));
    }
    if (out.size() < limit || out.empty())
      ranges_.emplace_back(std::string(begin), std::string(end));
    else
      ranges_.emplace_back(std::string(begin), out.back().first + '\0');
    return out;
  }

  void set(std::string_view key, std::string_view value) override {
    writable();
    writes_[std::string(key)] = std::string(value);
  }
  void clear(std::string_view key) override {
    writable();
    writes_[std::string(key)] = std::nullopt;
  }

  TxnStatus commit() override {
    writable();
    done_ = true;
    Core& c = *core_;
    std::lock_guard lk(c.mu);
    if (c.inject_count > 0) {
      --c.inject_count;
      if (c.inject_what != TxnStatus::Unknown || !c.inject_applied) return c.inject_what;
      apply(c);
      return TxnStatus::Unknown;
    }
    for (auto it = c.log.rbegin(); it != c.log.rend() && it->version > version_; ++it)
      for (const std::string& k : it->keys) {
        if (reads_.count(k)) return TxnStatus::Conflict;
        for (const auto& [b, e] : ranges_)
          if (k >= b && (e.empty() || k < e)) return TxnStatus::Conflict;
      }
    apply(c);
    return TxnStatus::Committed;
  }

 private:
  std::optional<std::string> read(std::string_view key) const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snap_;
    std::string v;
    const rocksdb::Status st = core_->db->Get(ro, rocksdb::Slice(key.data(), key.size()), &v);
    if (st.IsNotFound()) return std::nullopt;
    FF_CHECK(st.ok(), "{}: read failed: {}", core_->dir, st.ToString());
    return v;
  }
  void apply(Core& c) {
    if (writes_.empty()) return;
    rocksdb::WriteBatch wb;
    std::vector<std::string> keys;
    for (const auto& [k, v] : writes_) {
      if (v)
        wb.Put(k, *v);
      else
        wb.Delete(k);
      keys.push_back(k);
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    const rocksdb::Status st = c.db->Write(wo, &wb);
    FF_CHECK(st.ok(), "{}: commit failed: {}", c.dir, st.ToString());
    c.log.push_back({++c.version, std::move(keys)});
  }
  void live() const { FF_CHECK(!done_, "fs txn: used after commit"); }
  void writable() const {
    live();
    FF_CHECK(writable_, "fs txn: a read-only transaction cannot write or commit");
  }

  std::shared_ptr<Core> core_;
  bool writable_;
  bool done_ = false;
  uint64_t version_ = 0;
  const rocksdb::Snapshot* snap_ = nullptr;
  std::map<std::string, std::optional<std::string>, std::less<>> writes_;
  std::set<std::string, std::less<>> reads_;
  std::vector<std::pair<std::string, std::string>> ranges_;
};

class RocksTxnStore final : public TxnStore {
 public:
  explicit RocksTxnStore(const std::string& dir) {
    core_->dir = dir;
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    const rocksdb::Status st = rocksdb::DB::Open(o, dir, &db);
    FF_CHECK(st.ok(), "{}: cannot open the transactional store: {}", dir, st.ToString());
    core_->db.reset(db);
  }
  std::unique_ptr<Txn> begin() override { return std::make_unique<RocksTxn>(core_, true); }
  std::unique_ptr<ReadTxn> begin_read() override {
    return std::make_unique<RocksTxn>(core_, false);
  }
  void inject(TxnStatus what, int count, bool applied) override {
    std::lock_guard lk(core_->mu);
    core_->inject_what = what;
    core_->inject_count = count;
    core_->inject_applied = applied;
  }

 private:
  std::shared_ptr<Core> core_ = std::make_shared<Core>();
};

}  // namespace

std::unique_ptr<TxnStore> open_rocksdb_txn_store(const std::string& dir) {
  return std::make_unique<RocksTxnStore>(dir);
}

}  // namespace ff::fs
