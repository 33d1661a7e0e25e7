// The in-memory and RocksDB engines of kv.h.
#include "fs/kv.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <map>
#include <mutex>
#include <shared_mutex>

#include "core/core.h"

namespace ff::fs {
namespace {

class MemoryKv final : public KvEngine {
 public:
  std::optional<std::string> get(std::string_view key) const override {
    std::shared_lock lk(mu_);
    const auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  std::vector<std::pair<std::string, std::string>> scan(std::string_view begin,
                                                        std::string_view end,
                                                        size_t limit) const override {
    std::shared_lock lk(mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (auto it = map_.lower_bound(begin);
         it != map_.end() && (end.empty() || it->first < end) && out.size() < limit; ++it)
      out.emplace_back(it->first, it->second);
    return out;
  }
  void write(const KvBatch& batch) override {
    std::unique_lock lk(mu_);
    for (const auto& [k, v] : batch.ops) {
      if (v)
        map_.insert_or_assign(k, *v);
      else
        map_.erase(k);
    }
  }

 private:
  mutable std::shared_mutex mu_;
  std::map<std::string, std::string, std::less<>> map_;
};

class RocksKv final : public KvEngine {
 public:
  explicit RocksKv(const std::string& dir) : dir_(dir) {
    rocksdb::Options opt;
    opt.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    const rocksdb::Status st = rocksdb::DB::Open(opt, dir, &db);
    FF_CHECK(st.ok(), "{}: cannot open the RocksDB store: {}", dir, st.ToString());
    db_.reset(db);
  }
  std::optional<std::string> get(std::string_view key) const override {
    std::string v;
    const rocksdb::Status st =
        db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), &v);
    if (st.IsNotFound()) return std::nullopt;
    FF_CHECK(st.ok(), "{}: read failed: {}", dir_, st.ToString());
    return v;
  }
  std::vector<std::pair<std::string, std::string>> scan(std::string_view begin,
                                                        std::string_view end,
                                                        size_t limit) const override {
    std::vector<std::pair<std::string, std::string>> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(rocksdb::Slice(begin.data(), begin.size())); it->Valid() && out.size() < limit;
         it->Next()) {
      const rocksdb::Slice k = it->key();
      if (!end.empty() && std::string_view(k.data(), k.size()) >= end) break;
      out.emplace_back(k.ToString(), it->value().ToString());
    }
    FF_CHECK(it->status().ok(), "{}: scan failed: {}", dir_, it->status().ToString());
    return out;
  }
  void write(const KvBatch& batch) override {
    rocksdb::WriteBatch wb;
    for (const auto& [k, v] : batch.ops) {
      if (v)
        wb.Put(k, *v);
      else
        wb.Delete(k);
    }
    rocksdb::WriteOptions wo;
    wo.sync = batch.sync;  // acknowledged means on disk (unless the batch says otherwise)
    const rocksdb::Status st = db_->Write(wo, &wb);
    FF_CHECK(st.ok(), "{}: write failed: {}", dir_, st.ToString());
  }

 private:
  std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace

std::unique_ptr<KvEngine> make_memory_kv() {
  return std::make_unique<MemoryKv>();
}

std::unique_ptr<KvEngine> open_rocksdb_kv(const std::string& dir) {
  return std::make_unique<RocksKv>(dir);
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (uint8_t(end.back()) != 0xff) {
      end.back() = char(uint8_t(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return end;
}

}  // namespace ff::fs
