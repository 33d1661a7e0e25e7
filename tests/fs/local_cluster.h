// A storage cluster of real processes on localhost for the tests: `fireflyer fs mgmtd` on a port
// fixed at construction (it comes back on it after a restart) and one `fireflyer fs storage` per
// node on a port of its own choosing (a restarted node registers its new address), each
// process's output in <dir>/logs. The test kills and restarts them.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fs/fs.h"

extern char** environ;

namespace ff::fs::testing {

inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct ClusterOptions {
  uint32_t nodes = 3;
  uint32_t targets = 2;
  uint32_t replicas = 3;
  uint64_t capacity_mb = 0;
  int heartbeat_ms = 100;
  int lease_ms = 1500;  // a loaded 2-core machine can starve a process for a while
};

class LocalCluster {
 public:
  explicit LocalCluster(ClusterOptions o = {}) : o_(o) {
    dir_ =
        (std::filesystem::temp_directory_path() /
         ("ff_fs_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
          "_" + std::to_string(::getpid())))
            .string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/logs");
    mgmtd_ = "127.0.0.1:" + std::to_string(free_port());
  }
  ~LocalCluster() {
    client_.reset();
    for (auto& [name, pid] : pids_) stop(pid, SIGKILL);
    if (!::testing::Test::HasFailure() && !std::getenv("FF_FS_KEEP"))
      std::filesystem::remove_all(dir_);
  }

  // mgmtd, the storage nodes, chain table 1, every chain serving.
  void start() {
    start_mgmtd();
    for (uint32_t n = 1; n <= o_.nodes; ++n) start_storage(n);
    ClientOptions co;
    co.mgmtd = mgmtd_;
    co.deadline_ms = 20000;
    client_ = std::make_unique<StorageClient>(co);
    FsStatus made{FsCode::Unavailable, "no routing"};
    for (int i = 0; i < 200 && !made.ok(); ++i) {
      if (client_->refresh().nodes.size() >= o_.nodes) made = create_chains(mgmtd_, 1, o_.replicas);
      if (!made.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(made.ok()) << made.str();
    ASSERT_TRUE(wait_all_serving(*client_, 20000)) << routing_text();
  }

  // A metadata service over RocksDB in <dir>/meta-<n> (or etcd); waits until mgmtd lists it.
  void start_meta(int n = 1, const std::string& etcd = "", int session_lease_ms = 30000,
                  uint32_t chunk_kb = 64, uint32_t stripe = 4) {
    std::vector<std::string> args = {"fs",
                                     "meta",
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--mgmtd",
                                     mgmtd_,
                                     "--chunk-kb",
                                     std::to_string(chunk_kb),
                                     "--stripe",
                                     std::to_string(stripe),
                                     "--session-lease-ms",
                                     std::to_string(session_lease_ms)};
    if (etcd.empty()) {
      args.push_back("--db");
      args.push_back(dir_ + "/meta-" + std::to_string(n));
    } else {
      args.push_back("--etcd");
      args.push_back(etcd);
    }
    const std::string log = dir_ + "/logs/meta-" + std::to_string(n) + ".log";
    const size_t before = count_lines(log, "listening on");
    spawn("meta-" + std::to_string(n), args);
    for (int i = 0; i < 400 && count_lines(log, "listening on") == before; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    ASSERT_GT(count_lines(log, "listening on"), before) << "meta " << n << " did not start";
    // Listed by mgmtd: the address the service printed.
    std::string address;
    std::ifstream f(log);
    for (std::string line; std::getline(f, line);)
      if (const size_t p = line.find("listening on "); p != std::string::npos)
        address = line.substr(p + 13, line.find(' ', p + 13) - (p + 13));
    const auto listed = [&] {
      const auto m = client_->refresh().meta;
      return std::find(m.begin(), m.end(), address) != m.end();
    };
    for (int i = 0; i < 400 && !listed(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    ASSERT_TRUE(listed()) << "mgmtd does not list meta " << n << " at " << address;
  }
  // A CLI process of the test's own (output in <dir>/logs/<name>.log) reading `stdin_fd`.
  pid_t spawn_with_stdin(const std::string& name, const std::vector<std::string>& args,
                         int stdin_fd) {
    spawn(name, args, stdin_fd);
    const pid_t pid = pids_[name];
    pids_.erase(name);
    return pid;
  }
  void kill_meta(int n = 1, int sig = SIGKILL) { stop(pids_["meta-" + std::to_string(n)], sig); }

  void start_mgmtd() {
    spawn("mgmtd", {"fs", "mgmtd", "--listen", mgmtd_, "--db", dir_ + "/mgmtd", "--heartbeat-ms",
                    std::to_string(o_.heartbeat_ms), "--lease-ms", std::to_string(o_.lease_ms)});
  }
  void start_storage(uint32_t n) {
    std::vector<std::string> args = {"fs",        "storage",
                                     "--node",    std::to_string(n),
                                     "--listen",  "127.0.0.1:0",
                                     "--mgmtd",   mgmtd_,
                                     "--data",    dir_ + "/node-" + std::to_string(n),
                                     "--targets", std::to_string(o_.targets)};
    if (o_.capacity_mb) {
      args.push_back("--capacity-mb");
      args.push_back(std::to_string(o_.capacity_mb));
    }
    // Registered (it prints its address after mgmtd took its targets out of their chains),
    // so that a wait for serving chains that follows cannot see the old routing.
    const std::string log = dir_ + "/logs/node-" + std::to_string(n) + ".log";
    const size_t before = count_lines(log, "listening on");
    spawn("node-" + std::to_string(n), args);
    for (int i = 0; i < 400 && count_lines(log, "listening on") == before; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    ASSERT_GT(count_lines(log, "listening on"), before) << "node " << n << " did not start";
  }
  static size_t count_lines(const std::string& path, const std::string& needle) {
    std::ifstream f(path);
    size_t n = 0;
    for (std::string line; std::getline(f, line);) n += line.find(needle) != std::string::npos;
    return n;
  }
  void kill_mgmtd(int sig = SIGKILL) { stop(pids_["mgmtd"], sig); }
  void kill_storage(uint32_t n, int sig = SIGKILL) {
    stop(pids_["node-" + std::to_string(n)], sig);
  }

  StorageClient& client() { return *client_; }
  const std::string& mgmtd() const { return mgmtd_; }
  const std::string& dir() const { return dir_; }
  std::string target_dir(uint32_t target) const {
    return dir_ + "/node-" + std::to_string(target / 100) + "/target-" + std::to_string(target);
  }
  std::string routing_text() {
    std::string s;
    for (const auto& [id, c] : client_->refresh().chains) s += describe(c) + "\n";
    return s;
  }
  // Every chain of routing has exactly `n` serving targets.
  bool wait_serving_count(size_t n, int timeout_ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    Routing r = client_->refresh();
    while (std::chrono::steady_clock::now() < until) {
      bool all = !r.chains.empty();
      for (const auto& [id, c] : r.chains) all &= c.serving().size() == n;
      if (all) return true;
      r = client_->refresh(r.version, 200);
    }
    return false;
  }

 private:
  void spawn(const std::string& name, const std::vector<std::string>& args, int stdin_fd = -1) {
    std::vector<char*> argv;
    std::string self = FF_CLI_PATH;
    argv.push_back(self.data());
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = dir_ + "/logs/" + name + ".log";
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (stdin_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdin_fd, 0);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, self.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ASSERT_EQ(rc, 0) << "cannot start " << self;
    pids_[name] = pid;
  }
  static void stop(pid_t& pid, int sig) {
    if (pid <= 0) return;
    ::kill(pid, sig);
    int st = 0;
    ::waitpid(pid, &st, 0);
    pid = 0;
  }

  ClusterOptions o_;
  std::string dir_, mgmtd_;
  std::map<std::string, pid_t> pids_;
  std::unique_ptr<StorageClient> client_;
};

}  // namespace ff::fs::testing
