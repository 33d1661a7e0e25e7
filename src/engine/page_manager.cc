#include "engine/page_manager.h"

#include <algorithm>

namespace ff::engine {

PageManager::PageManager(KVCache& cache) : cache_(cache), pages_(size_t(cache.num_pages())) {}

uint64_t PageManager::key_hash(uint64_t parent_id, std::span<const int32_t> tokens) {
  // FNV-1a over the parent id and the token ids; collisions are resolved by comparing them.
  uint64_t h = 1469598103934665603ull ^ parent_id;
  for (int32_t t : tokens) {
    h ^= uint32_t(t);
    h *= 1099511628211ull;
  }
  return h;
}

const PageManager::Entry* PageManager::find(uint64_t parent_id,
                                            std::span<const int32_t> tokens) const {
  auto [lo, hi] = entries_.equal_range(key_hash(parent_id, tokens));
  for (auto it = lo; it != hi; ++it) {
    const Entry& e = it->second;
    if (e.parent_id == parent_id &&
        std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end()))
      return &e;
  }
  return nullptr;
}

void PageManager::add_ref(int32_t page) {
  PageInfo& p = pages_[size_t(page)];
  if (p.refs++ == 0) {
    ++used_;
    if (p.in_lru) {
      lru_.erase(p.lru_pos);
      p.in_lru = false;
    }
  }
}

bool PageManager::drop_ref(int32_t page) noexcept {
  if (page < 0 || page >= int32_t(pages_.size()) || pages_[size_t(page)].refs <= 0) return false;
  PageInfo& p = pages_[size_t(page)];
  if (--p.refs > 0) return true;
  --used_;
  if (p.entry_id != 0) {
    lru_.push_back(page);
    p.lru_pos = std::prev(lru_.end());
    p.in_lru = true;
  } else {
    cache_.free_page(page);
  }
  return true;
}

void PageManager::uncache(int32_t page) {
  PageInfo& p = pages_[size_t(page)];
  if (p.entry_id == 0) return;
  const uint64_t h = entry_hash_.at(p.entry_id);
  auto [lo, hi] = entries_.equal_range(h);
  for (auto it = lo; it != hi; ++it) {
    if (it->second.id == p.entry_id) {
      entries_.erase(it);
      break;
    }
  }
  entry_hash_.erase(p.entry_id);
  p.entry_id = 0;
}

int32_t PageManager::allocate() {
  int32_t page = cache_.allocate_page();
  if (page < 0 && !lru_.empty()) {
    page = lru_.front();
    lru_.pop_front();
    pages_[size_t(page)].in_lru = false;
    uncache(page);
  }
  if (page >= 0) add_ref(page);
  return page;
}

int64_t PageManager::match_prefix(std::span<const int32_t> tokens, int64_t max_pages,
                                  KVSequence& seq) {
  FF_INVARIANT(seq.block_table.empty(), "page manager: prefix match into a non-empty sequence");
  const int64_t full = std::min<int64_t>(max_pages, int64_t(tokens.size()) / kPageSize);
  uint64_t parent = 0;
  int64_t n = 0;
  for (; n < full; ++n) {
    const Entry* e = find(parent, tokens.subspan(size_t(n * kPageSize), size_t(kPageSize)));
    if (e == nullptr) break;
    add_ref(e->page);
    seq.block_table.push_back(e->page);
    parent = e->id;
  }
  seq.length = n * kPageSize;
  queried_tokens_ += int64_t(tokens.size());
  hit_tokens_ += seq.length;
  return n;
}

bool PageManager::grow(KVSequence& seq, int64_t num_tokens) {
  const int64_t need = (num_tokens + kPageSize - 1) / kPageSize - int64_t(seq.block_table.size());
  if (need <= 0) return true;
  if (need > available()) return false;
  for (int64_t i = 0; i < need; ++i) seq.block_table.push_back(allocate());
  return true;
}

void PageManager::cache_full_pages(std::span<const int32_t> tokens, const KVSequence& seq) {
  const int64_t full = std::min<int64_t>({int64_t(tokens.size()) / kPageSize,
                                          seq.length / kPageSize, int64_t(seq.block_table.size())});
  uint64_t parent = 0;
  for (int64_t j = 0; j < full; ++j) {
    const auto page_tokens = tokens.subspan(size_t(j * kPageSize), size_t(kPageSize));
    const int32_t page = seq.block_table[size_t(j)];
    if (const Entry* e = find(parent, page_tokens)) {
      parent = e->id;
      continue;
    }
    PageInfo& p = pages_[size_t(page)];
    if (p.entry_id != 0) {
      // Cached under another prefix: cannot happen for pages a sequence filled itself, since a
      // page is filled by exactly one prefix. Stop the chain rather than alias it.
      return;
    }
    Entry e{next_entry_id_++, parent, std::vector<int32_t>(page_tokens.begin(), page_tokens.end()),
            page};
    const uint64_t h = key_hash(parent, page_tokens);
    entry_hash_[e.id] = h;
    p.entry_id = e.id;
    parent = e.id;
    entries_.emplace(h, std::move(e));
  }
}

void PageManager::release(KVSequence& seq) noexcept {
  for (int32_t p : seq.block_table)
    if (!drop_ref(p)) ++invariant_violations_;
  seq.block_table.clear();
  seq.length = 0;
}

}  // namespace ff::engine
