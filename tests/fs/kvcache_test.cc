// The KV-cache store over a real cluster: blocks read back byte-exact, keys immutable,
// namespaces apart, LRU eviction at the capacity (the evicted blocks' files gone), batch gets
// with missing keys, a second store on the same root seeing the first one's blocks, damaged
// blocks detected by their checksum and dropped, a store reopened with what the root holds, and
// bad names refused.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <random>

#include "local_cluster.h"

namespace ff::fs {
namespace {

using testing::LocalCluster;

std::string block(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng());
  return s;
}

class FsKvCache : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.start();
    if (HasFatalFailure()) return;
    cluster_.start_meta();
    FsClientOptions o;
    o.mgmtd = cluster_.mgmtd();
    o.deadline_ms = 20000;
    fs_ = std::make_unique<FsClient>(o);
  }
  LocalCluster cluster_;
  std::unique_ptr<FsClient> fs_;
};

TEST_F(FsKvCache, PutGetImmutableNamespacesAndBadNames) {
  KvCache kv(*fs_, {.root = "/cache/kv", .capacity = 0, .parallel = 4});
  const std::string a = block(100000, 1), b = block(70000, 2);
  const std::string ka = KvCache::content_key(a);
  EXPECT_EQ(ka.size(), 32u);
  EXPECT_EQ(ka, KvCache::content_key(a));
  EXPECT_NE(ka, KvCache::content_key(b));
  EXPECT_NE(KvCache::content_key(""), KvCache::content_key(std::string(1, '\0')));
  ASSERT_EQ(kv.put("model-1", ka, a), 0);
  std::string got;
  ASSERT_EQ(kv.get("model-1", ka, &got), 0);
  EXPECT_EQ(got, a);
  // Immutable: a second put of the key keeps the first block.
  ASSERT_EQ(kv.put("model-1", ka, b), 0);
  ASSERT_EQ(kv.get("model-1", ka, &got), 0);
  EXPECT_EQ(got, a);
  // Namespaces are apart.
  EXPECT_EQ(kv.get("model-2", ka, &got), ENOENT);
  ASSERT_EQ(kv.put("model-2", ka, b), 0);
  ASSERT_EQ(kv.get("model-2", ka, &got), 0);
  EXPECT_EQ(got, b);
  ASSERT_EQ(kv.put("model-2", "empty", ""), 0);
  ASSERT_EQ(kv.get("model-2", "empty", &got), 0);
  EXPECT_EQ(got, "");
  EXPECT_EQ(kv.get("model-1", "missing", &got), ENOENT);
  EXPECT_TRUE(kv.contains("model-1", ka));
  EXPECT_FALSE(kv.contains("model-1", "missing"));
  EXPECT_EQ(kv.remove("model-1", ka), 0);
  EXPECT_EQ(kv.get("model-1", ka, &got), ENOENT);
  for (const std::string& bad :
       std::vector<std::string>{"", ".hidden", "a/b", std::string(129, 'k'), "sp ace"}) {
    EXPECT_EQ(kv.put("ns", bad, "x"), EINVAL) << bad;
    EXPECT_EQ(kv.get("ns", bad, &got), EINVAL) << bad;
  }
  EXPECT_EQ(kv.put(std::string(65, 'n'), "k", "x"), EINVAL);
  // The blocks are files of the file system.
  EXPECT_TRUE(fs_->resolve("/cache/kv/model-2/" + ka).ok());
}

TEST_F(FsKvCache, EvictsTheLeastRecentlyUsedAtCapacity) {
  const size_t n = 10000, stored = n + 16;  // + the block header
  KvCache kv(*fs_, {.root = "/kv", .capacity = 5 * stored, .parallel = 4});
  EXPECT_EQ(kv.put("ns", "big", block(5 * stored, 9)), EFBIG);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(kv.put("ns", "b" + std::to_string(i), block(n, i)), 0);
  std::string got;
  ASSERT_EQ(kv.get("ns", "b0", &got), 0);  // b0 is now the most recent; b1 the least
  ASSERT_EQ(kv.put("ns", "b5", block(n, 5)), 0);
  EXPECT_EQ(kv.stats().evictions, 1u);
  EXPECT_EQ(kv.stats().bytes, 5 * stored);
  EXPECT_EQ(kv.get("ns", "b1", &got), ENOENT);
  EXPECT_FALSE(fs_->resolve("/kv/ns/b1").ok());  // its file went
  for (const int i : {0, 2, 3, 4, 5}) {
    ASSERT_EQ(kv.get("ns", "b" + std::to_string(i), &got), 0) << i;
    EXPECT_EQ(got, block(n, uint32_t(i)));
  }
  // A batch with missing keys.
  std::vector<std::string> keys = {"b2", "b1", "b5", "none", "b0"};
  std::vector<std::string> out;
  const std::vector<int> codes = kv.batch_get("ns", keys, &out);
  EXPECT_EQ(codes, (std::vector<int>{0, ENOENT, 0, ENOENT, 0}));
  EXPECT_EQ(out[0], block(n, 2));
  EXPECT_EQ(out[2], block(n, 5));
  EXPECT_EQ(out[4], block(n, 0));
}

TEST_F(FsKvCache, SharedRootDamagedBlocksAndReopen) {
  const std::string a = block(200000, 3);  // 4 chunks of 64 KiB
  {
    KvCache one(*fs_, {.root = "/kv"});
    KvCache two(*fs_, {.root = "/kv"});
    ASSERT_EQ(one.put("ns", "a", a), 0);
    std::string got;
    ASSERT_EQ(two.get("ns", "a", &got), 0);  // put by the other store
    EXPECT_EQ(got, a);
    ASSERT_EQ(one.put("ns", "c", "ccc"), 0);
    // Damage a block behind the store's back: its checksum no longer matches.
    uint64_t fh = 0;
    ASSERT_EQ(fs_->open("/kv/ns/a", O_WRONLY, 0, &fh), 0);
    ASSERT_EQ(fs_->pwrite(fh, "X", 1, 100000), 1);
    ASSERT_EQ(fs_->close(fh), 0);
    EXPECT_EQ(two.get("ns", "a", &got), ENOENT);
    EXPECT_EQ(two.stats().corrupt, 1u);
    EXPECT_FALSE(fs_->resolve("/kv/ns/a").ok());  // dropped
    // Removed by one store, gone for the other (once the chunks are collected).
    ASSERT_EQ(one.remove("ns", "c"), 0);
    int e = 0;
    for (int i = 0; i < 100 && (e = two.get("ns", "c", &got)) == 0; ++i) {
      EXPECT_EQ(got, "ccc");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(e, ENOENT);
    ASSERT_EQ(one.put("ns", "d", a), 0);
  }
  // A store opened later lists what the root holds.
  KvCache again(*fs_, {.root = "/kv"});
  EXPECT_EQ(again.stats().blocks, 1u);
  std::string got;
  ASSERT_EQ(again.get("ns", "d", &got), 0);
  EXPECT_EQ(got, a);
}

}  // namespace
}  // namespace ff::fs
