// The storage cluster as separate processes on localhost (mgmtd + 3 storage nodes x 2 targets,
// replication 3): reads and writes, concurrency, bad input. The fault tests are in
// cluster_fault_test.cc.
#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "fs/crc32c.h"
#include "local_cluster.h"

namespace ff::fs {
namespace {

using testing::LocalCluster;

std::string pattern(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// Reads the chunk from every serving replica of its chain and checks each gives `want`.
void expect_on_every_replica(StorageClient& c, uint32_t chain, const ChunkId& id,
                             const std::string& want) {
  const Routing r = c.routing();
  const auto serving = r.chains.at(chain).serving();
  ASSERT_EQ(serving.size(), 3u) << describe(r.chains.at(chain));
  for (const TargetRoute* t : serving) {
    const ReadResult got = c.read({chain, id, 0, UINT32_MAX, t->target_id});
    ASSERT_TRUE(got.status.ok()) << "target " << t->target_id << ": " << got.status.str();
    EXPECT_EQ(got.data.size(), want.size()) << "target " << t->target_id;
    EXPECT_TRUE(got.data == want) << "target " << t->target_id << " differs";
  }
}

TEST(FsCluster, WritesAndReadsChunksOfSeveralSizesOnEveryReplica) {
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const Routing r = c.routing();
  ASSERT_EQ(r.tables.at(1).chain_ids.size(), 2u);
  uint64_t inode = 10;
  for (const uint32_t chunk_size : {64u << 10, 1u << 20, 4u << 20}) {
    ++inode;
    const uint32_t chain = r.chain_for(1, inode, 0);
    const ChunkId id = ChunkId::of(inode, 0);
    std::string want = pattern(chunk_size, inode);
    WriteResult w = c.write(chain, id, 0, want, chunk_size);
    ASSERT_TRUE(w.status.ok()) << w.status.str();
    EXPECT_EQ(w.version, 1u);
    EXPECT_EQ(w.length, chunk_size);
    EXPECT_EQ(w.crc, crc32c(want.data(), want.size()));
    expect_on_every_replica(c, chain, id, want);
    // Partial overwrites: inside, at the end, and growing a short chunk.
    const std::string patch = pattern(1000, inode + 1);
    w = c.write(chain, id, 12345, patch, chunk_size);
    ASSERT_TRUE(w.status.ok()) << w.status.str();
    EXPECT_EQ(w.version, 2u);
    want.replace(12345, patch.size(), patch);
    w = c.write(chain, id, chunk_size - 10, patch.substr(0, 10), chunk_size);
    ASSERT_TRUE(w.status.ok()) << w.status.str();
    want.replace(chunk_size - 10, 10, patch.substr(0, 10));
    expect_on_every_replica(c, chain, id, want);
    // A read of a range, a read past the end, a batched read of pieces.
    ReadResult part = c.read({chain, id, 12000, 2000});
    ASSERT_TRUE(part.status.ok()) << part.status.str();
    EXPECT_TRUE(part.data == want.substr(12000, 2000));
    EXPECT_EQ(part.version, 3u);
    part = c.read({chain, id, chunk_size - 5, 100});
    ASSERT_TRUE(part.status.ok());
    EXPECT_EQ(part.data, want.substr(chunk_size - 5));
    std::vector<ReadRequest> batch;
    for (uint32_t k = 0; k < 8; ++k) batch.push_back({chain, id, k * (chunk_size / 8), 4096});
    const auto got = c.batch_read(batch);
    for (uint32_t k = 0; k < 8; ++k) {
      ASSERT_TRUE(got[k].status.ok()) << got[k].status.str();
      EXPECT_TRUE(got[k].data == want.substr(k * (chunk_size / 8), 4096));
    }
  }
  // A write that starts past the end of a short chunk fills the gap with zeros.
  const uint32_t chain = r.chain_for(1, 99, 3);
  const ChunkId id = ChunkId::of(99, 3);
  ASSERT_TRUE(c.write(chain, id, 0, "abc", 1 << 20).status.ok());
  ASSERT_TRUE(c.write(chain, id, 10, "xyz", 1 << 20).status.ok());
  expect_on_every_replica(c, chain, id, std::string("abc\0\0\0\0\0\0\0xyz", 13));
}

TEST(FsCluster, TruncateRemoveAndQueryLastChunk) {
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const Routing r = c.routing();
  const uint32_t chain = r.tables.at(1).chain_ids[0];
  const uint32_t size = 1 << 20;
  for (uint64_t i = 0; i < 4; ++i)
    ASSERT_TRUE(c.write(chain, ChunkId::of(7, i), 0, pattern(1000 + i, i), size).status.ok());
  ASSERT_TRUE(c.write(chain, ChunkId::of(8, 0), 0, "other file", size).status.ok());
  std::optional<ChunkMeta> last;
  ASSERT_TRUE(c.query_last_chunk(chain, 7, &last).ok());
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->id, ChunkId::of(7, 3));
  EXPECT_EQ(last->length, 1003u);
  ASSERT_TRUE(c.query_last_chunk(chain, 6, &last).ok());
  EXPECT_FALSE(last.has_value());

  WriteResult w = c.truncate(chain, ChunkId::of(7, 3), 10, size);
  ASSERT_TRUE(w.status.ok()) << w.status.str();
  EXPECT_EQ(w.length, 10u);
  expect_on_every_replica(c, chain, ChunkId::of(7, 3), pattern(1003, 3).substr(0, 10));
  ASSERT_TRUE(c.truncate(chain, ChunkId::of(7, 3), 20, size).status.ok());
  expect_on_every_replica(c, chain, ChunkId::of(7, 3),
                          pattern(1003, 3).substr(0, 10) + std::string(10, '\0'));

  ASSERT_TRUE(c.remove(chain, ChunkId::of(7, 3)).status.ok());
  ASSERT_TRUE(c.remove(chain, ChunkId::of(7, 3)).status.ok());  // removing twice is fine
  for (const TargetRoute* t : r.chains.at(chain).serving())
    EXPECT_EQ(c.read({chain, ChunkId::of(7, 3), 0, 10, t->target_id}).status.code,
              FsCode::NotFound);
  ASSERT_TRUE(c.query_last_chunk(chain, 7, &last).ok());
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->id, ChunkId::of(7, 2));
}

TEST(FsCluster, ConcurrentWritersToDifferentChunksAndToOneChunk) {
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const Routing r = c.routing();
  constexpr int kThreads = 4, kWrites = 12;
  constexpr uint32_t kSize = 64 << 10;
  // Different chunks: each thread its own.
  std::atomic<int> failures{0};
  {
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < kWrites; ++i) {
          const ChunkId id = ChunkId::of(100 + t, 0);
          if (!c.write(r.chain_for(1, 100 + t, 0), id, uint32_t(i) * 1000,
                       pattern(1000, uint64_t(t * 100 + i)), kSize)
                   .status.ok())
            ++failures;
        }
      });
    for (auto& t : ts) t.join();
  }
  EXPECT_EQ(failures, 0);
  for (int t = 0; t < kThreads; ++t) {
    std::string want;
    for (int i = 0; i < kWrites; ++i) want += pattern(1000, uint64_t(t * 100 + i));
    expect_on_every_replica(c, r.chain_for(1, 100 + t, 0), ChunkId::of(100 + t, 0), want);
  }
  // One chunk: the writes serialize at the head; the one numbered last is what every replica
  // holds, and the versions are exactly 1..n.
  const ChunkId id = ChunkId::of(200, 0);
  const uint32_t chain = r.chain_for(1, 200, 0);
  std::mutex mu;
  std::map<uint64_t, std::string> by_version;
  {
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < kWrites; ++i) {
          const std::string data = pattern(kSize, uint64_t(1000 + t * 100 + i));
          const WriteResult w = c.write(chain, id, 0, data, kSize);
          std::lock_guard lk(mu);
          if (!w.status.ok())
            ++failures;
          else
            by_version[w.version] = data;
        }
      });
    for (auto& t : ts) t.join();
  }
  EXPECT_EQ(failures, 0);
  ASSERT_EQ(by_version.size(), size_t(kThreads * kWrites));
  EXPECT_EQ(by_version.begin()->first, 1u);
  EXPECT_EQ(by_version.rbegin()->first, uint64_t(kThreads * kWrites));
  expect_on_every_replica(c, chain, id, by_version.rbegin()->second);
}

TEST(FsCluster, BadInputGetsClearErrorsAndChangesNothing) {
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const ChunkId id = ChunkId::of(5, 0);
  const uint32_t chain = c.routing().tables.at(1).chain_ids[0];
  ASSERT_TRUE(c.write(chain, id, 0, "original", 1 << 20).status.ok());
  const Routing r = c.refresh();  // the chain as it is now
  const ChainRoute& cr = r.chains.at(chain);
  // A stale chain version at the head.
  WriteResult w =
      c.send_update_to(cr.targets[0].target_id, chain, cr.version - 1, id, 0, "x", 1 << 20);
  EXPECT_EQ(w.status.code, FsCode::StaleChainVersion) << w.status.str();
  EXPECT_NE(w.status.message.find("version"), std::string::npos);
  // A write sent to a target that is not the head.
  w = c.send_update_to(cr.targets[1].target_id, chain, cr.version, id, 0, "x", 1 << 20);
  EXPECT_EQ(w.status.code, FsCode::NotHead) << w.status.str();
  // Offsets and lengths out of range, sizes out of range, an unknown chain.
  w = c.write(chain, id, (1 << 20) - 2, "abc", 1 << 20);
  EXPECT_EQ(w.status.code, FsCode::BadRequest) << w.status.str();
  EXPECT_NE(w.status.message.find("passes the chunk size"), std::string::npos);
  w = c.write(chain, id, 0, "abc", 128u << 20);
  EXPECT_EQ(w.status.code, FsCode::BadRequest) << w.status.str();
  w = c.truncate(chain, id, (1 << 20) + 1, 1 << 20);
  EXPECT_EQ(w.status.code, FsCode::BadRequest) << w.status.str();
  EXPECT_EQ(c.write(999, id, 0, "abc", 1 << 20).status.code, FsCode::UnknownChain);
  EXPECT_EQ(c.read({chain, id, 100, 1}).status.code, FsCode::BadRange);
  EXPECT_EQ(c.read({chain, ChunkId::of(5, 1), 0, 1}).status.code, FsCode::NotFound);
  expect_on_every_replica(c, chain, id, "original");
}

TEST(FsCluster, FullTargetAnswersNoSpaceAndKeepsItsData) {
  testing::ClusterOptions o;
  o.capacity_mb = 4;  // four 1 MiB blocks per target (two while an update is pending)
  LocalCluster cl(o);
  cl.start();
  StorageClient& c = cl.client();
  const uint32_t chain = c.routing().tables.at(1).chain_ids[0];
  const uint32_t size = 1 << 20;
  std::vector<std::string> kept;
  WriteResult w;
  uint64_t i = 0;
  for (; i < 8; ++i) {
    w = c.write(chain, ChunkId::of(1, i), 0, pattern(size, i), size);
    if (!w.status.ok()) break;
    kept.push_back(pattern(size, i));
  }
  EXPECT_EQ(w.status.code, FsCode::NoSpace) << w.status.str();
  EXPECT_GE(kept.size(), 3u);
  for (size_t k = 0; k < kept.size(); ++k)
    expect_on_every_replica(c, chain, ChunkId::of(1, k), kept[k]);
  EXPECT_EQ(c.read({chain, ChunkId::of(1, i), 0, 10}).status.code, FsCode::NotFound);
  // Space comes back when a chunk goes.
  ASSERT_TRUE(c.remove(chain, ChunkId::of(1, 0)).status.ok());
  EXPECT_TRUE(c.write(chain, ChunkId::of(1, i), 0, pattern(size, i), size).status.ok());
}

}  // namespace
}  // namespace ff::fs
