// PageManager: reference counts, prefix-cache lookups, LRU eviction, all-or-nothing growth.
#include "engine/page_manager.h"

#include <gtest/gtest.h>

#include <numeric>

namespace ff::engine {
namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.num_hidden_layers = 1;
  c.kv_lora_rank = 4;
  c.qk_rope_head_dim = 4;
  return c;
}

std::vector<int32_t> iota_tokens(int n, int start) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), start);
  return t;
}

TEST(PageManager, GrowAndRelease) {
  KVCache cache(small_config(), 4, DType::F32);
  PageManager pm(cache);
  KVSequence a, b;
  EXPECT_TRUE(pm.grow(a, 130));  // 3 pages
  EXPECT_EQ(a.block_table.size(), 3u);
  EXPECT_EQ(pm.used(), 3);
  EXPECT_FALSE(pm.grow(b, 129));  // needs 3, 1 left: nothing taken
  EXPECT_TRUE(b.block_table.empty());
  EXPECT_EQ(pm.available(), 1);
  pm.release(a);
  EXPECT_EQ(pm.used(), 0);
  EXPECT_EQ(pm.available(), 4);
  EXPECT_EQ(cache.free_pages(), 4);
}

TEST(PageManager, PrefixSharingAndEviction) {
  KVCache cache(small_config(), 4, DType::F32);
  PageManager pm(cache);
  const auto prompt = iota_tokens(150, 10);  // 2 full pages + 22 tokens
  KVSequence a;
  EXPECT_EQ(pm.match_prefix(prompt, 2, a), 0);
  ASSERT_TRUE(pm.grow(a, 150));
  a.length = 150;
  pm.cache_full_pages(prompt, a);
  // A second sequence with the same prompt shares the two full pages.
  KVSequence b;
  EXPECT_EQ(pm.match_prefix(prompt, 2, b), 2);
  EXPECT_EQ(b.length, 128);
  EXPECT_EQ(b.block_table[0], a.block_table[0]);
  EXPECT_EQ(b.block_table[1], a.block_table[1]);
  EXPECT_EQ(pm.used(), 3);
  pm.release(a);
  EXPECT_EQ(pm.used(), 2);  // still held by b
  pm.release(b);
  EXPECT_EQ(pm.used(), 0);
  EXPECT_EQ(pm.cached_idle(), 2);
  EXPECT_EQ(pm.available(), 4);
  // A different second page: only the first matches.
  auto other = prompt;
  other[100] = 1;
  KVSequence c;
  EXPECT_EQ(pm.match_prefix(other, 2, c), 1);
  pm.release(c);
  // Filling the cache evicts cached-idle pages, least recently used first.
  KVSequence d;
  ASSERT_TRUE(pm.grow(d, 4 * 64));
  EXPECT_EQ(pm.cached_idle(), 0);
  pm.release(d);
  KVSequence e;
  EXPECT_EQ(pm.match_prefix(prompt, 2, e), 0);
  EXPECT_EQ(pm.hit_tokens(), 128 + 64);
  EXPECT_EQ(cache.free_pages(), 4);
}

TEST(PageManager, EvictedParentNeverAliases) {
  KVCache cache(small_config(), 3, DType::F32);
  PageManager pm(cache);
  const auto p1 = iota_tokens(128, 0);
  KVSequence a;
  ASSERT_TRUE(pm.grow(a, 128));
  a.length = 128;
  pm.cache_full_pages(p1, a);
  pm.release(a);
  // Evict only the LRU page: the first page of p1 (released first in table order).
  KVSequence b;
  ASSERT_TRUE(pm.grow(b, 64 * 2));
  pm.release(b);
  KVSequence c;
  EXPECT_EQ(pm.match_prefix(p1, 2, c), 0);
  pm.release(c);
  EXPECT_EQ(pm.used(), 0);
}

}  // namespace
}  // namespace ff::engine
