// The in-memory transactional store: every key keeps its versions (a cleared key a versionless
// value), a transaction reads at the version current when it began, and a commit checks under
// one lock that no key it read and no key in a range it read has a version newer than that.
// Versions are never pruned: a store for tests and small tools.
#include <map>
#include <mutex>

#include "core/core.h"
#include "fs/txn.h"
#include "fs/txn_buffer.h"

namespace ff::fs {
namespace {

using History = std::vector<std::pair<uint64_t, std::optional<std::string>>>;

struct Core {
  std::mutex mu;
  uint64_t version = 0;
  std::map<std::string, History, std::less<>> data;
  Injection injection;

  static const std::optional<std::string>* at(const History& h, uint64_t v) {
    for (auto it = h.rbegin(); it != h.rend(); ++it)
      if (it->first <= v) return &it->second;
    return nullptr;
  }
  bool changed_after(const std::string& key, uint64_t v) const {
    const auto it = data.find(key);
    return it != data.end() && !it->second.empty() && it->second.back().first > v;
  }
  bool range_changed_after(const std::string& begin, const std::string& end, uint64_t v) const {
    for (auto it = data.lower_bound(begin); it != data.end(); ++it) {
      if (!end.empty() && it->first >= end) break;
      if (!it->second.empty() && it->second.back().first > v) return true;
    }
    return false;
  }
};

class MemoryTxn final : public BufferedTxn {
 public:
  MemoryTxn(std::shared_ptr<Core> core, bool writable)
      : BufferedTxn(writable, core->injection), core_(std::move(core)) {
    std::lock_guard lk(core_->mu);
    version_ = core_->version;
  }
  uint64_t read_version() const override { return version_; }

 private:
  std::optional<std::string> stored(std::string_view key, bool track) override {
    if (track) reads_.emplace_back(key);
    std::lock_guard lk(core_->mu);
    const auto it = core_->data.find(key);
    if (it == core_->data.end()) return std::nullopt;
    const auto* val = Core::at(it->second, version_);
    return val ? *val : std::nullopt;
  }
  std::map<std::string, std::string> stored_range(std::string_view begin, std::string_view end,
                                                  size_t want) override {
    std::lock_guard lk(core_->mu);
    std::map<std::string, std::string> out;
    for (auto it = core_->data.lower_bound(begin); it != core_->data.end() && out.size() < want;
         ++it) {
      if (!in(it->first, end)) break;
      const auto* val = Core::at(it->second, version_);
      if (val && *val) out.emplace(it->first, **val);
    }
    return out;
  }
  TxnStatus commit_writes(bool check) override {
    Core& c = *core_;
    std::lock_guard lk(c.mu);
    if (check) {
      for (const std::string& k : reads_)
        if (c.changed_after(k, version_)) return TxnStatus::Conflict;
      for (const auto& [b, e] : ranges_)
        if (c.range_changed_after(b, e, version_)) return TxnStatus::Conflict;
    }
    if (writes_.empty()) return TxnStatus::Committed;
    const uint64_t v = ++c.version;
    for (auto& [k, val] : writes_) c.data[k].emplace_back(v, std::move(val));
    return TxnStatus::Committed;
  }

  std::shared_ptr<Core> core_;
  uint64_t version_ = 0;
  std::vector<std::string> reads_;
};

class MemoryTxnStore final : public TxnStore {
 public:
  std::unique_ptr<Txn> begin() override { return std::make_unique<MemoryTxn>(core_, true); }
  std::unique_ptr<ReadTxn> begin_read() override {
    return std::make_unique<MemoryTxn>(core_, false);
  }
  void inject(TxnStatus what, int count, bool applied) override {
    core_->injection.set(what, count, applied);
  }

 private:
  std::shared_ptr<Core> core_ = std::make_shared<Core>();
};

}  // namespace

const char* txn_status_name(TxnStatus s) {
  switch (s) {
    case TxnStatus::Committed:
      return "committed";
    case TxnStatus::Conflict:
      return "conflict";
    case TxnStatus::Unknown:
      return "unknown outcome";
    case TxnStatus::Failed:
      return "failed";
  }
  return "invalid";
}

std::unique_ptr<TxnStore> make_memory_txn_store() {
  return std::make_unique<MemoryTxnStore>();
}

TxnStatus run_txn(TxnStore& store, const std::function<void(Txn&)>& body, int attempts) {
  TxnStatus s = TxnStatus::Failed;
  for (int i = 0; i < attempts; ++i) {
    const auto t = store.begin();
    body(*t);
    s = t->commit();
    if (s == TxnStatus::Committed) return s;
  }
  return s;
}

}  // namespace ff::fs
