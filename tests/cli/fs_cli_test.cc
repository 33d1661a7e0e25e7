// fireflyer fs: a local cluster started, used, stopped with SIGINT (no process left behind) and
// started again on the same directory (chains and data kept); fs routing; fs up mounting a
// whole file system, unmounted cleanly by Ctrl-C or an outside umount; one-line errors.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "cli_run.h"
#include "fs/fs.h"

extern char** environ;

namespace {

namespace stdfs = std::filesystem;
using ff::testing::CliRun;
using ff::testing::run_cli;

class CliFs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = stdfs::temp_directory_path() / ("ff_cli_fs_" + std::to_string(::getpid()));
    stdfs::remove_all(dir_);
    stdfs::create_directories(dir_);
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    for (const pid_t p : children_) ::kill(p, SIGKILL);
    // A mount left by a failed test would keep the directory.
    ::umount2((dir_ / "mnt").c_str(), MNT_DETACH);
    stdfs::remove_all(dir_);
  }

  // Starts `fireflyer fs cluster` and waits for "ready"; returns its output so far.
  std::string start_cluster() {
    return start(
        {"cluster", "--data", (dir_ / "data").string(), "--nodes", "3", "--targets-per-node", "2",
         "--replicas", "3", "--heartbeat-ms", "100", "--lease-ms", "1500"},
        "ready");
  }

  // `fireflyer fs <args>`, waiting for `ready` in its output.
  std::string start(const std::vector<std::string>& fs_args, const std::string& ready) {
    const std::string log = (dir_ / "cluster.log").string();
    std::vector<std::string> args = {FF_CLI_PATH, "fs"};
    args.insert(args.end(), fs_args.begin(), fs_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    EXPECT_EQ(posix_spawn(&pid_, FF_CLI_PATH, &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    std::string out;
    for (int i = 0; i < 600 && out.find(ready) == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream f(log);
      out.assign(std::istreambuf_iterator<char>(f), {});
    }
    EXPECT_NE(out.find(ready), std::string::npos) << out;
    children_.clear();
    const std::regex pid_re(R"(\(pid (\d+)\))");
    for (std::sregex_iterator it(out.begin(), out.end(), pid_re), end; it != end; ++it)
      children_.push_back(pid_t(std::stoi((*it)[1])));
    std::smatch m;
    if (std::regex_search(out, m, std::regex(R"(: mgmtd (\S+) \(pid)"))) mgmtd_ = m[1];
    return out;
  }

  // SIGINT: the cluster stops every process and exits 0.
  void stop_cluster() {
    ASSERT_EQ(::kill(pid_, SIGINT), 0);
    int st = 0;
    pid_t got = 0;
    for (int i = 0; i < 300 && got == 0; ++i) {
      got = ::waitpid(pid_, &st, WNOHANG);
      if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(got, pid_) << "fireflyer fs did not stop within 15 s";
    pid_ = 0;
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (const pid_t p : children_)
      EXPECT_TRUE(::kill(p, 0) == -1 && errno == ESRCH) << "process " << p << " left behind";
    children_.clear();
  }

  stdfs::path dir_;
  pid_t pid_ = 0;
  std::vector<pid_t> children_;
  std::string mgmtd_;
};

TEST_F(CliFs, ClusterRunsStopsAndResumesWithItsData) {
  const std::string out = start_cluster();
  EXPECT_EQ(children_.size(), 5u) << out;  // mgmtd, 3 storage nodes, a metadata service
  ASSERT_FALSE(mgmtd_.empty()) << out;
  const CliRun routing = run_cli("fs routing --mgmtd " + mgmtd_);
  EXPECT_EQ(routing.status, 0) << routing.out;
  EXPECT_NE(routing.out.find("table 1 v1 chains 1,2"), std::string::npos) << routing.out;
  EXPECT_EQ(std::count(routing.out.begin(), routing.out.end(), '\n'), 8) << routing.out;
  EXPECT_NE(routing.out.find("\nmeta 127.0.0.1:"), std::string::npos) << routing.out;
  {
    ff::fs::ClientOptions o;
    o.mgmtd = mgmtd_;
    ff::fs::StorageClient c(o);
    const auto r = c.refresh();
    const ff::fs::WriteResult w =
        c.write(r.chain_for(1, 3, 0), ff::fs::ChunkId::of(3, 0), 0, "kept", 65536);
    ASSERT_TRUE(w.status.ok()) << w.status.str();
  }
  stop_cluster();

  // Every process starts again on the same directory: mgmtd has the chains, the nodes their
  // chunks; the chains come back to serving through recovery.
  start_cluster();
  ff::fs::ClientOptions o;
  o.mgmtd = mgmtd_;
  ff::fs::StorageClient c(o);
  const auto r = c.refresh();
  ASSERT_EQ(r.tables.size(), 1u);
  const ff::fs::ReadResult got = c.read({r.chain_for(1, 3, 0), ff::fs::ChunkId::of(3, 0), 0, 4});
  EXPECT_TRUE(got.status.ok()) << got.status.str();
  EXPECT_EQ(got.data, "kept");
  stop_cluster();
}

bool mounted(const std::string& dir) {
  std::ifstream f("/proc/mounts");
  for (std::string line; std::getline(f, line);)
    if (line.find(" " + dir + " ") != std::string::npos) return true;
  return false;
}

TEST_F(CliFs, UpMountsAndCtrlCUnmountsCleanly) {
  if (::access("/dev/fuse", R_OK | W_OK) != 0 || ::geteuid() != 0)
    GTEST_SKIP() << "needs /dev/fuse and root";
  const std::string mnt = (dir_ / "mnt").string();
  stdfs::create_directories(mnt);
  const std::vector<std::string> up = {
      "up", "--data", (dir_ / "data").string(), "--mount", mnt, "--nodes", "1", "--replicas", "1"};
  std::string out = start(up, "mounted on");
  EXPECT_EQ(children_.size(), 3u) << out;  // mgmtd, a storage node, a metadata service
  ASSERT_TRUE(mounted(mnt)) << out;
  {
    std::ofstream f(mnt + "/hello.txt");
    f << "hello through FUSE\n";
  }
  stdfs::create_directories(mnt + "/a/b");
  stop_cluster();  // SIGINT: unmounted, every process gone, exit 0
  EXPECT_FALSE(mounted(mnt));
  EXPECT_TRUE(stdfs::is_empty(mnt));

  out = start(up, "mounted on");
  {
    std::ifstream f(mnt + "/hello.txt");
    std::string line;
    std::getline(f, line);
    EXPECT_EQ(line, "hello through FUSE") << out;
  }
  EXPECT_TRUE(stdfs::is_directory(mnt + "/a/b"));
  // An unmount from outside ends the command too.
  ASSERT_EQ(std::system(("umount " + mnt).c_str()), 0);
  int st = 0;
  pid_t got = 0;
  for (int i = 0; i < 300 && got == 0; ++i) {
    got = ::waitpid(pid_, &st, WNOHANG);
    if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(got, pid_) << "fs up did not end after umount";
  pid_ = 0;
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  for (const pid_t p : children_)
    EXPECT_TRUE(::kill(p, 0) == -1 && errno == ESRCH) << "process " << p << " left behind";
  children_.clear();
}

TEST_F(CliFs, BadArgumentsGiveOneLineErrors) {
  CliRun r = run_cli("fs cluster --data " + (dir_ / "d").string() + " --nodes 2 --replicas 3",
                     "2>&1 >/dev/null");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "error: fs cluster: --replicas 3 needs that many nodes (have 2)\n");
  r = run_cli("fs chains --mgmtd 127.0.0.1:1 --table 1", "2>&1 >/dev/null");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out.rfind("error: fs chains: UNAVAILABLE", 0), 0u) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  r = run_cli("fs storage --node 0 --mgmtd 127.0.0.1:1 --data " + dir_.string());
  EXPECT_NE(r.status, 0);
  r = run_cli("fs mount " + (dir_ / "none").string() + " --mgmtd 127.0.0.1:1", "2>&1 >/dev/null");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "error: fs mount: " + (dir_ / "none").string() + " is not a directory\n");
  r = run_cli("fs meta --mgmtd 127.0.0.1:1 --chunk-kb 3", "2>&1 >/dev/null");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("chunk size 3072 is not a power of two"), std::string::npos) << r.out;
  r = run_cli("fs mgmtd --listen not-an-address", "2>&1 >/dev/null");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("cannot listen on not-an-address"), std::string::npos) << r.out;
}

}  // namespace
