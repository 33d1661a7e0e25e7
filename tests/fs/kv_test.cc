// The two KvEngine implementations behave alike (typed tests, as 3FS tests its KV backends), and
// RocksDB keeps what was written across a reopen.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "core/core.h"
#include "fs/fs.h"

namespace ff::fs {
namespace {

struct MemoryEngine {
  static std::unique_ptr<KvEngine> make(const std::string&) { return make_memory_kv(); }
};
struct RocksEngine {
  static std::unique_ptr<KvEngine> make(const std::string& dir) { return open_rocksdb_kv(dir); }
};

std::string temp_dir(const char* name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("ff_kv_" + std::string(name) + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

template <class E>
class Kv : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    kv_ = E::make(dir_);
  }
  void TearDown() override {
    kv_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  std::unique_ptr<KvEngine> kv_;
};
using Engines = ::testing::Types<MemoryEngine, RocksEngine>;
TYPED_TEST_SUITE(Kv, Engines);

TYPED_TEST(Kv, PutGetEraseInOneBatch) {
  KvEngine& kv = *this->kv_;
  EXPECT_FALSE(kv.get("a"));
  KvBatch b;
  b.put("a", "1");
  b.put("b", std::string("\0x", 2));
  b.put("a", "2");  // later op wins
  b.put("c", "3");
  b.erase("c");
  kv.write(b);
  EXPECT_EQ(kv.get("a"), "2");
  EXPECT_EQ(kv.get("b"), std::string("\0x", 2));
  EXPECT_FALSE(kv.get("c"));
}

TYPED_TEST(Kv, ScansInKeyOrderWithBoundsAndLimit) {
  KvEngine& kv = *this->kv_;
  KvBatch b;
  for (const char* k : {"NODE2", "NODE1", "CHIT1", "NODE10", "TGIF"}) b.put(k, k);
  b.put(std::string("NODE\xff", 5), "ff");
  kv.write(b);
  const auto nodes = kv.scan("NODE", prefix_end("NODE"));
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0].first, "NODE1");
  EXPECT_EQ(nodes[1].first, "NODE10");
  EXPECT_EQ(nodes[2].first, "NODE2");
  EXPECT_EQ(nodes[3].first, std::string("NODE\xff", 5));
  EXPECT_EQ(kv.scan("NODE", prefix_end("NODE"), 2).size(), 2u);
  EXPECT_EQ(kv.scan("", "").size(), 6u);
  EXPECT_EQ(prefix_end(std::string("a\xff\xff", 3)), "b");
  EXPECT_EQ(prefix_end(std::string("\xff", 1)), "");
}

TEST(KvRocks, SurvivesReopen) {
  const std::string dir = temp_dir("reopen");
  {
    auto kv = open_rocksdb_kv(dir);
    KvBatch b;
    b.put("CHIT1", "table v3");
    kv->write(b);
  }
  auto kv = open_rocksdb_kv(dir);
  EXPECT_EQ(kv->get("CHIT1"), "table v3");
  kv.reset();
  std::filesystem::remove_all(dir);
}

TEST(KvRocks, UnusableDirectoryIsAnError) {
  try {
    open_rocksdb_kv("/proc/ff_no_such_dir/db");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/ff_no_such_dir/db: cannot open the RocksDB store"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ff::fs
