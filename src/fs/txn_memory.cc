// The in-memory transactional store: every key keeps its versions (a cleared key a versionless
// value), a transaction reads at the version current when it began, and a commit checks under
// one lock that no key it read and no key in a range it read has a version newer than that.
// Versions are never pruned: a store for tests and small tools.
#include <map>
#include <mutex>

#include "core/core.h"
#include "fs/txn.h"

namespace ff::fs {
namespace {

using History = std::vector<std::pair<uint64_t, std::optional<std::string>>>;

struct Core {
  std::mutex mu;
  uint64_t version = 0;
  std::map<std::string, History, std::less<>> data;
  TxnStatus inject_what = TxnStatus::Committed;
  int inject_count = 0;
  bool inject_applied = true;

  static const std::optional<std::string>* at(const History& h, uint64_t v) {
    for (auto it = h.rbegin(); it != h.rend(); ++it)
      if (it->first <= v) return &it->second;
    return nullptr;
  }
  std::optional<std::string> read(std::string_view key, uint64_t v) {
    std::lock_guard lk(mu);
    const auto it = data.find(key);
    if (it == data.end()) return std::nullopt;
    const auto* val = at(it->second, v);
    return val ? *val : std::nullopt;
  }
  // Every live key of [begin, end) at version v.
  std::map<std::string, std::string> scan(std::string_view begin, std::string_view end,
                                          uint64_t v) {
    std::lock_guard lk(mu);
    std::map<std::string, std::string> out;
    for (auto it = data.lower_bound(begin); it != data.end(); ++it) {
      if (!end.empty() && it->first >= end) break;
      const auto* val = at(it->second, v);
      if (val && *val) out.emplace(it->first, **val);
    }
    return out;
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

class MemoryTxn final : public Txn {
 public:
  MemoryTxn(std::shared_ptr<Core> core, bool writable)
      : core_(std::move(core)), writable_(writable) {
    std::lock_guard lk(core_->mu);
    version_ = core_->version;
  }
  uint64_t read_version() const override { return version_; }

  std::optional<std::string> get(std::string_view key) override {
    live();
    if (const auto w = writes_.find(key); w != writes_.end()) return w->second;
    reads_.emplace_back(key);
    return core_->read(key, version_);
  }

  std::optional<std::string> snapshot_get(std::string_view key) override {
    live();
    if (const auto w = writes_.find(key); w != writes_.end()) return w->second;
    return core_->read(key, version_);
  }

  KeyValues range(std::string_view begin, std::string_view end, size_t limit) override {
    live();
    std::map<std::string, std::string> all = core_->scan(begin, end, version_);
    for (auto w = writes_.lower_bound(begin); w != writes_.end(); ++w) {
      if (!end.empty() && w->first >= end) break;
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
    // What the caller saw: the whole range, or up to just past the last key returned.
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
    for (const std::string& k : reads_)
      if (c.changed_after(k, version_)) return TxnStatus::Conflict;
    for (const auto& [b, e] : ranges_)
      if (c.range_changed_after(b, e, version_)) return TxnStatus::Conflict;
    apply(c);
    return TxnStatus::Committed;
  }

 private:
  void apply(Core& c) {
    if (writes_.empty()) return;
    const uint64_t v = ++c.version;
    for (auto& [k, val] : writes_) c.data[k].emplace_back(v, std::move(val));
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
  std::map<std::string, std::optional<std::string>, std::less<>> writes_;
  std::vector<std::string> reads_;
  std::vector<std::pair<std::string, std::string>> ranges_;
};

class MemoryTxnStore final : public TxnStore {
 public:
  std::unique_ptr<Txn> begin() override { return std::make_unique<MemoryTxn>(core_, true); }
  std::unique_ptr<ReadTxn> begin_read() override {
    return std::make_unique<MemoryTxn>(core_, false);
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
