// The serving engine's view of the paged latent KV cache: which physical page belongs to whom.
//
// Pages (kPageSize = 64 tokens, shared by all layers; see model/kv_cache.h) are reference
// counted. A sequence holds one reference to each page in its block table. A page that holds a
// full 64-token page of some prompt is also entered in the prefix cache under the key
// (key of the page before it, its 64 token ids), so a later prompt with the same first 64k
// tokens finds the same pages and skips their prefill. Keys chain through a per-entry id that is
// never reused, so an evicted page can never be mistaken for another page's parent.
//
// Page states:  free (in KVCache's free list) -> referenced (refs > 0) -> on release either
// free again (not cached) or cached-idle (refs = 0, in the LRU list, still findable). An
// allocation takes a free page first and otherwise evicts the least recently used cached-idle
// page. used() + free() == capacity at all times; used() == 0 when no sequence holds a page,
// which is what the leak checks look at.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "model/kv_cache.h"

namespace ff::engine {

class PageManager {
 public:
  explicit PageManager(KVCache& cache);

  int64_t capacity() const { return cache_.num_pages(); }
  // Pages some sequence references.
  int64_t used() const { return used_; }
  // Pages an allocation can get: free ones plus cached-idle ones (evictable).
  int64_t available() const { return cache_.free_pages() + int64_t(lru_.size()); }
  int64_t cached_idle() const { return int64_t(lru_.size()); }

  // Looks up the longest run of full pages of `tokens` in the prefix cache, at most `max_pages`
  // of them; takes a reference on each page found and appends them to seq.block_table (which
  // must be empty), setting seq.length to the tokens they cover. Returns the number of pages.
  int64_t match_prefix(std::span<const int32_t> tokens, int64_t max_pages, KVSequence& seq);

  // Grows seq.block_table to cover `num_tokens` tokens. All or nothing: returns false (and
  // changes nothing) when not enough pages are available.
  bool grow(KVSequence& seq, int64_t num_tokens);

  // Enters the full pages of `tokens` that seq holds (tokens[0, 64 * n) with
  // 64 * n <= seq.length) in the prefix cache. A page whose content is cached already (by this
  // or another sequence with the same prefix) is left as it is.
  void cache_full_pages(std::span<const int32_t> tokens, const KVSequence& seq);

  // Drops the sequence's references and resets it. Never throws: it runs on every failure path.
  // A page the sequence does not hold a reference to (a bug) is skipped and counted in
  // invariant_violations() instead.
  void release(KVSequence& seq) noexcept;
  int64_t invariant_violations() const { return invariant_violations_; }

  // Prefix-cache lookups: tokens asked for and tokens found, over the engine's lifetime.
  int64_t queried_tokens() const { return queried_tokens_; }
  int64_t hit_tokens() const { return hit_tokens_; }

 private:
  struct Entry {
    uint64_t id;         // unique, never reused
    uint64_t parent_id;  // 0 for a sequence's first page
    std::vector<int32_t> tokens;
    int32_t page;
  };
  struct PageInfo {
    int32_t refs = 0;
    uint64_t entry_id = 0;  // 0: not in the prefix cache
    std::list<int32_t>::iterator lru_pos;
    bool in_lru = false;
  };
  static uint64_t key_hash(uint64_t parent_id, std::span<const int32_t> tokens);
  const Entry* find(uint64_t parent_id, std::span<const int32_t> tokens) const;
  int32_t allocate();
  void add_ref(int32_t page);
  bool drop_ref(int32_t page) noexcept;  // false: the page had no reference to drop
  void uncache(int32_t page);

  KVCache& cache_;
  std::vector<PageInfo> pages_;
  std::list<int32_t> lru_;  // cached-idle pages, least recently used first
  std::unordered_multimap<uint64_t, Entry> entries_;   // by key_hash
  std::unordered_map<uint64_t, uint64_t> entry_hash_;  // entry id -> its key_hash
  uint64_t next_entry_id_ = 1;
  int64_t used_ = 0;
  int64_t queried_tokens_ = 0;
  int64_t hit_tokens_ = 0;
  int64_t invariant_violations_ = 0;
};

}  // namespace ff::engine
