// The byte-level BPE model: merges the symbols of one pre-tokenized word by merge rank, and the
// word cache in front of it.
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "text/tokenizer_impl.h"
#include "text/unicode.h"

namespace ff::tok {

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    if (auto it = vocab.find(word); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  std::vector<Symbol> syms;
  auto add = [&](int32_t id) {
    const int32_t index = int32_t(syms.size());
    if (index > 0) syms.back().next = index;
    syms.push_back({id, index - 1, -1, true});
  };
  std::optional<int32_t> pending_unk;
  std::string s;
  for (size_t i = 0; i < word.size();) {
    const size_t begin = i;
    utf8_next(word, i);
    s.assign(begin > 0 ? prefix : std::string());
    s.append(word.substr(begin, i - begin));
    if (i == word.size()) s += suffix;
    if (auto it = vocab.find(s); it != vocab.end()) {
      if (pending_unk) add(*std::exchange(pending_unk, std::nullopt));
      add(it->second);
      continue;
    }
    if (byte_fallback) {
      std::vector<int32_t> bytes;
      for (char c : s) {
        auto it = vocab.find(fmt::format("<0x{:02X}>", uint8_t(c)));
        if (it == vocab.end()) break;
        bytes.push_back(it->second);
      }
      if (bytes.size() == s.size()) {
        for (int32_t id : bytes) add(id);
        continue;
      }
    }
    if (unk_id) {
      if (pending_unk && !fuse_unk) add(*pending_unk);
      pending_unk = *unk_id;
    }
  }
  if (pending_unk) add(*pending_unk);

  struct Candidate {
    int32_t rank, pos, id;
    bool operator<(const Candidate& o) const {  // std::priority_queue pops the largest
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (const Merge* m = find_merge(syms[i].id, syms[i + 1].id)) {
      queue.push({m->rank, int32_t(i), m->id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& cur = syms[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    Symbol& right = syms[cur.next];
    const Merge* m = find_merge(cur.id, right.id);
    if (!m || m->id != top.id) continue;  // an expired candidate
    cur.id = top.id;
    cur.next = right.next;
    right.alive = false;
    if (cur.next >= 0) syms[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* l = find_merge(syms[cur.prev].id, cur.id)) {
        queue.push({l->rank, cur.prev, l->id});
      }
    }
    if (cur.next >= 0) {
      if (const Merge* r = find_merge(cur.id, syms[cur.next].id)) {
        queue.push({r->rank, top.pos, r->id});
      }
    }
  }
  for (const Symbol& sym : syms) {
    if (sym.alive) out.push_back(sym.id);
  }
}

}  // namespace ff::tok

namespace ff {

void Tokenizer::Impl::encode_word(const std::string& word, std::vector<int32_t>& ids) const {
  if (word.size() < kCacheMaxWord) {
    std::lock_guard lock(cache_mu);
    if (auto it = cache.find(word); it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids.size();
  bpe.tokenize(word, ids);
  if (word.size() < kCacheMaxWord) {
    std::lock_guard lock(cache_mu);
    if (cache.size() >= kCacheEntries) cache.clear();
    cache.emplace(word, std::vector<int32_t>(ids.begin() + first, ids.end()));
  }
}

}  // namespace ff
