// Private to src/fs: what every transactional engine shares -- the buffered writes a
// transaction's own reads see, the merge of them into range reads (and the range a commit must
// check), the end-of-transaction and read-only checks, and the fault-injection state. An engine
// supplies reads of the stored data at its snapshot and the commit itself.
#pragma once
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/core.h"
#include "fs/txn.h"

namespace ff::fs {

// The next commits' injected answer (TxnStore::inject), shared by a store's transactions.
class Injection {
 public:
  void set(TxnStatus what, int count, bool applied) {
    std::lock_guard lk(mu_);
    what_ = what;
    count_ = count;
    applied_ = applied;
  }
  // For one commit: nullopt (no injection), or the answer and whether the commit still applies.
  std::optional<std::pair<TxnStatus, bool>> take() {
    std::lock_guard lk(mu_);
    if (count_ <= 0) return std::nullopt;
    --count_;
    return std::pair(what_, what_ == TxnStatus::Unknown && applied_);
  }

 private:
  std::mutex mu_;
  TxnStatus what_ = TxnStatus::Committed;
  int count_ = 0;
  bool applied_ = true;
};

class BufferedTxn : public Txn {
 public:
  BufferedTxn(bool writable, Injection& injection) : writable_(writable), injection_(injection) {}

  std::optional<std::string> get(std::string_view key) final {
    live();
    if (const auto w = writes_.find(key); w != writes_.end()) return w->second;
    return stored(key, true);
  }
  std::optional<std::string> snapshot_get(std::string_view key) final {
    live();
    if (const auto w = writes_.find(key); w != writes_.end()) return w->second;
    return stored(key, false);
  }

  KeyValues range(std::string_view begin, std::string_view end, size_t limit) final {
    live();
    // Enough stored pairs that this transaction's clears cannot leave fewer than `limit`.
    size_t want = limit;
    for (auto w = writes_.lower_bound(begin); w != writes_.end() && in(w->first, end); ++w)
      if (want != SIZE_MAX) ++want;
    std::map<std::string, std::string> all = stored_range(begin, end, want);
    const bool cut = want != SIZE_MAX && all.size() == want;
    const std::string last = cut ? all.rbegin()->first : std::string();
    for (auto w = writes_.lower_bound(begin); w != writes_.end() && in(w->first, end); ++w) {
      if (cut && w->first > last) break;  // past what was read from the store
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
    // What the caller saw, for the commit to check: the whole range, or up to just past the
    // last key returned.
    if (out.size() < limit || out.empty())
      ranges_.emplace_back(std::string(begin), std::string(end));
    else
      ranges_.emplace_back(std::string(begin), out.back().first + '\0');
    return out;
  }

  void set(std::string_view key, std::string_view value) final {
    writable();
    writes_[std::string(key)] = std::string(value);
  }
  void clear(std::string_view key) final {
    writable();
    writes_[std::string(key)] = std::nullopt;
  }

  TxnStatus commit() final {
    writable();
    done_ = true;
    bool unknown = false;
    if (const auto inj = injection_.take()) {
      if (!inj->second) return inj->first;  // nothing applied
      unknown = true;                       // applied, answered as unknown
    }
    const TxnStatus s = commit_writes(!unknown);
    return unknown ? TxnStatus::Unknown : s;
  }

 protected:
  // The stored value at the snapshot; `track`: the commit must check it.
  virtual std::optional<std::string> stored(std::string_view key, bool track) = 0;
  // Up to `want` stored pairs of [begin, end) at the snapshot, ascending (SIZE_MAX: all).
  virtual std::map<std::string, std::string> stored_range(std::string_view begin,
                                                          std::string_view end, size_t want) = 0;
  // Checks the reads (when `check`) and applies the writes at once.
  virtual TxnStatus commit_writes(bool check) = 0;

  static bool in(const std::string& key, std::string_view end) { return end.empty() || key < end; }

  std::map<std::string, std::optional<std::string>, std::less<>> writes_;
  std::vector<std::pair<std::string, std::string>> ranges_;  // ranges read ("" end: no bound)

 private:
  void live() const { FF_CHECK(!done_, "fs txn: used after commit"); }
  void writable() const {
    live();
    FF_CHECK(writable_, "fs txn: a read-only transaction cannot write or commit");
  }

  bool writable_;
  bool done_ = false;
  Injection& injection_;
};

}  // namespace ff::fs
