// The storage cluster under faults, as separate processes: a storage process killed (-9) in the
// middle of a stream of writes and restarted, a seeded chaos run of kills and restarts under
// concurrent writers and readers, a flipped byte in a chunk file, a restarted mgmtd.
#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "fs/crc32c.h"
#include "local_cluster.h"

namespace ff::fs {
namespace {

using testing::LocalCluster;
using Steady = std::chrono::steady_clock;

// 16-byte header (writer, seq) and a body made from it: any read can be checked on its own.
std::string tagged(uint64_t writer, uint64_t seq, size_t n) {
  std::string s(n, '\0');
  std::memcpy(s.data(), &writer, 8);
  std::memcpy(s.data() + 8, &seq, 8);
  std::mt19937_64 rng(writer * 1000003 + seq);
  for (size_t i = 16; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

bool self_consistent(const std::string& s) {
  if (s.size() < 16) return false;
  uint64_t w, q;
  std::memcpy(&w, s.data(), 8);
  std::memcpy(&q, s.data() + 8, 8);
  return s == tagged(w, q, s.size());
}

// Every replica of every chain holds the same chunks at the same versions and checksums.
void expect_replicas_identical(LocalCluster& cl) {
  const Routing r = cl.client().refresh();
  for (const auto& [id, c] : r.chains) {
    std::vector<ChunkMeta> first;
    for (size_t i = 0; i < c.targets.size(); ++i) {
      std::vector<ChunkMeta> metas;
      const FsStatus s = cl.client().list_chunks(c.targets[i].target_id, &metas);
      ASSERT_TRUE(s.ok()) << s.str();
      for (const ChunkMeta& m : metas) EXPECT_FALSE(m.pending()) << m.id.hex();
      if (i == 0) {
        first = metas;
        continue;
      }
      ASSERT_EQ(metas.size(), first.size()) << "target " << c.targets[i].target_id;
      SCOPED_TRACE(
          fmt::format("targets {} and {}", c.targets[0].target_id, c.targets[i].target_id));
      for (size_t k = 0; k < metas.size(); ++k) {
        EXPECT_EQ(metas[k].id, first[k].id);
        EXPECT_EQ(metas[k].committed, first[k].committed) << metas[k].id.hex();
        EXPECT_EQ(metas[k].length, first[k].length) << metas[k].id.hex();
        EXPECT_EQ(metas[k].crc32c, first[k].crc32c)
            << "target " << c.targets[i].target_id << " chunk " << metas[k].id.hex();
      }
    }
  }
}

TEST(FsClusterFaults, KilledStorageLosesNoAcknowledgedWriteAndResyncs) {
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const Routing r0 = c.routing();
  constexpr uint32_t kSize = 64 << 10;
  std::mutex mu;
  std::map<uint64_t, std::string> acked;  // inode -> its chunk's last acknowledged bytes
  std::atomic<bool> stop{false};
  std::atomic<int> acks{0}, failed{0};
  std::atomic<uint64_t> next_seq{1};
  std::vector<std::thread> writers;
  // Two writers, each rewriting its own 24 chunks, until stop_writers().
  const auto start_writers = [&] {
    stop = false;
    for (uint64_t w = 1; w <= 2; ++w)
      writers.emplace_back([&, w] {
        while (!stop) {
          const uint64_t seq = next_seq++;
          const uint64_t inode = w * 100 + seq % 24;
          const std::string data = tagged(w, seq, kSize / 2 + seq % kSize / 2);
          const WriteResult res =
              c.write(r0.chain_for(1, inode, 0), ChunkId::of(inode, 0), 0, data, kSize);
          if (!res.status.ok()) {
            ++failed;
            continue;
          }
          std::lock_guard lk(mu);
          std::string& cur = acked[inode];
          if (cur.size() > data.size())
            cur.replace(0, data.size(), data);
          else
            cur = data;
          ++acks;
        }
      });
  };
  const auto stop_writers = [&] {
    stop = true;
    for (auto& t : writers) t.join();
    writers.clear();
  };
  const auto wait_acks = [&](int n) {
    const auto until = Steady::now() + std::chrono::seconds(20);
    while (acks < n && Steady::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return acks >= n;
  };
  // Every acknowledged write reads back, from any replica or from each serving one.
  const auto check = [&](bool every_replica) {
    const Routing r = c.refresh();
    for (const auto& [inode, want] : acked) {
      const uint32_t chain = r.chain_for(1, inode, 0);
      std::vector<uint32_t> targets = {0};
      if (every_replica) {
        targets.clear();
        for (const TargetRoute* t : r.chains.at(chain).serving()) targets.push_back(t->target_id);
      }
      for (const uint32_t t : targets) {
        const ReadResult got = c.read({chain, ChunkId::of(inode, 0), 0, kSize, t});
        ASSERT_TRUE(got.status.ok()) << "target " << t << ": " << got.status.str();
        EXPECT_TRUE(got.data == want)
            << "inode " << inode << " target " << got.target_id << " v" << got.version << "\n"
            << cl.routing_text();
      }
    }
  };
  start_writers();
  ASSERT_TRUE(wait_acks(40));
  cl.kill_storage(2);  // -9, in the middle of the stream
  // The chains go on with two replicas.
  ASSERT_TRUE(cl.wait_serving_count(2, 10000)) << cl.routing_text();
  EXPECT_TRUE(wait_acks(acks + 60)) << "writes stalled with a node down";
  stop_writers();
  EXPECT_EQ(failed, 0);
  check(false);
  // Back: it re-syncs while the writes go on, then serves.
  start_writers();
  cl.start_storage(2);
  EXPECT_TRUE(wait_all_serving(c, 30000)) << cl.routing_text();
  EXPECT_TRUE(wait_acks(acks + 20));
  stop_writers();
  EXPECT_EQ(failed, 0);
  check(true);
  expect_replicas_identical(cl);
}

TEST(FsClusterFaults, ChaosOfKillsAndRestartsUnderWritersAndReaders) {
  const char* env_seed = std::getenv("FF_FS_CHAOS_SEED");
  const uint64_t seed = env_seed ? std::strtoull(env_seed, nullptr, 10)
                                 : uint64_t(Steady::now().time_since_epoch().count()) % 1000000;
  const char* env_s = std::getenv("FF_FS_CHAOS_S");
  const int seconds = env_s ? std::atoi(env_s) : 15;
  std::printf("chaos: seed %llu (FF_FS_CHAOS_SEED), %d s (FF_FS_CHAOS_S)\n",
              static_cast<unsigned long long>(seed), seconds);
  std::fflush(stdout);
  SCOPED_TRACE("chaos seed " + std::to_string(seed));
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const Routing r0 = c.routing();
  constexpr int kChunks = 12, kClients = 3;
  constexpr uint32_t kSize = 64 << 10, kLen = 16 << 10;
  struct Chunk {
    std::mutex mu;
    uint64_t acked = 0;                    // highest acknowledged version
    std::map<uint64_t, std::string> data;  // acknowledged version -> its bytes
  };
  std::vector<Chunk> chunks(kChunks);
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0}, reads{0}, write_errors{0};
  std::vector<std::string> problems;
  std::mutex problems_mu;
  const auto problem = [&](std::string s) {
    std::lock_guard lk(problems_mu);
    if (problems.size() < 20) problems.push_back(std::move(s));
  };
  std::vector<std::thread> clients;
  for (int w = 0; w < kClients; ++w)
    clients.emplace_back([&, w] {
      std::mt19937_64 rng(seed * 31 + uint64_t(w));
      for (uint64_t seq = 1; !stop; ++seq) {
        const int k = int(rng() % kChunks);
        const uint64_t inode = 5000 + uint64_t(k);
        const uint32_t chain = r0.chain_for(1, inode, 0);
        Chunk& ch = chunks[size_t(k)];
        if (rng() % 10 < 6) {
          const std::string data = tagged(uint64_t(w + 1), seq, kLen);
          const WriteResult res = c.write(chain, ChunkId::of(inode, 0), 0, data, kSize);
          if (!res.status.ok()) {
            ++write_errors;
            continue;
          }
          std::lock_guard lk(ch.mu);
          ch.acked = std::max(ch.acked, res.version);
          ch.data[res.version] = data;
          ++writes;
        } else {
          uint64_t floor;
          std::string floor_data;  // the bytes acknowledged as version `floor`
          {
            std::lock_guard lk(ch.mu);
            floor = ch.acked;
            if (floor) floor_data = ch.data[floor];
          }
          const ReadResult got = c.read({chain, ChunkId::of(inode, 0), 0, kLen});
          if (got.status.code == FsCode::NotFound && floor == 0) continue;
          if (!got.status.ok()) {
            problem(fmt::format("read of chunk {} failed: {}", k, got.status.str()));
            continue;
          }
          ++reads;
          if (got.version < floor)
            problem(fmt::format("chunk {}: read v{} after v{} was acknowledged (target {})", k,
                                got.version, floor, got.target_id));
          if (!self_consistent(got.data))
            problem(fmt::format("chunk {}: read v{} is not one write's bytes", k, got.version));
          // An acknowledged version is never numbered again (unacknowledged ones may be).
          if (got.version == floor && got.data != floor_data)
            problem(fmt::format("chunk {}: v{} differs from the write acknowledged as v{}", k,
                                got.version, got.version));
        }
      }
    });
  std::mt19937_64 rng(seed);
  const auto until = Steady::now() + std::chrono::seconds(seconds);
  int kills = 0;
  while (Steady::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 900));
    const uint32_t node = uint32_t(1 + rng() % 3);
    cl.kill_storage(node);
    ++kills;
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 900));
    cl.start_storage(node);
    if (!wait_all_serving(c, 30000)) {
      problem("node " + std::to_string(node) +
              " did not come back to serving: " + cl.routing_text());
      break;
    }
  }
  stop = true;
  for (auto& t : clients) t.join();
  std::printf("chaos: %d kills, %d writes, %d reads, %d writes not acknowledged\n", kills,
              writes.load(), reads.load(), write_errors.load());
  for (const std::string& p : problems) ADD_FAILURE() << p;
  EXPECT_GT(writes, 50);
  EXPECT_GT(reads, 20);
  // Afterwards every acknowledged last write is there, on every replica alike.
  for (int k = 0; k < kChunks; ++k) {
    if (chunks[size_t(k)].acked == 0) continue;
    const uint64_t inode = 5000 + uint64_t(k);
    const ReadResult got = c.read({r0.chain_for(1, inode, 0), ChunkId::of(inode, 0), 0, kLen});
    ASSERT_TRUE(got.status.ok()) << got.status.str();
    EXPECT_GE(got.version, chunks[size_t(k)].acked);
    EXPECT_TRUE(self_consistent(got.data));
  }
  expect_replicas_identical(cl);
}

TEST(FsClusterFaults, FlippedByteIsDetectedServedElsewhereAndRepaired) {
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const Routing r = c.routing();
  const uint32_t chain = r.tables.at(1).chain_ids[0];
  const ChunkId id = ChunkId::of(42, 0);
  const std::string data = tagged(9, 9, 1 << 20);
  ASSERT_TRUE(c.write(chain, id, 0, data, 1 << 20).status.ok());
  // The only 1 MiB chunk of the chain's tail: block 0 of its 1 MiB class file.
  const uint32_t bad = r.chains.at(chain).targets.back().target_id;
  const std::string file = cl.target_dir(bad) + "/data/1024K.0";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << file;
    f.seekg(777);
    char b = 0;
    f.read(&b, 1);
    b = char(b ^ 0x5a);
    f.seekp(777);
    f.write(&b, 1);
  }
  const ReadResult direct = c.read({chain, id, 0, 16, bad});
  EXPECT_EQ(direct.status.code, FsCode::ChecksumError) << direct.status.str();
  for (int i = 0; i < 10; ++i) {
    const ReadResult any = c.read({chain, id, 0, 1 << 20});
    ASSERT_TRUE(any.status.ok()) << any.status.str();
    EXPECT_TRUE(any.data == data);
  }
  // The bad replica repairs itself from a good one.
  ReadResult again;
  for (int i = 0; i < 100; ++i) {
    again = c.read({chain, id, 0, 1 << 20, bad});
    if (again.status.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(again.status.ok()) << again.status.str();
  EXPECT_TRUE(again.data == data);
  expect_replicas_identical(cl);
}

TEST(FsClusterFaults, RestartedMgmtdKeepsTheChainTables) {
  LocalCluster cl;
  cl.start();
  StorageClient& c = cl.client();
  const Routing before = c.routing();
  const uint32_t chain = before.tables.at(1).chain_ids[1];
  ASSERT_TRUE(c.write(chain, ChunkId::of(1, 0), 0, "before", 1 << 16).status.ok());
  cl.kill_mgmtd();
  cl.start_mgmtd();
  Routing after;
  for (int i = 0; i < 100 && after.version < before.version; ++i) {
    after = c.refresh();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(after.tables, before.tables);
  EXPECT_EQ(after.nodes, before.nodes);
  for (const auto& [id, ch] : before.chains) {
    ASSERT_TRUE(after.chains.count(id));
    EXPECT_EQ(after.chains.at(id).version, ch.version);
    ASSERT_EQ(after.chains.at(id).targets.size(), ch.targets.size());
    for (size_t i = 0; i < ch.targets.size(); ++i)
      EXPECT_EQ(after.chains.at(id).targets[i].target_id, ch.targets[i].target_id);
  }
  // The nodes carry on under the new mgmtd: writes, reads, and a failure it handles.
  ASSERT_TRUE(c.write(chain, ChunkId::of(1, 0), 0, "after!", 1 << 16).status.ok());
  EXPECT_EQ(c.read({chain, ChunkId::of(1, 0), 0, 6}).data, "after!");
  cl.kill_storage(1);
  EXPECT_TRUE(cl.wait_serving_count(2, 10000)) << cl.routing_text();
  cl.start_storage(1);
  EXPECT_TRUE(wait_all_serving(c, 30000)) << cl.routing_text();
  EXPECT_EQ(c.read({chain, ChunkId::of(1, 0), 0, 6}).data, "after!");
  expect_replicas_identical(cl);
}

}  // namespace
}  // namespace ff::fs
