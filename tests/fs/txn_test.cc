// Transactions with serializable isolation, one typed suite for every engine (the in-memory one
// now; RocksDB and etcd join it): snapshots, read-your-writes, conflicts on point and range
// reads (phantoms included), blind writes, no lost update under concurrent increments, and
// injected faults.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "core/core.h"
#include "fs/fs.h"
#include "local_cluster.h"

namespace ff::fs {
namespace {

// Directories the RocksDB engine got, removed after each test.
std::vector<std::string>& made_dirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

std::string scratch_dir(const std::string& tag) {
  static int n = 0;
  const std::string d =
      (std::filesystem::temp_directory_path() /
       ("ff_txn_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(n++)))
          .string();
  std::filesystem::remove_all(d);
  made_dirs().push_back(d);
  return d;
}

using Factory = std::unique_ptr<TxnStore> (*)();

class TxnTest : public ::testing::TestWithParam<Factory> {
 protected:
  void SetUp() override {
    store_ = GetParam()();
    if (!store_) GTEST_SKIP() << "no etcd binary";
  }
  void TearDown() override {
    store_.reset();
    for (const std::string& d : made_dirs()) std::filesystem::remove_all(d);
    made_dirs().clear();
  }
  void put(const std::string& k, const std::string& v) {
    ASSERT_EQ(run_txn(*store_, [&](Txn& t) { t.set(k, v); }), TxnStatus::Committed);
  }
  std::optional<std::string> value(const std::string& k) { return store_->begin_read()->get(k); }
  std::unique_ptr<TxnStore> store_;
};

TEST_P(TxnTest, SnapshotsAndReadYourWrites) {
  put("a", "1");
  auto old = store_->begin_read();
  auto t = store_->begin();
  t->set("a", "2");
  t->set("b", "x");
  t->clear("a");
  EXPECT_EQ(t->get("a"), std::nullopt);  // its own clear
  EXPECT_EQ(t->get("b"), "x");
  t->set("a", "3");
  EXPECT_EQ(t->get("a"), "3");
  EXPECT_EQ(value("a"), "1");  // nothing visible before the commit
  ASSERT_EQ(t->commit(), TxnStatus::Committed);
  EXPECT_EQ(value("a"), "3");
  EXPECT_EQ(value("b"), "x");
  EXPECT_EQ(old->get("a"), "1");  // a transaction keeps its snapshot
  EXPECT_EQ(old->get("b"), std::nullopt);
  EXPECT_GT(store_->begin_read()->read_version(), old->read_version());
  EXPECT_THROW(t->get("a"), ff::Error);  // ended
}

TEST_P(TxnTest, RangesMergeOwnWritesAndSkipClearedKeys) {
  put("d/a", "1");
  put("d/b", "2");
  put("d/c", "3");
  put("e/a", "9");
  auto t = store_->begin();
  t->clear("d/b");
  t->set("d/bb", "new");
  const KeyValues got = t->range("d/", "d0");
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], std::make_pair(std::string("d/a"), std::string("1")));
  EXPECT_EQ(got[1], std::make_pair(std::string("d/bb"), std::string("new")));
  EXPECT_EQ(got[2], std::make_pair(std::string("d/c"), std::string("3")));
  EXPECT_EQ(t->range("d/", "d0", 2).size(), 2u);
  EXPECT_EQ(t->range("d/", "").size(), 4u);  // no upper bound
}

TEST_P(TxnTest, ReadKeyChangedByAnotherCommitConflicts) {
  put("k", "0");
  auto t1 = store_->begin();
  EXPECT_EQ(t1->get("k"), "0");
  put("k", "1");
  t1->set("other", "x");
  EXPECT_EQ(t1->commit(), TxnStatus::Conflict);
  EXPECT_EQ(value("other"), std::nullopt);  // nothing of it applied
  // A key read only through snapshot_get does not conflict.
  auto t2 = store_->begin();
  EXPECT_EQ(t2->snapshot_get("k"), "1");
  put("k", "2");
  t2->set("other", "y");
  EXPECT_EQ(t2->commit(), TxnStatus::Committed);
}

TEST_P(TxnTest, RangeReadConflictsWithAPhantom) {
  put("dir/a", "1");
  auto t1 = store_->begin();
  EXPECT_EQ(t1->range("dir/", "dir0").size(), 1u);
  put("dir/b", "2");  // a new entry inside the range read
  t1->set("count", "1");
  EXPECT_EQ(t1->commit(), TxnStatus::Conflict);
  // Outside the range: no conflict.
  auto t2 = store_->begin();
  EXPECT_EQ(t2->range("dir/", "dir0").size(), 2u);
  put("dis", "x");
  t2->set("count", "2");
  EXPECT_EQ(t2->commit(), TxnStatus::Committed);
  // A clear inside the range conflicts too.
  auto t3 = store_->begin();
  t3->range("dir/", "dir0");
  ASSERT_EQ(run_txn(*store_, [](Txn& t) { t.clear("dir/a"); }), TxnStatus::Committed);
  t3->set("count", "3");
  EXPECT_EQ(t3->commit(), TxnStatus::Conflict);
}

TEST_P(TxnTest, LimitedRangeChecksOnlyWhatItReturned) {
  for (const char* k : {"r/a", "r/c", "r/e"}) put(k, "v");
  auto t1 = store_->begin();
  ASSERT_EQ(t1->range("r/", "r0", 2).size(), 2u);  // r/a, r/c
  put("r/x", "v");                                 // past what it saw
  t1->set("s", "1");
  EXPECT_EQ(t1->commit(), TxnStatus::Committed);
  auto t2 = store_->begin();
  ASSERT_EQ(t2->range("r/", "r0", 2).size(), 2u);
  put("r/b", "v");  // between what it saw
  t2->set("s", "2");
  EXPECT_EQ(t2->commit(), TxnStatus::Conflict);
}

TEST_P(TxnTest, BlindWritesDoNotConflictAndTheLastWins) {
  auto t1 = store_->begin();
  auto t2 = store_->begin();
  t1->set("k", "1");
  t2->set("k", "2");
  EXPECT_EQ(t2->commit(), TxnStatus::Committed);
  EXPECT_EQ(t1->commit(), TxnStatus::Committed);
  EXPECT_EQ(value("k"), "1");
}

TEST_P(TxnTest, ConcurrentIncrementsLoseNoUpdate) {
  put("n", "0");
  constexpr int kThreads = 4, kEach = 200;
  std::vector<std::thread> ts;
  std::atomic<int> failed{0}, runs{0};
  std::atomic<bool> go{false};
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&] {
      while (!go) std::this_thread::yield();
      for (int j = 0; j < kEach; ++j) {
        const TxnStatus s = run_txn(
            *store_,
            [&runs](Txn& t) {
              ++runs;
              const int n = std::stoi(t.get("n").value());
              std::this_thread::yield();  // let the others interleave
              t.set("n", std::to_string(n + 1));
            },
            100000);
        if (s != TxnStatus::Committed) ++failed;
      }
    });
  go = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(value("n"), std::to_string(kThreads * kEach));
  std::printf("increments: %d transactions for %d commits\n", runs.load(), kThreads * kEach);
}

TEST_P(TxnTest, InjectedFaults) {
  put("k", "0");
  store_->inject(TxnStatus::Failed);
  auto t = store_->begin();
  t->set("k", "1");
  EXPECT_EQ(t->commit(), TxnStatus::Failed);
  EXPECT_EQ(value("k"), "0");
  store_->inject(TxnStatus::Unknown, 1, /*applied=*/true);
  t = store_->begin();
  t->set("k", "2");
  EXPECT_EQ(t->commit(), TxnStatus::Unknown);
  EXPECT_EQ(value("k"), "2");
  store_->inject(TxnStatus::Unknown, 1, /*applied=*/false);
  t = store_->begin();
  t->set("k", "3");
  EXPECT_EQ(t->commit(), TxnStatus::Unknown);
  EXPECT_EQ(value("k"), "2");
  // run_txn retries through them; an idempotent body (create once) ends the same either way.
  for (const bool applied : {true, false}) {
    store_->inject(TxnStatus::Unknown, 2, applied);
    const std::string key = applied ? "created1" : "created2";
    int runs = 0;
    EXPECT_EQ(run_txn(*store_,
                      [&](Txn& tx) {
                        ++runs;
                        if (!tx.get(key)) tx.set(key, "once");
                      }),
              TxnStatus::Committed);
    EXPECT_EQ(runs, 3);
    EXPECT_EQ(value(key), "once");
  }
  store_->inject(TxnStatus::Conflict, 3);
  EXPECT_EQ(run_txn(
                *store_, [](Txn& tx) { tx.set("z", "1"); }, 3),
            TxnStatus::Conflict);
  EXPECT_EQ(value("z"), std::nullopt);
}

TEST_P(TxnTest, ReadOnlyTransactionsCannotWrite) {
  auto r = store_->begin_read();
  EXPECT_EQ(r->get("nothing"), std::nullopt);
  EXPECT_TRUE(r->range("", "").empty());
  auto* t = dynamic_cast<Txn*>(r.get());
  if (t) {
    EXPECT_THROW(t->set("k", "v"), ff::Error);
    EXPECT_THROW(t->commit(), ff::Error);
  }
}

std::unique_ptr<TxnStore> make_rocksdb() {
  return open_rocksdb_txn_store(scratch_dir("suite"));
}

// One etcd server for the test program (started on first use on free loopback ports, stopped
// at exit); each test starts from an empty key space. Absent etcd binary: those tests skip.
class EtcdServer {
 public:
  EtcdServer() {
    if (std::system("command -v etcd >/dev/null 2>&1") != 0) return;
    const int client = testing::free_port(), peer = testing::free_port();
    dir_ = scratch_dir("etcd");
    made_dirs().clear();  // kept until exit
    endpoint_ = "127.0.0.1:" + std::to_string(client);
    const std::string c = "http://" + endpoint_, p = "http://127.0.0.1:" + std::to_string(peer);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // gone with the test, even a crashed one
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execlp("etcd", "etcd", "--data-dir", dir_.c_str(), "--listen-client-urls", c.c_str(),
               "--advertise-client-urls", c.c_str(), "--listen-peer-urls", p.c_str(),
               "--initial-advertise-peer-urls", p.c_str(), "--initial-cluster",
               ("default=" + p).c_str(), "--max-txn-ops", "100000", nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      try {
        open_etcd_txn_store(endpoint_);
        return;
      } catch (const ff::Error&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    endpoint_.clear();
  }
  ~EtcdServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  pid_t pid_ = 0;
  std::string dir_, endpoint_;
};

EtcdServer& etcd() {
  static EtcdServer server;
  return server;
}

std::unique_ptr<TxnStore> make_etcd() {
  if (etcd().endpoint().empty()) return nullptr;
  auto s = open_etcd_txn_store(etcd().endpoint());
  // An empty key space for the test.
  EXPECT_EQ(run_txn(*s,
                    [](Txn& t) {
                      for (const auto& [k, v] : t.range("", "")) t.clear(k);
                    }),
            TxnStatus::Committed);
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Engines, TxnTest, ::testing::Values(&make_memory_txn_store, &make_rocksdb, &make_etcd),
    [](const auto& info) {
      return std::string(info.index == 0 ? "Memory" : info.index == 1 ? "RocksDB" : "Etcd");
    });

TEST(TxnEtcd, IncrementsFromSeveralProcessesLoseNoUpdate) {
  auto store = make_etcd();
  if (!store) GTEST_SKIP() << "no etcd binary";
  ASSERT_EQ(run_txn(*store, [](Txn& t) { t.set("n", "0"); }), TxnStatus::Committed);
  constexpr int kProcs = 3, kEach = 40;
  const auto increment = [](TxnStore& s) {
    return run_txn(
        s, [](Txn& t) { t.set("n", std::to_string(std::stoi(t.get("n").value()) + 1)); }, 100000);
  };
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      int bad = 0;
      try {
        auto own = open_etcd_txn_store(etcd().endpoint());  // its own connection
        for (int i = 0; i < kEach; ++i) bad += increment(*own) != TxnStatus::Committed;
      } catch (...) {
        bad = 1;
      }
      ::_exit(bad ? 1 : 0);
    }
    kids.push_back(pid);
  }
  for (int i = 0; i < kEach; ++i) EXPECT_EQ(increment(*store), TxnStatus::Committed);
  for (const pid_t k : kids) {
    int st = 0;
    ::waitpid(k, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  EXPECT_EQ(store->begin_read()->get("n"), std::to_string((kProcs + 1) * kEach));
}

TEST(TxnEtcd, AnEndpointThatDoesNotAnswerIsAnError) {
  EXPECT_THROW(open_etcd_txn_store("127.0.0.1:1"), ff::Error);
  EXPECT_THROW(open_etcd_txn_store("no-port"), ff::Error);
}

TEST(TxnRocksDB, CommittedTransactionsSurviveAReopen) {
  const std::string dir = scratch_dir("reopen");
  {
    auto s = open_rocksdb_txn_store(dir);
    ASSERT_EQ(run_txn(*s, [](Txn& t) { t.set("inode/1", "root"); }), TxnStatus::Committed);
    auto t = s->begin();  // never committed
    t->set("inode/2", "lost");
  }
  auto s = open_rocksdb_txn_store(dir);
  EXPECT_EQ(s->begin_read()->get("inode/1"), "root");
  EXPECT_EQ(s->begin_read()->get("inode/2"), std::nullopt);
  s.reset();
  std::filesystem::remove_all(dir);
  EXPECT_THROW(open_rocksdb_txn_store("/proc/no/such/dir"), ff::Error);
}

TEST(TxnRocksDB, ScanCutByItsLimitMergesOwnWrites) {
  const std::string dir = scratch_dir("cut");
  auto s = open_rocksdb_txn_store(dir);
  ASSERT_EQ(run_txn(*s,
                    [](Txn& t) {
                      for (const char* k : {"a", "b", "c", "d"}) t.set(k, "s");
                    }),
            TxnStatus::Committed);
  auto t = s->begin();
  t->clear("a");
  t->clear("b");
  t->set("bb", "w");
  const KeyValues got = t->range("", "", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].first, "bb");
  EXPECT_EQ(got[1].first, "c");
  t.reset();
  s.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ff::fs
