// Chunk ids order like (inode, index); the sync diff, rule by rule.
#include <gtest/gtest.h>

#include "fs/fs.h"

namespace ff::fs {
namespace {

TEST(ChunkId, BigEndianOrderAndRoundTrip) {
  const ChunkId a = ChunkId::of(1, 255), b = ChunkId::of(1, 256), c = ChunkId::of(2, 0);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(b.inode(), 1u);
  EXPECT_EQ(b.index(), 256u);
  EXPECT_EQ(c.hex(), "00000000000000020000000000000000");
}

ChunkMeta meta(uint64_t index, uint32_t chain_version, uint64_t committed, uint64_t update) {
  ChunkMeta m;
  m.id = ChunkId::of(7, index);
  m.chain_version = chain_version;
  m.committed = committed;
  m.update = update;
  return m;
}

TEST(SyncPlan, EachRule) {
  const std::vector<ChunkMeta> local = {
      meta(0, 3, 5, 5),  // only here: send
      meta(2, 3, 4, 4),  // identical: skip
      meta(3, 4, 4, 4),  // newer chain version here: send
      meta(4, 3, 6, 6),  // same chain version, committed here != stored there: send
      meta(5, 3, 6, 7),  // differs, but a write is in flight here: skip (it replaces the chunk)
      meta(6, 3, 6, 6),  // there: committed 5, pending 6 -> stored 6 == committed here: skip
  };
  const std::vector<ChunkMeta> remote = {
      meta(1, 3, 2, 2),  // only there: remove
      meta(2, 3, 4, 4), meta(3, 3, 4, 4), meta(4, 3, 5, 5), meta(5, 3, 5, 5), meta(6, 3, 5, 6),
  };
  const std::vector<SyncStep> want = {
      {ChunkId::of(7, 0), SyncAction::Send},
      {ChunkId::of(7, 1), SyncAction::Remove},
      {ChunkId::of(7, 3), SyncAction::Send},
      {ChunkId::of(7, 4), SyncAction::Send},
  };
  EXPECT_EQ(sync_plan(local, remote), want);
  EXPECT_TRUE(sync_plan(local, local).empty());
  EXPECT_EQ(sync_plan({}, remote).size(), remote.size());
}

}  // namespace
}  // namespace ff::fs
