// The embedded transactional store on RocksDB (one process owns the database, as RocksDB
// requires): a transaction reads through a RocksDB snapshot taken together with its read
// version; commits run one at a time, each checks the write sets of the commits made since that
// version (kept in memory while a transaction that began before them is open) against its read
// keys and read ranges, then writes its batch at the next version. RocksDB's own optimistic
// transactions check point keys only; this checks ranges too. Group commit: a commit returns once
// the WAL is synced up to it, and one sync (outside the commit lock) covers every commit written
// before it began, so concurrent commits share a device flush. A commit is visible to
// transactions that begin after it was written, before its sync; a power loss can take back only
// commits that were not yet answered (and what was read from them).
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "core/core.h"
#include "fs/txn.h"
#include "fs/txn_buffer.h"

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
  std::mutex sync_mu;
  uint64_t synced = 0;           // every commit up to this version is on the medium
  std::deque<Commit> log;        // commits newer than the oldest open transaction
  std::multiset<uint64_t> open;  // read versions of open transactions
  Injection injection;

  ~Core() {
    if (db) db->Close();
  }
  void prune_locked() {
    const uint64_t oldest = open.empty() ? version : *open.begin();
    while (!log.empty() && log.front().version <= oldest) log.pop_front();
  }
};

class RocksTxn final : public BufferedTxn {
 public:
  RocksTxn(std::shared_ptr<Core> core, bool writable)
      : BufferedTxn(writable, core->injection), core_(std::move(core)) {
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

 private:
  std::optional<std::string> stored(std::string_view key, bool track) override {
    if (track) reads_.emplace(key);
    rocksdb::ReadOptions ro;
    ro.snapshot = snap_;
    std::string v;
    const rocksdb::Status st = core_->db->Get(ro, rocksdb::Slice(key.data(), key.size()), &v);
    if (st.IsNotFound()) return std::nullopt;
    FF_CHECK(st.ok(), "{}: read failed: {}", core_->dir, st.ToString());
    return v;
  }
  std::map<std::string, std::string> stored_range(std::string_view begin, std::string_view end,
                                                  size_t want) override {
    std::map<std::string, std::string> all;
    rocksdb::ReadOptions ro;
    ro.snapshot = snap_;
    std::unique_ptr<rocksdb::Iterator> it(core_->db->NewIterator(ro));
    for (it->Seek(rocksdb::Slice(begin.data(), begin.size())); it->Valid() && all.size() < want;
         it->Next()) {
      std::string k = it->key().ToString();
      if (!in(k, end)) break;
      all.emplace(std::move(k), it->value().ToString());
    }
    FF_CHECK(it->status().ok(), "{}: scan failed: {}", core_->dir, it->status().ToString());
    return all;
  }
  TxnStatus commit_writes(bool check) override {
    Core& c = *core_;
    uint64_t mine = 0;
    {
      std::lock_guard lk(c.mu);
      const TxnStatus s = write_locked(check, &mine);
      if (s != TxnStatus::Committed || mine == 0) return s;
    }
    std::lock_guard sl(c.sync_mu);
    if (c.synced < mine) {
      uint64_t upto = 0;
      {
        std::lock_guard lk(c.mu);
        upto = c.version;  // written (not yet synced) up to here
      }
      const rocksdb::Status st = c.db->SyncWAL();
      FF_CHECK(st.ok(), "{}: syncing the log failed: {}", c.dir, st.ToString());
      c.synced = upto;
    }
    return TxnStatus::Committed;
  }

  // Checks and writes (not synced) under the commit lock; `mine`: the commit's version (0: no
  // writes).
  TxnStatus write_locked(bool check, uint64_t* mine) {
    Core& c = *core_;
    if (check)
      for (auto it = c.log.rbegin(); it != c.log.rend() && it->version > version_; ++it)
        for (const std::string& k : it->keys) {
          if (reads_.count(k)) return TxnStatus::Conflict;
          for (const auto& [b, e] : ranges_)
            if (k >= b && in(k, e)) return TxnStatus::Conflict;
        }
    if (writes_.empty()) return TxnStatus::Committed;
    rocksdb::WriteBatch wb;
    std::vector<std::string> keys;
    for (const auto& [k, v] : writes_) {
      if (v)
        wb.Put(k, *v);
      else
        wb.Delete(k);
      keys.push_back(k);
    }
    const rocksdb::Status st = c.db->Write(rocksdb::WriteOptions(), &wb);
    FF_CHECK(st.ok(), "{}: commit failed: {}", c.dir, st.ToString());
    c.log.push_back({++c.version, std::move(keys)});
    *mine = c.version;
    return TxnStatus::Committed;
  }

  std::shared_ptr<Core> core_;
  uint64_t version_ = 0;
  const rocksdb::Snapshot* snap_ = nullptr;
  std::set<std::string, std::less<>> reads_;
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
    core_->injection.set(what, count, applied);
  }

 private:
  std::shared_ptr<Core> core_ = std::make_shared<Core>();
};

}  // namespace

std::unique_ptr<TxnStore> open_rocksdb_txn_store(const std::string& dir) {
  return std::make_unique<RocksTxnStore>(dir);
}

}  // namespace ff::fs
