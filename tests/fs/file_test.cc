// Files over the whole cluster (mgmtd, storage nodes, a metadata service, all real processes):
// data written through FsClient reads back byte-exact across chunks and chains, with holes,
// truncation, O_TRUNC and O_APPEND; the length a writer leaves is settled from the storage on
// close and seen by other clients; removed files' chunks are collected; a writer killed
// mid-write has its session ended and its length settled by the service; a metadata service
// killed -9 mid-operation leaves a consistent store.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "local_cluster.h"
#include "meta_check.h"

namespace ff::fs {
namespace {

using testing::LocalCluster;

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng());
  return s;
}

FsClientOptions client_options(const LocalCluster& c) {
  FsClientOptions o;
  o.mgmtd = c.mgmtd();
  o.deadline_ms = 20000;
  return o;
}

std::string read_all(FsClient& fs, uint64_t fh, size_t max = 64 << 20) {
  std::string out(max, '\0');
  const int64_t n = fs.pread(fh, out.data(), out.size(), 0);
  EXPECT_GE(n, 0);
  out.resize(size_t(std::max<int64_t>(n, 0)));
  return out;
}

// The chunks of `inode` on every target of the cluster.
size_t chunks_of(LocalCluster& c, uint64_t inode) {
  size_t n = 0;
  for (const auto& [id, chain] : c.client().refresh().chains)
    for (const TargetRoute& t : chain.targets) {
      std::vector<ChunkMeta> metas;
      if (!c.client().list_chunks(t.target_id, &metas).ok()) continue;
      for (const ChunkMeta& m : metas) n += m.id.inode() == inode;
    }
  return n;
}

TEST(FsFile, ReadWriteAcrossChunksHolesTruncateAndAppend) {
  LocalCluster c;
  c.start();
  c.start_meta();  // 64 KiB chunks over up to 4 chains
  FsClient fs(client_options(c));
  const MetaResult d = fs.mkdir(kRootInode, "d", 0755);
  ASSERT_TRUE(d.ok()) << d.err;
  uint64_t fh = 0;
  Inode n;
  ASSERT_EQ(fs.create(d.inode.id, "f", 0644, {}, &fh, &n), 0);
  EXPECT_EQ(n.layout.chunk_size, 64u << 10);
  // 300 KiB from an unaligned offset: pieces of five chunks on different chains.
  const std::string data = random_bytes(300 << 10, 1);
  ASSERT_EQ(fs.pwrite(fh, data.data(), data.size(), 1000), int64_t(data.size()));
  std::string want = std::string(1000, '\0') + data;
  EXPECT_EQ(fs.stat(n.id).inode.length, want.size());  // this client's view while writing
  EXPECT_EQ(read_all(fs, fh), want);
  // A hole: a write 1 MiB further; the gap reads as zeros.
  const std::string tail = random_bytes(5000, 2);
  ASSERT_EQ(fs.pwrite(fh, tail.data(), tail.size(), 2 << 20), int64_t(tail.size()));
  want.resize(2 << 20, '\0');
  want += tail;
  EXPECT_EQ(read_all(fs, fh), want);
  // Reads inside, at and past the end.
  std::string buf(10000, 'x');
  EXPECT_EQ(fs.pread(fh, buf.data(), buf.size(), 65530), int64_t(buf.size()));
  EXPECT_EQ(buf, want.substr(65530, 10000));
  EXPECT_EQ(fs.pread(fh, buf.data(), buf.size(), want.size() - 10), 10);
  EXPECT_EQ(fs.pread(fh, buf.data(), buf.size(), want.size()), 0);
  ASSERT_EQ(fs.close(fh), 0);
  EXPECT_EQ(fs.pread(fh, buf.data(), 1, 0), -EBADF);

  // Another client sees the settled length and the bytes.
  {
    FsClient other(client_options(c));
    const MetaResult st = other.resolve("/d/f");
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st.inode.length, want.size());
    uint64_t rh = 0;
    ASSERT_EQ(other.open("/d/f", O_RDONLY, 0, &rh), 0);
    EXPECT_EQ(read_all(other, rh), want);
    EXPECT_EQ(other.pwrite(rh, "x", 1, 0), -EBADF);
    EXPECT_EQ(other.close(rh), 0);
  }

  // Truncation cuts the chunks (a later extension reads zeros, not the old bytes).
  EXPECT_EQ(fs.setattr(n.id, {}, 100000).inode.length, 100000u);
  EXPECT_EQ(fs.setattr(n.id, {}, 150000).inode.length, 150000u);
  want.resize(100000);
  want.resize(150000, '\0');
  ASSERT_EQ(fs.open(n.id, O_RDWR, &fh), 0);
  EXPECT_EQ(read_all(fs, fh), want);
  ASSERT_EQ(fs.close(fh), 0);
  EXPECT_EQ(fs.setattr(n.id, {}, MetaStore::max_length + 1).err, EFBIG);

  // O_TRUNC, then O_APPEND writes land at the end.
  ASSERT_EQ(fs.open("/d/f", O_WRONLY | O_TRUNC, 0, &fh), 0);
  EXPECT_EQ(fs.stat(n.id).inode.length, 0u);
  ASSERT_EQ(fs.close(fh), 0);
  ASSERT_EQ(fs.open("/d/f", O_WRONLY | O_APPEND, 0, &fh), 0);
  EXPECT_EQ(fs.write(fh, "hello ", 6), 6);
  EXPECT_EQ(fs.write(fh, "world", 5), 5);
  EXPECT_EQ(fs.pwrite(fh, "x", 1, MetaStore::max_length), -EFBIG);
  ASSERT_EQ(fs.fsync(fh), 0);
  EXPECT_EQ(fs.stat(n.id).inode.length, 11u);
  ASSERT_EQ(fs.close(fh), 0);
  ASSERT_EQ(fs.open("/d/f", O_RDONLY, 0, &fh), 0);
  EXPECT_EQ(read_all(fs, fh), "hello world");
  char one[4];
  EXPECT_EQ(fs.read(fh, one, 4), 4);
  EXPECT_EQ(fs.read(fh, one, 4), 4);
  EXPECT_EQ(std::string(one, 4), "o wo");
  ASSERT_EQ(fs.close(fh), 0);

  // Path errors.
  EXPECT_EQ(fs.open("/d/f/x", O_RDONLY, 0, &fh), ENOTDIR);
  EXPECT_EQ(fs.open("/d/none", O_RDONLY, 0, &fh), ENOENT);
  EXPECT_EQ(fs.open("/d", O_RDONLY, 0, &fh), EISDIR);
  EXPECT_EQ(fs.open("/d/f", O_RDONLY | O_CREAT | O_EXCL, 0644, &fh), EEXIST);
  ASSERT_EQ(fs.open("/d/new", O_RDWR | O_CREAT, 0600, &fh), 0);
  ASSERT_EQ(fs.close(fh), 0);
  EXPECT_EQ(fs.resolve("/d/new").inode.mode, 0600u);
}

TEST(FsFile, BatchIoThroughSharedMemoryRings) {
  LocalCluster c;
  c.start();
  c.start_meta();  // 64 KiB chunks
  FsClient fs(client_options(c));
  uint64_t fh = 0;
  ASSERT_EQ(fs.create(kRootInode, "rings", 0644, {}, &fh), 0);
  IoBuffer buf(4 << 20);
  const std::string data = random_bytes(4 << 20, 5);
  std::memcpy(buf.data(), data.data(), data.size());
  {
    // 32 writes of 100 KiB (each over two chunks) from the buffer, in one submission.
    IoRing w(fs, buf, 64, /*for_read=*/false);
    for (uint32_t i = 0; i < 32; ++i)
      ASSERT_EQ(w.prep(fh, uint64_t(i) * 100000, size_t(i) * 100000, 100000, i), 0);
    EXPECT_EQ(w.prep(fh, 0, (4 << 20) - 10, 11, 99), EINVAL);  // past the buffer
    EXPECT_EQ(w.prep(fh, 0, 0, 0, 99), EINVAL);
    EXPECT_EQ(w.submit(), 32);
    std::vector<IoCompletion> cq(64);
    int got = 0;
    for (int round = 0; round < 100 && got < 32; ++round)
      got += w.wait(cq.data() + got, 64 - got, 32 - got, 1000);
    ASSERT_EQ(got, 32);
    std::set<uint64_t> seen;
    for (int i = 0; i < got; ++i) {
      EXPECT_EQ(cq[size_t(i)].result, 100000) << cq[size_t(i)].userdata;
      seen.insert(cq[size_t(i)].userdata);
    }
    EXPECT_EQ(seen.size(), 32u);
  }
  ASSERT_EQ(fs.close(fh), 0);
  const std::string want = data.substr(0, 3200000);
  ASSERT_EQ(fs.open("/rings", O_RDONLY, 0, &fh), 0);
  // 64 reads of 16 KiB at scattered offsets into a cleared buffer; a ring of 8 entries fills.
  std::memset(buf.data(), 0, buf.size());
  IoRing r(fs, buf, 8, /*for_read=*/true, /*io_depth=*/8);
  std::mt19937 rng(6);
  std::vector<uint64_t> offsets(64);
  std::vector<IoCompletion> cq(8);
  size_t next = 0, done = 0;
  while (done < 64) {
    while (next < 64) {
      offsets[next] = rng() % (want.size() - 16384);
      const int e = r.prep(fh, offsets[next], next * 16384, 16384, next);
      if (e == EAGAIN) break;
      ASSERT_EQ(e, 0);
      ++next;
    }
    r.submit();
    const int n = r.wait(cq.data(), 8, 1, 5000);
    ASSERT_GT(n, 0);
    for (int i = 0; i < n; ++i) {
      const uint64_t k = cq[size_t(i)].userdata;
      EXPECT_EQ(cq[size_t(i)].result, 16384);
      EXPECT_EQ(std::string(buf.data() + k * 16384, 16384), want.substr(offsets[k], 16384)) << k;
    }
    done += size_t(n);
  }
  // A read past the end is short; an unknown handle fails alone.
  ASSERT_EQ(r.prep(fh, want.size() - 100, 0, 16384, 1), 0);
  ASSERT_EQ(r.prep(987654, 0, 16384, 100, 2), 0);
  r.submit();
  int n = 0;
  for (int round = 0; round < 10 && n < 2; ++round) n += r.wait(cq.data() + n, 8 - n, 2 - n, 1000);
  ASSERT_EQ(n, 2);
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(cq[size_t(i)].result, cq[size_t(i)].userdata == 1 ? 100 : -EBADF);
  fs.close(fh);
}

TEST(FsFile, RemovedFilesChunksAreCollected) {
  LocalCluster c;
  c.start();
  c.start_meta();
  FsClient fs(client_options(c));
  uint64_t fh = 0;
  Inode n;
  ASSERT_EQ(fs.create(kRootInode, "big", 0644, {}, &fh, &n), 0);
  const std::string data = random_bytes(512 << 10, 3);  // 8 chunks, 3 replicas each
  ASSERT_EQ(fs.pwrite(fh, data.data(), data.size(), 0), int64_t(data.size()));
  EXPECT_EQ(chunks_of(c, n.id), 8u * 3);
  // Removed while open for write: the chunks stay (the handle still reads them) until the
  // session ends.
  ASSERT_EQ(fs.unlink(kRootInode, "big"), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(chunks_of(c, n.id), 8u * 3);
  EXPECT_EQ(read_all(fs, fh), data);
  ASSERT_EQ(fs.close(fh), 0);
  size_t left = 1;
  for (int i = 0; i < 100 && (left = chunks_of(c, n.id)) > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(left, 0u);
}

TEST(FsFile, AKilledWritersSessionEndsAndItsLengthIsSettled) {
  LocalCluster c;
  c.start();
  c.start_meta(1, "", /*session_lease_ms=*/1500);
  const std::string data = random_bytes(200 << 10, 4);
  // `fireflyer fs put` writing from a pipe that stays open: it writes what came and waits.
  int in[2];
  ASSERT_EQ(::pipe2(in, O_CLOEXEC), 0);
  const pid_t pid = c.spawn_with_stdin("put", {"fs", "put", "--mgmtd", c.mgmtd(), "/w"}, in[0]);
  ::close(in[0]);
  ASSERT_EQ(::write(in[1], data.data(), data.size()), ssize_t(data.size()));
  FsClient fs(client_options(c));
  MetaResult st;
  for (int i = 0; i < 200; ++i) {
    st = fs.resolve("/w");
    if (st.ok() && chunks_of(c, st.inode.id) == 4u * 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st.inode.length, 0u);  // not settled while the writer lives
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ::close(in[1]);
  for (int i = 0; i < 100 && fs.resolve("/w").inode.length != data.size(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(fs.resolve("/w").inode.length, data.size());
  uint64_t fh = 0;
  ASSERT_EQ(fs.open("/w", O_RDONLY, 0, &fh), 0);
  EXPECT_EQ(read_all(fs, fh), data);
  fs.close(fh);
}

TEST(FsFile, AMetadataServiceKilledMidOperationLeavesNoHalfOperation) {
  LocalCluster c;
  c.start();
  c.start_meta();
  std::atomic<bool> stop{false};
  std::atomic<int> done{0};
  std::thread worker([&] {
    FsClientOptions o = client_options(c);
    o.deadline_ms = 3000;
    FsClient fs(o);
    const uint64_t a = fs.mkdir(kRootInode, "a", 0755).inode.id;
    for (int i = 0; !stop; ++i) {
      const std::string s = std::to_string(i);
      uint64_t fh = 0;
      if (fs.create(a, "f" + s, 0644, {}, &fh) == 0) fs.close(fh);
      fs.mkdir(a, "d" + s, 0755);
      fs.rename(a, "f" + s, kRootInode, "g" + s);
      fs.rename(a, "d" + s, kRootInode, "e" + s);
      if (i % 3 == 0) fs.unlink(kRootInode, "g" + s);
      ++done;
    }
  });
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    c.kill_meta(1);
    c.start_meta(1);
  }
  const int before = done;
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  stop = true;
  worker.join();
  EXPECT_GT(done.load(), before) << "no operation completed after the last restart";
  c.kill_meta(1, SIGTERM);
  auto store = open_rocksdb_txn_store(c.dir() + "/meta-1");
  testing::expect_consistent(*store);
}

}  // namespace
}  // namespace ff::fs
