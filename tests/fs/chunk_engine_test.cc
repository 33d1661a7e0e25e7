// ChunkEngine on a temporary directory: copy-on-write versions, commit, persistence across a
// reopen, bad input, a full target, a flipped byte caught by the checksum and repaired.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fs/crc32c.h"
#include "fs/fs.h"

namespace ff::fs {
namespace {

class ChunkEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("ff_chunks_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
             std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string read(ChunkEngine& e, const ChunkId& id, bool pending = false) {
    std::string out;
    const ChunkError err = e.read(id, 0, 1u << 30, &out, pending);
    return err == ChunkError::None ? out : std::string("<") + chunk_error_name(err) + ">";
  }
  std::string dir_;
};

constexpr uint32_t kChunk = 1 << 20;

TEST_F(ChunkEngineTest, CopyOnWriteVersionsAndCommit) {
  ChunkEngine e(dir_);
  const ChunkId id = ChunkId::of(5, 0);
  EXPECT_EQ(read(e, id), "<chunk not found>");
  ASSERT_EQ(e.write(id, 0, "hello world", kChunk, 1, 1), ChunkError::None);
  EXPECT_EQ(read(e, id), "<chunk not found>") << "nothing committed yet";
  EXPECT_EQ(read(e, id, true), "hello world");
  ASSERT_EQ(e.commit(id, 1), ChunkError::None);
  EXPECT_EQ(read(e, id), "hello world");
  // A partial overwrite past the end: pending until committed, the old bytes readable meanwhile.
  ASSERT_EQ(e.write(id, 6, "there, friend", kChunk, 1, 2), ChunkError::None);
  EXPECT_EQ(read(e, id), "hello world");
  EXPECT_EQ(read(e, id, true), "hello there, friend");
  EXPECT_EQ(e.meta(id)->committed, 1u);
  EXPECT_EQ(e.meta(id)->update, 2u);
  ASSERT_EQ(e.commit(id, 2), ChunkError::None);
  EXPECT_EQ(e.commit(id, 2), ChunkError::None) << "a retried commit is a no-op";
  EXPECT_EQ(read(e, id), "hello there, friend");
  std::string part;
  ASSERT_EQ(e.read(id, 6, 5, &part), ChunkError::None);
  EXPECT_EQ(part, "there");
  EXPECT_EQ(e.meta(id)->crc32c, crc32c("hello there, friend", 19));
  // A write at an offset past the end zero-fills the gap.
  ASSERT_EQ(e.write(id, 24, "x", kChunk, 1, 3), ChunkError::None);
  ASSERT_EQ(e.commit(id, 3), ChunkError::None);
  EXPECT_EQ(read(e, id), std::string("hello there, friend") + std::string(5, '\0') + "x");
}

TEST_F(ChunkEngineTest, BadInputChangesNothing) {
  ChunkEngine e(dir_);
  const ChunkId id = ChunkId::of(5, 1);
  ASSERT_EQ(e.write(id, 0, "abc", kChunk, 1, 1), ChunkError::None);
  ASSERT_EQ(e.commit(id, 1), ChunkError::None);
  EXPECT_EQ(e.write(id, 0, "zzz", kChunk, 1, 3), ChunkError::BadVersion);
  EXPECT_EQ(e.write(id, kChunk - 1, "zz", kChunk, 1, 2), ChunkError::BadRange);
  EXPECT_EQ(e.write(id, 0, "zzz", kChunk, 1, 2, crc32c("zzy", 3)), ChunkError::ChecksumMismatch);
  EXPECT_EQ(e.commit(id, 2), ChunkError::NotCommitted);
  std::string out;
  EXPECT_EQ(e.read(id, 4, 1, &out), ChunkError::BadRange);
  EXPECT_EQ(read(e, id), "abc");
  EXPECT_EQ(e.meta(id)->update, 1u);
}

TEST_F(ChunkEngineTest, SurvivesReopenWithPendingVersions) {
  const ChunkId a = ChunkId::of(9, 0), b = ChunkId::of(9, 1);
  {
    ChunkEngine e(dir_);
    ASSERT_EQ(e.write(a, 0, std::string(100000, 'a'), kChunk, 2, 1), ChunkError::None);
    ASSERT_EQ(e.commit(a, 1), ChunkError::None);
    ASSERT_EQ(e.write(b, 0, "bb", kChunk, 2, 1), ChunkError::None);
    ASSERT_EQ(e.commit(b, 1), ChunkError::None);
    ASSERT_EQ(e.write(b, 0, "BB", kChunk, 2, 2), ChunkError::None);  // "crash" before commit
  }
  ChunkEngine e(dir_);
  EXPECT_EQ(read(e, a), std::string(100000, 'a'));
  EXPECT_EQ(read(e, b), "bb");
  EXPECT_EQ(read(e, b, true), "BB");
  EXPECT_EQ(e.used_bytes(), uint64_t(128 << 10) + 2 * (64 << 10));
  const auto metas = e.all_metas();
  ASSERT_EQ(metas.size(), 2u);
  EXPECT_EQ(metas[0].id, a);
  EXPECT_EQ(metas[1].id, b);
  EXPECT_EQ(e.last_chunk(9)->id, b);
  EXPECT_FALSE(e.last_chunk(8));
  ASSERT_EQ(e.remove(b), ChunkError::None);
  ASSERT_EQ(e.remove(a), ChunkError::None);
  EXPECT_EQ(e.used_bytes(), 0u);
  EXPECT_TRUE(e.all_metas().empty());
}

TEST_F(ChunkEngineTest, FullTargetRefusesAndKeepsData) {
  ChunkEngine e(dir_, 128 << 10);  // two 64 KiB blocks
  const ChunkId id = ChunkId::of(1, 0);
  ASSERT_EQ(e.write(id, 0, "first", kChunk, 1, 1), ChunkError::None);
  ASSERT_EQ(e.commit(id, 1), ChunkError::None);
  ASSERT_EQ(e.write(ChunkId::of(1, 1), 0, "x", kChunk, 1, 1), ChunkError::None);
  EXPECT_EQ(e.write(id, 0, "second", kChunk, 1, 2), ChunkError::NoSpace);
  EXPECT_EQ(read(e, id), "first");
  EXPECT_EQ(e.write(ChunkId::of(1, 2), 0, std::string(70000, 'y'), kChunk, 1, 1),
            ChunkError::NoSpace);
}

TEST_F(ChunkEngineTest, BlocksMarkedUsedWithoutARecordAreFreedAtOpen) {
  // A batch stores a whole bitmap, so a crash can leave another update's reservation marked
  // used with no record pointing to it: opening the target frees such blocks.
  const ChunkId id = ChunkId::of(4, 0);
  {
    ChunkEngine e(dir_);
    ASSERT_EQ(e.write(id, 0, "kept", kChunk, 1, 1), ChunkError::None);
    ASSERT_EQ(e.commit(id, 1), ChunkError::None);
    EXPECT_EQ(e.used_bytes(), uint64_t(64 << 10));
  }
  {
    auto kv = open_rocksdb_kv(dir_ + "/meta");
    const auto bitmaps = kv->scan("B", prefix_end("B"));
    ASSERT_EQ(bitmaps.size(), 1u);
    std::string words = bitmaps[0].second;
    words[5] = char(words[5] | 0x20);  // block 45: reserved when the process died
    KvBatch b;
    b.put(bitmaps[0].first, words);
    kv->write(b);
  }
  ChunkEngine e(dir_);
  EXPECT_EQ(e.used_bytes(), uint64_t(64 << 10));
  EXPECT_EQ(read(e, id), "kept");
}

TEST_F(ChunkEngineTest, WithoutFsyncTheSameVersionsSurviveAReopen) {
  const ChunkId id = ChunkId::of(6, 0);
  {
    ChunkEngine e(dir_, 0, /*sync=*/false);
    ASSERT_EQ(e.write(id, 0, "fast", kChunk, 1, 1), ChunkError::None);
    ASSERT_EQ(e.commit(id, 1), ChunkError::None);
    ASSERT_EQ(e.write(id, 4, " path", kChunk, 1, 2), ChunkError::None);
  }
  ChunkEngine e(dir_, 0, false);
  EXPECT_EQ(read(e, id), "fast");
  EXPECT_EQ(read(e, id, true), "fast path");
  ASSERT_EQ(e.commit(id, 2), ChunkError::None);
  EXPECT_EQ(read(e, id), "fast path");
}

TEST_F(ChunkEngineTest, FlippedByteIsCaughtAndReplaced) {
  const ChunkId id = ChunkId::of(3, 0);
  {
    ChunkEngine e(dir_);
    ASSERT_EQ(e.write(id, 0, "precious bytes", kChunk, 1, 1), ChunkError::None);
    ASSERT_EQ(e.commit(id, 1), ChunkError::None);
  }
  // Flip one bit of the stored block.
  std::string file;
  for (const auto& f : std::filesystem::directory_iterator(dir_ + "/data")) file = f.path();
  {
    std::fstream s(file, std::ios::in | std::ios::out | std::ios::binary);
    s.seekg(3);
    char c = 0;
    s.read(&c, 1);
    c ^= 0x10;
    s.seekp(3);
    s.write(&c, 1);
  }
  ChunkEngine e(dir_);
  EXPECT_EQ(read(e, id), "<checksum mismatch>");
  EXPECT_EQ(e.write(id, 0, "x", kChunk, 1, 2), ChunkError::ChecksumMismatch)
      << "no update on top of bad data";
  ASSERT_EQ(e.replace(id, "precious bytes", 1, 1), ChunkError::None);  // from another replica
  EXPECT_EQ(read(e, id), "precious bytes");
}

}  // namespace
}  // namespace ff::fs
