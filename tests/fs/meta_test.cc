// File-system metadata on the transactional stores (memory, RocksDB): POSIX results and error
// codes of each operation, paged readdir, rename's replace rules and loop check, many threads
// creating / renaming / removing in one directory, and racing cross-directory renames that must
// never detach a subtree or make a loop.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "fs/fs.h"
#include "meta_check.h"

namespace ff::fs {
namespace {

std::unique_ptr<TxnStore> memory() {
  return make_memory_txn_store();
}
std::unique_ptr<TxnStore> rocks() {
  static int n = 0;
  const std::string d = (std::filesystem::temp_directory_path() /
                         ("ff_meta_" + std::to_string(::getpid()) + "_" + std::to_string(n++)))
                            .string();
  std::filesystem::remove_all(d);
  return open_rocksdb_txn_store(d);
}

class MetaTest : public ::testing::TestWithParam<std::unique_ptr<TxnStore> (*)()> {
 protected:
  void SetUp() override {
    store_ = GetParam()();
    meta_ = std::make_unique<MetaStore>(*store_);
  }
  void TearDown() override {
    meta_.reset();
    store_.reset();
    for (const auto& e :
         std::filesystem::directory_iterator(std::filesystem::temp_directory_path()))
      if (e.path().filename().string().rfind("ff_meta_" + std::to_string(::getpid()) + "_", 0) == 0)
        std::filesystem::remove_all(e.path());
  }
  std::set<std::string> names(uint64_t dir) {
    std::vector<DirEntry> out;
    EXPECT_EQ(meta_->readdir(dir, "", SIZE_MAX, &out), 0);
    std::set<std::string> s;
    for (const auto& e : out) s.insert(e.name);
    return s;
  }
  std::unique_ptr<TxnStore> store_;
  std::unique_ptr<MetaStore> meta_;
};

TEST_P(MetaTest, CreateLookupStatRemove) {
  MetaStore& m = *meta_;
  const MetaResult d = m.mkdir(kRootInode, "docs", 0750);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.inode.type, FileType::Directory);
  const MetaResult f = m.create(d.inode.id, "a.txt", 0644);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(m.lookup(d.inode.id, "a.txt").inode.id, f.inode.id);
  EXPECT_EQ(m.stat(f.inode.id).inode.mode, 0644u);
  const MetaResult l = m.symlink(d.inode.id, "link", "a.txt");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(m.stat(l.inode.id).inode.target, "a.txt");
  EXPECT_EQ(names(d.inode.id), (std::set<std::string>{"a.txt", "link"}));
  // Errors.
  EXPECT_EQ(m.create(d.inode.id, "a.txt", 0644).err, EEXIST);
  EXPECT_EQ(m.mkdir(d.inode.id, "a.txt", 0755).err, EEXIST);
  EXPECT_EQ(m.lookup(d.inode.id, "nope").err, ENOENT);
  EXPECT_EQ(m.create(f.inode.id, "x", 0644).err, ENOTDIR);
  EXPECT_EQ(m.create(987654321, "x", 0644).err, ENOENT);
  for (const char* bad : {"", ".", "..", "a/b"})
    EXPECT_EQ(m.create(d.inode.id, bad, 0).err, EINVAL);
  EXPECT_EQ(m.create(d.inode.id, std::string(256, 'n'), 0).err, ENAMETOOLONG);
  EXPECT_TRUE(m.create(d.inode.id, std::string(255, 'n'), 0).ok());
  EXPECT_EQ(m.unlink(kRootInode, "docs"), EISDIR);
  EXPECT_EQ(m.rmdir(kRootInode, "docs"), ENOTEMPTY);
  EXPECT_EQ(m.rmdir(d.inode.id, "a.txt"), ENOTDIR);
  EXPECT_EQ(m.unlink(d.inode.id, "a.txt"), 0);
  EXPECT_EQ(m.unlink(d.inode.id, "a.txt"), ENOENT);
  EXPECT_EQ(m.stat(f.inode.id).err, ENOENT);
  EXPECT_EQ(m.unlink(d.inode.id, "link"), 0);
  EXPECT_EQ(m.unlink(d.inode.id, std::string(255, 'n')), 0);
  EXPECT_EQ(m.rmdir(kRootInode, "docs"), 0);
  EXPECT_TRUE(names(kRootInode).empty());
  std::vector<DirEntry> gone;
  EXPECT_EQ(m.readdir(d.inode.id, "", 10, &gone), ENOENT);
}

TEST_P(MetaTest, LinksAttributesAndLengths) {
  MetaStore& m = *meta_;
  const uint64_t d = m.mkdir(kRootInode, "d", 0755).inode.id;
  const uint64_t f = m.create(d, "f", 0600).inode.id;
  // A second name: two links; the inode stays until the last goes.
  EXPECT_EQ(m.link(f, kRootInode, "f2").inode.nlink, 2u);
  EXPECT_EQ(m.link(f, kRootInode, "f2").err, EEXIST);
  EXPECT_EQ(m.link(d, kRootInode, "d2").err, EPERM);
  EXPECT_EQ(m.link(987654, kRootInode, "x").err, ENOENT);
  EXPECT_EQ(m.link(f, f, "x").err, ENOTDIR);
  EXPECT_EQ(m.unlink(d, "f"), 0);
  EXPECT_EQ(m.stat(f).inode.nlink, 1u);
  EXPECT_EQ(m.lookup(kRootInode, "f2").inode.id, f);
  // Renaming one name of a file over another name of it changes nothing.
  EXPECT_EQ(m.link(f, d, "again").err, 0);
  EXPECT_EQ(m.rename(d, "again", kRootInode, "f2"), 0);
  EXPECT_EQ(m.stat(f).inode.nlink, 2u);
  EXPECT_EQ(m.unlink(kRootInode, "f2"), 0);
  EXPECT_EQ(m.unlink(d, "again"), 0);
  EXPECT_EQ(m.stat(f).err, ENOENT);
  // Symlinks.
  const uint64_t l = m.symlink(d, "l", "../target").inode.id;
  EXPECT_EQ(m.readlink(l).inode.target, "../target");
  EXPECT_EQ(m.readlink(d).err, EINVAL);
  EXPECT_EQ(m.symlink(d, "empty", "").err, ENOENT);
  // Attributes and lengths.
  const uint64_t g = m.create(d, "g", 0644).inode.id;
  const MetaResult a = m.setattr(g, SetAttr{.mode = 0640, .uid = 1000, .mtime_ns = int64_t(42)});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.inode.mode, 0640u);
  EXPECT_EQ(a.inode.uid, 1000u);
  EXPECT_EQ(a.inode.gid, 0u);
  EXPECT_EQ(m.stat(g).inode.mtime_ns, 42);
  EXPECT_EQ(m.setattr(987654, SetAttr{.mode = 0}).err, ENOENT);
  EXPECT_EQ(m.set_length(g, 12345).inode.length, 12345u);
  EXPECT_EQ(m.stat(g).inode.length, 12345u);
  EXPECT_EQ(m.set_length(g, MetaStore::max_length + 1).err, EFBIG);
  EXPECT_EQ(m.set_length(d, 1).err, EISDIR);
  EXPECT_EQ(m.set_length(l, 1).err, EINVAL);
}

TEST_P(MetaTest, WriteSessionsAndDeferredGarbage) {
  MetaStore& m = *meta_;
  WriteSession s{.session = 7, .client = 3, .expires_ns = 1000};
  Layout layout{.table_id = 1, .chunk_size = 64 << 10, .stripe = 4, .seed = 99};
  const MetaResult f = m.create(kRootInode, "f", 0644, Owner{.uid = 5, .gid = 6}, layout, &s);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(s.inode, f.inode.id);
  EXPECT_EQ(m.stat(f.inode.id).inode.layout, layout);
  EXPECT_EQ(f.inode.uid, 5u);
  EXPECT_EQ(m.create(kRootInode, "bad", 0644, {}, Layout{.chunk_size = 1000}).err, EINVAL);
  EXPECT_EQ(m.open_session(WriteSession{.inode = kRootInode, .session = 1}).err, EISDIR);
  // A writer settles the length: it only grows.
  EXPECT_EQ(m.settle_length(f.inode.id, 5000).inode.length, 5000u);
  EXPECT_EQ(m.settle_length(f.inode.id, 10).inode.length, 5000u);
  // Leases: expired ones are listed until renewed.
  ASSERT_EQ(m.expired_sessions(2000, 10).size(), 1u);
  EXPECT_EQ(m.expired_sessions(2000, 10)[0].client, 3u);
  EXPECT_EQ(m.renew_sessions({s, WriteSession{.inode = 1, .session = 2}}, 3000), 1u);
  EXPECT_TRUE(m.expired_sessions(2000, 10).empty());
  // Removed while written: garbage, busy until the session ends.
  EXPECT_TRUE(m.garbage(10).empty());
  ASSERT_EQ(m.unlink(kRootInode, "f"), 0);
  auto g = m.garbage(10);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_TRUE(g[0].busy);
  EXPECT_EQ(g[0].inode.layout, layout);
  EXPECT_EQ(m.settle_length(f.inode.id, 1).err, ENOENT);
  EXPECT_EQ(m.close_session(f.inode.id, 7), 0);
  EXPECT_EQ(m.close_session(f.inode.id, 7), 0);
  g = m.garbage(10);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_FALSE(g[0].busy);
  EXPECT_EQ(m.garbage_done(f.inode.id), 0);
  EXPECT_TRUE(m.garbage(10).empty());
  // rename with RENAME_NOREPLACE semantics.
  ASSERT_TRUE(m.create(kRootInode, "a", 0644).ok());
  ASSERT_TRUE(m.create(kRootInode, "b", 0644).ok());
  EXPECT_EQ(m.rename(kRootInode, "a", kRootInode, "b", true), EEXIST);
  EXPECT_EQ(m.rename(kRootInode, "a", kRootInode, "c", true), 0);
}

TEST_P(MetaTest, ReaddirPagesInNameOrder) {
  for (int i = 0; i < 25; ++i)
    ASSERT_TRUE(meta_->create(kRootInode, "f" + std::to_string(100 + i), 0644).ok());
  std::vector<std::string> all;
  std::vector<DirEntry> page;
  std::string after;
  for (int pages = 0; pages < 10; ++pages) {
    ASSERT_EQ(meta_->readdir(kRootInode, after, 7, &page), 0);
    if (page.empty()) break;
    for (const auto& e : page) all.push_back(e.name);
    after = page.back().name;
  }
  ASSERT_EQ(all.size(), 25u);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
}

TEST_P(MetaTest, RenameRules) {
  MetaStore& m = *meta_;
  const uint64_t a = m.mkdir(kRootInode, "a", 0755).inode.id;
  const uint64_t b = m.mkdir(kRootInode, "b", 0755).inode.id;
  const uint64_t sub = m.mkdir(a, "sub", 0755).inode.id;
  const uint64_t f = m.create(a, "f", 0644).inode.id;
  const uint64_t g = m.create(b, "g", 0644).inode.id;
  EXPECT_EQ(m.rename(a, "f", b, "f2"), 0);  // across directories
  EXPECT_EQ(m.lookup(b, "f2").inode.id, f);
  EXPECT_EQ(m.lookup(a, "f").err, ENOENT);
  EXPECT_EQ(m.rename(b, "f2", b, "g"), 0);  // replaces a file
  EXPECT_EQ(m.lookup(b, "g").inode.id, f);
  EXPECT_EQ(m.stat(g).err, ENOENT);
  EXPECT_EQ(m.rename(kRootInode, "a", a, "x"), EINVAL);    // into itself
  EXPECT_EQ(m.rename(kRootInode, "a", sub, "x"), EINVAL);  // under its own subtree
  EXPECT_EQ(m.rename(b, "g", kRootInode, "a"), EISDIR);    // a file over a directory
  EXPECT_EQ(m.rename(kRootInode, "b", a, "sub"), 0);       // a directory over an empty one
  EXPECT_EQ(m.lookup(a, "sub").inode.id, b);
  EXPECT_EQ(m.stat(sub).err, ENOENT);
  EXPECT_EQ(m.stat(b).inode.parent, a);
  const uint64_t c = m.mkdir(kRootInode, "c", 0755).inode.id;
  EXPECT_EQ(m.create(c, "keep", 0644).err, 0);
  EXPECT_EQ(m.rename(a, "sub", kRootInode, "c"), ENOTEMPTY);  // over a non-empty directory
  EXPECT_EQ(m.rename(a, "sub", c, "keep"), ENOTDIR);          // a directory over a file
  EXPECT_EQ(m.rename(a, "missing", c, "x"), ENOENT);
  EXPECT_EQ(m.rename(a, "sub", a, "sub"), 0);
  EXPECT_EQ(names(kRootInode), (std::set<std::string>{"a", "c"}));
}

TEST_P(MetaTest, ManyClientsInOneDirectoryEndWithTheExpectedEntries) {
  const uint64_t dir = meta_->mkdir(kRootInode, "shared", 0755).inode.id;
  constexpr int kThreads = 4, kEach = 40;
  std::atomic<int> errors{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      MetaStore m(*store_);  // each client its own handle on the store
      for (int i = 0; i < kEach; ++i)
        errors += m.create(dir, fmt::format("t{}-{}", t, i), 0644).err != 0;
      for (int i = 0; i < kEach; i += 2)  // rename the even ones
        errors += m.rename(dir, fmt::format("t{}-{}", t, i), dir, fmt::format("r{}-{}", t, i)) != 0;
      for (int i = 0; i < kEach; i += 4)  // and remove every other renamed one
        errors += m.unlink(dir, fmt::format("r{}-{}", t, i)) != 0;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(errors, 0);
  std::set<std::string> want;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kEach; ++i) {
      if (i % 2)
        want.insert(fmt::format("t{}-{}", t, i));
      else if (i % 4)
        want.insert(fmt::format("r{}-{}", t, i));
    }
  EXPECT_EQ(names(dir), want);
}

TEST_P(MetaTest, RacingCrossDirectoryRenamesNeverMakeALoop) {
  // Rounds of two renames at once: A into B/C, and B into A. Each alone is fine; both would
  // make A -> C -> B -> A, detached from the root. The first needs the directories on its way
  // up (C, then B) unchanged, and the second changes B.
  std::atomic<int> both{0}, one{0};
  for (int round = 0; round < 60; ++round) {
    const uint64_t a = meta_->mkdir(kRootInode, "A", 0755).inode.id;
    const uint64_t b = meta_->mkdir(kRootInode, "B", 0755).inode.id;
    const uint64_t c = meta_->mkdir(b, "C", 0755).inode.id;
    std::atomic<int> ready{0};
    int r1 = -1, r2 = -1;
    const auto racer = [&](int* r, uint64_t to, const char* name) {
      MetaStore m(*store_);
      ++ready;
      while (ready < 2) std::this_thread::yield();
      *r = m.rename(kRootInode, name, to, name);
    };
    std::thread t1(racer, &r1, c, "A"), t2(racer, &r2, a, "B");
    t1.join();
    t2.join();
    if (r1 == 0 && r2 == 0) ++both;
    if ((r1 == 0) != (r2 == 0)) ++one;
    // Every directory still leads up to the root.
    for (const uint64_t d : {a, b, c}) {
      uint64_t cur = d;
      int steps = 0;
      while (cur != kRootInode && steps++ < 10) cur = meta_->stat(cur).inode.parent;
      ASSERT_EQ(cur, kRootInode) << "round " << round << ": directory " << d << " detached";
    }
    // Back to the start for the next round.
    if (r1 == 0) {
      ASSERT_EQ(meta_->rename(c, "A", kRootInode, "A"), 0);
    }
    if (r2 == 0) {
      ASSERT_EQ(meta_->rename(a, "B", kRootInode, "B"), 0);
    }
    ASSERT_EQ(meta_->rmdir(b, "C"), 0);
    ASSERT_EQ(meta_->rmdir(kRootInode, "B"), 0);
    ASSERT_EQ(meta_->rmdir(kRootInode, "A"), 0);
  }
  EXPECT_EQ(both, 0);
  EXPECT_GT(one, 0);
}

INSTANTIATE_TEST_SUITE_P(Stores, MetaTest, ::testing::Values(&memory, &rocks),
                         [](const auto& info) {
                           return std::string(info.index == 0 ? "Memory" : "RocksDB");
                         });

}  // namespace
}  // namespace ff::fs

namespace ff::fs {
namespace {

TEST(MetaCrash, AProcessKilledMidOperationLeavesNoHalfOperation) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("ff_meta_crash_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(dir);
  for (int round = 0; round < 3; ++round) {
    const pid_t pid = ::fork();
    if (pid == 0) {  // a client doing creates, renames and removals until it is killed
      auto store = open_rocksdb_txn_store(dir);
      MetaStore m(*store);
      const uint64_t a = m.mkdir(kRootInode, "a" + std::to_string(round), 0755).inode.id;
      for (int i = 0;; ++i) {
        const std::string n = std::to_string(i);
        m.create(a, "f" + n, 0644);
        m.mkdir(a, "d" + n, 0755);
        m.rename(a, "f" + n, kRootInode, "g" + std::to_string(round) + "-" + n);
        m.rename(a, "d" + n, kRootInode, "e" + std::to_string(round) + "-" + n);
        if (i % 3 == 0) m.unlink(kRootInode, "g" + std::to_string(round) + "-" + n);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + 100 * round));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    auto store = open_rocksdb_txn_store(dir);
    SCOPED_TRACE("after kill " + std::to_string(round + 1));
    testing::expect_consistent(*store);
    MetaStore m(*store);
    EXPECT_TRUE(m.lookup(kRootInode, "a" + std::to_string(round)).ok());
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ff::fs
