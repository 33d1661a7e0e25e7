// fireflyer fs: the file system's processes and tools (docs/fs.md).
//   fs mgmtd    the cluster manager
//   fs storage  a storage node with its targets
//   fs meta     a metadata service
//   fs cluster  a local cluster: mgmtd, N storage processes (one chain table), a metadata service
//   fs up       fs cluster, mounted (FUSE) until Ctrl-C;  fs mount: mount a running one
//   fs put / get  stdin into a file / a file to stdout
//   fs chains   create a chain table;  fs routing: print the routing info
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "cli/commands.h"
#include "core/core.h"
#include "fs/fs.h"

extern char** environ;

namespace ff::cli {
namespace {

// SIGINT / SIGTERM blocked in every thread started after this; wait_for_signal takes them.
sigset_t block_stop_signals() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
  return s;
}

int run_mgmtd(const FsArgs& a) {
  const sigset_t s = block_stop_signals();
  fs::MgmtdOptions o;
  o.listen = a.listen;
  o.db_dir = a.db;
  o.heartbeat_ms = a.heartbeat_ms;
  o.lease_ms = a.lease_ms;
  fs::MgmtdServer server(o);
  std::printf("fireflyer fs mgmtd: listening on %s (state in %s)\n", server.address().c_str(),
              a.db.empty() ? "memory" : a.db.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&s, &sig);
  server.stop();
  return 0;
}

int run_storage(const FsArgs& a) {
  const sigset_t s = block_stop_signals();
  fs::StorageOptions o;
  o.node_id = a.node;
  o.listen = a.listen;
  o.mgmtd = a.mgmtd;
  o.data_dir = a.data;
  o.targets = a.targets;
  o.capacity = a.capacity_mb << 20;
  o.fsync = !a.no_fsync;
  fs::StorageServer server(o);
  std::string ids;
  for (const uint32_t t : server.target_ids()) ids += (ids.empty() ? "" : ",") + std::to_string(t);
  std::printf("fireflyer fs storage: node %u listening on %s, targets %s\n", a.node,
              server.address().c_str(), ids.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&s, &sig);
  server.stop();
  return 0;
}

int run_meta(const FsArgs& a) {
  const sigset_t s = block_stop_signals();
  fs::MetaOptions o;
  o.listen = a.listen;
  o.mgmtd = a.mgmtd;
  o.db_dir = a.db;
  o.etcd = a.etcd;
  o.layout.table_id = a.table;
  o.layout.chunk_size = a.chunk_kb << 10;
  o.layout.stripe = a.stripe;
  o.session_lease_ms = a.session_lease_ms;
  FF_CHECK(o.layout.check().empty(), "fs meta: {}", o.layout.check());
  fs::MetaServer server(o);
  std::printf("fireflyer fs meta: listening on %s (metadata in %s)\n", server.address().c_str(),
              !a.etcd.empty() ? ("etcd " + a.etcd).c_str()
              : !a.db.empty() ? a.db.c_str()
                              : "memory");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&s, &sig);
  server.stop();
  return 0;
}

// fs put: stdin into a file of the file system (created or truncated); fs get: a file to stdout.
int run_put_get(const FsArgs& a, bool put) {
  fs::FsClientOptions o;
  o.mgmtd = a.mgmtd;
  fs::FsClient client(o);
  uint64_t fh = 0;
  const int e = client.open(a.path, put ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY, 0644, &fh);
  FF_CHECK(e == 0, "fs {}: {}: {}", put ? "put" : "get", a.path, std::strerror(e));
  std::string buf(1 << 20, '\0');
  uint64_t total = 0;
  for (;;) {
    if (put) {
      const ssize_t n = ::read(0, buf.data(), buf.size());
      FF_CHECK(n >= 0, "fs put: reading stdin: {}", std::strerror(errno));
      if (n == 0) break;
      const int64_t w = client.write(fh, buf.data(), size_t(n));
      FF_CHECK(w == n, "fs put: {}: {}", a.path, std::strerror(w < 0 ? int(-w) : EIO));
      total += uint64_t(n);
    } else {
      const int64_t n = client.read(fh, buf.data(), buf.size());
      FF_CHECK(n >= 0, "fs get: {}: {}", a.path, std::strerror(int(-n)));
      if (n == 0) break;
      FF_CHECK(std::fwrite(buf.data(), 1, size_t(n), stdout) == size_t(n), "fs get: stdout: {}",
               std::strerror(errno));
      total += uint64_t(n);
    }
  }
  const int c = client.close(fh);
  FF_CHECK(c == 0, "fs {}: closing {}: {}", put ? "put" : "get", a.path, std::strerror(c));
  std::fflush(stdout);
  std::fprintf(stderr, "fireflyer fs %s: %s: %llu bytes\n", put ? "put" : "get", a.path.c_str(),
               static_cast<unsigned long long>(total));
  return 0;
}

void print_routing(const fs::Routing& r) {
  std::printf("routing version %llu\n", static_cast<unsigned long long>(r.version));
  for (const auto& [id, address] : r.nodes) std::printf("node %u %s\n", id, address.c_str());
  for (const auto& [id, t] : r.tables) {
    std::string chains;
    for (const uint32_t c : t.chain_ids) chains += (chains.empty() ? "" : ",") + std::to_string(c);
    std::printf("table %u v%u chains %s\n", id, t.version, chains.c_str());
  }
  for (const auto& [id, c] : r.chains) std::printf("%s\n", fs::describe(c).c_str());
  for (const std::string& m : r.meta) std::printf("meta %s\n", m.c_str());
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FF_CHECK(fd >= 0, "fs cluster: no socket for a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  FF_CHECK(ok, "fs cluster: cannot find a free port");
  return ntohs(a.sin_port);
}

pid_t spawn_self(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  static std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  argv.push_back(self.data());
  for (const std::string& s : args) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, self.c_str(), nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  FF_CHECK(rc == 0, "fs cluster: cannot start {}: {}", self, std::strerror(rc));
  return pid;
}

// A local cluster's processes: mgmtd, the storage nodes, a metadata service.
class LocalProcesses {
 public:
  ~LocalProcesses() { stop(); }
  void add(std::string what, pid_t pid) { children_.push_back({std::move(what), pid}); }
  void print(const char* who) const {
    for (const Child& c : children_)
      std::printf("fireflyer fs %s: %s (pid %d)\n", who, c.what.c_str(), int(c.pid));
  }
  // SIGTERM to each, in reverse order of start (clients of mgmtd first), SIGKILL after 5 s.
  void stop() {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      ::kill(it->pid, SIGTERM);
      int st = 0;
      for (int i = 0; i < 100 && ::waitpid(it->pid, &st, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (::waitpid(it->pid, &st, WNOHANG) == 0) {
        ::kill(it->pid, SIGKILL);
        ::waitpid(it->pid, &st, 0);
      }
    }
    children_.clear();
  }

 private:
  struct Child {
    std::string what;
    pid_t pid;
  };
  std::vector<Child> children_;
};

// Starts mgmtd, the storage nodes (chain table a.table once every node registered) and a
// metadata service over RocksDB in the cluster's directory; returns mgmtd's address once every
// chain serves and the metadata service answers.
std::string start_cluster(const FsArgs& a, const char* who, LocalProcesses& procs) {
  FF_CHECK(!a.data.empty(), "fs {}: --data is required", who);
  FF_CHECK(a.nodes >= 1 && a.nodes <= 64, "fs {}: --nodes {} is not in 1..64", who, a.nodes);
  FF_CHECK(a.replicas >= 1 && a.replicas <= a.nodes,
           "fs {}: --replicas {} needs that many nodes (have {})", who, a.replicas, a.nodes);
  std::filesystem::create_directories(a.data);
  const int mport = a.base_port ? a.base_port : free_port();
  const std::string mgmtd = fmt::format("127.0.0.1:{}", mport);
  procs.add(
      "mgmtd " + mgmtd,
      spawn_self({"fs", "mgmtd", "--listen", mgmtd, "--db", a.data + "/mgmtd", "--heartbeat-ms",
                  std::to_string(a.heartbeat_ms), "--lease-ms", std::to_string(a.lease_ms)}));
  for (uint32_t n = 1; n <= a.nodes; ++n) {
    // Without --base-port each node takes a free port itself (the routing has it).
    const std::string listen =
        a.base_port ? fmt::format("127.0.0.1:{}", a.base_port + int(n)) : "127.0.0.1:0";
    std::vector<std::string> args = {"fs",        "storage",
                                     "--node",    std::to_string(n),
                                     "--listen",  listen,
                                     "--mgmtd",   mgmtd,
                                     "--data",    fmt::format("{}/node-{}", a.data, n),
                                     "--targets", std::to_string(a.targets)};
    if (a.capacity_mb) {
      args.push_back("--capacity-mb");
      args.push_back(std::to_string(a.capacity_mb));
    }
    if (a.no_fsync) args.push_back("--no-fsync");
    procs.add(a.base_port ? fmt::format("storage node {} {}", n, listen)
                          : fmt::format("storage node {}", n),
              spawn_self(args));
  }
  procs.add("meta", spawn_self({"fs", "meta", "--mgmtd", mgmtd, "--db", a.data + "/meta", "--table",
                                std::to_string(a.table), "--chunk-kb", std::to_string(a.chunk_kb),
                                "--stripe", std::to_string(a.stripe), "--session-lease-ms",
                                std::to_string(a.session_lease_ms)}));
  fs::ClientOptions co;
  co.mgmtd = mgmtd;
  fs::StorageClient client(co);
  // Every node registered and heartbeating, then the chain table (kept from an earlier run).
  fs::FsStatus made{fs::FsCode::Unavailable, "mgmtd did not answer"};
  for (int i = 0; i < 300; ++i) {
    const fs::Routing r = client.refresh();
    if (r.tables.count(a.table)) {
      made = {};
      break;
    }
    if (r.nodes.size() >= a.nodes) {
      made = fs::create_chains(mgmtd, a.table, a.replicas);
      if (made.ok()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FF_CHECK(made.ok(), "fs {}: cannot create chain table {}: {}", who, a.table, made.str());
  FF_CHECK(fs::wait_all_serving(client, 30000),
           "fs {}: the chains did not all come to serving in 30 s", who);
  for (int i = 0; i < 300 && client.refresh().meta.empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  FF_CHECK(!client.refresh().meta.empty(), "fs {}: the metadata service did not start", who);
  return mgmtd;
}

int run_cluster(const FsArgs& a) {
  const sigset_t s = block_stop_signals();
  LocalProcesses procs;
  const std::string mgmtd = start_cluster(a, "cluster", procs);
  procs.print("cluster");
  fs::ClientOptions co;
  co.mgmtd = mgmtd;
  print_routing(fs::StorageClient(co).refresh());
  std::printf("fireflyer fs cluster: ready (Ctrl-C stops every process)\n");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&s, &sig);
  std::fprintf(stderr, "fireflyer fs cluster: stopping\n");
  procs.stop();
  return 0;
}

// Mounts the file system of `mgmtd` until SIGINT / SIGTERM or an unmount from outside.
void serve_mount(const FsArgs& a, const std::string& mgmtd, const sigset_t& s, const char* who) {
  FF_CHECK(std::filesystem::is_directory(a.mountpoint), "fs {}: {} is not a directory", who,
           a.mountpoint);
  fs::FsClientOptions o;
  o.mgmtd = mgmtd;
  o.deadline_ms = 10000;
  fs::FsClient client(o);
  const fs::MetaResult root = client.stat(fs::kRootInode);
  FF_CHECK(root.ok(), "fs {}: no metadata service answers through mgmtd {}: {}", who, mgmtd,
           std::strerror(root.err));
  fs::MountOptions mo;
  mo.mountpoint = a.mountpoint;
  mo.allow_other = a.allow_other;
  mo.attr_timeout = a.attr_timeout;
  fs::FuseMount mount(client, mo);
  std::printf("fireflyer fs %s: mounted on %s (Ctrl-C unmounts)\n", who, a.mountpoint.c_str());
  std::fflush(stdout);
  std::thread watcher([&mount] {
    mount.wait();  // an unmount from outside ends the command too
    ::kill(::getpid(), SIGTERM);
  });
  int sig = 0;
  sigwait(&s, &sig);
  std::fprintf(stderr, "fireflyer fs %s: unmounting %s\n", who, a.mountpoint.c_str());
  mount.unmount();
  watcher.join();
}

int run_mount(const FsArgs& a) {
  const sigset_t s = block_stop_signals();
  serve_mount(a, a.mgmtd, s, "mount");
  return 0;
}

int run_up(const FsArgs& a) {
  FF_CHECK(std::filesystem::is_directory(a.mountpoint), "fs up: {} is not a directory",
           a.mountpoint);
  const sigset_t s = block_stop_signals();
  LocalProcesses procs;
  const std::string mgmtd = start_cluster(a, "up", procs);
  procs.print("up");
  std::printf("fireflyer fs up: mgmtd %s\n", mgmtd.c_str());
  serve_mount(a, mgmtd, s, "up");
  procs.stop();
  return 0;
}

}  // namespace

void add_fs_command(CLI::App& app, FsArgs& a) {
  CLI::App* fs = app.add_subcommand("fs", "The storage cluster (3FS semantics over gRPC)");
  fs->require_subcommand(1);
  CLI::App* m = fs->add_subcommand("mgmtd", "Run the cluster manager");
  m->add_option("--listen", a.listen, "host:port")->capture_default_str();
  m->add_option("--db", a.db, "RocksDB directory of the cluster state (default: memory)");
  m->add_option("--heartbeat-ms", a.heartbeat_ms)
      ->capture_default_str()
      ->check(CLI::Range(10, 60000));
  m->add_option("--lease-ms", a.lease_ms)->capture_default_str()->check(CLI::Range(20, 600000));
  CLI::App* me = fs->add_subcommand("meta", "Run a metadata service");
  me->add_option("--listen", a.listen, "host:port")->capture_default_str();
  me->add_option("--mgmtd", a.mgmtd, "mgmtd's host:port")->required();
  me->add_option("--db", a.db, "RocksDB directory of the metadata (one service over it)");
  me->add_option("--etcd", a.etcd, "etcd's host:port: metadata shared by any number of services")
      ->excludes("--db");
  me->add_option("--table", a.table, "new files' chain table")->capture_default_str();
  me->add_option("--chunk-kb", a.chunk_kb, "new files' chunk size")->capture_default_str();
  me->add_option("--stripe", a.stripe, "new files' chains")->capture_default_str();
  me->add_option("--session-lease-ms", a.session_lease_ms,
                 "a writer that stops renewing its session is closed for it after this")
      ->capture_default_str()
      ->check(CLI::Range(100, 3600000));
  CLI::App* s = fs->add_subcommand("storage", "Run a storage node");
  s->add_option("--node", a.node, "node id (targets node*100+1 ...)")
      ->required()
      ->check(CLI::Range(1, 39999999));
  s->add_option("--listen", a.listen, "host:port")->capture_default_str();
  s->add_option("--mgmtd", a.mgmtd, "mgmtd's host:port")->required();
  s->add_option("--data", a.data, "directory of the node's targets")->required();
  s->add_option("--targets", a.targets, "targets on this node")
      ->capture_default_str()
      ->check(CLI::Range(1, 99));
  s->add_option("--capacity-mb", a.capacity_mb, "capacity of each target (0: the disk's)");
  s->add_flag("--no-fsync", a.no_fsync,
              "acknowledge updates once every replica's OS has them, without fdatasync "
              "(survives killed processes, not a power loss of a whole chain)");
  CLI::App* c = fs->add_subcommand("cluster", "Run a local cluster: mgmtd and storage processes");
  c->add_option("--data", a.data, "the cluster's directory")->required();
  c->add_option("--nodes", a.nodes)->capture_default_str();
  c->add_option("--targets-per-node", a.targets)->capture_default_str()->check(CLI::Range(1, 99));
  c->add_option("--replicas", a.replicas)->capture_default_str();
  c->add_option("--base-port", a.base_port,
                "mgmtd's port; node n listens on it + n (0: free ports)");
  c->add_option("--capacity-mb", a.capacity_mb, "capacity of each target (0: the disk's)");
  c->add_flag("--no-fsync", a.no_fsync, "storage nodes without fdatasync (see fs storage)");
  c->add_option("--heartbeat-ms", a.heartbeat_ms)
      ->capture_default_str()
      ->check(CLI::Range(10, 60000));
  c->add_option("--lease-ms", a.lease_ms)->capture_default_str()->check(CLI::Range(20, 600000));
  c->add_option("--chunk-kb", a.chunk_kb, "new files' chunk size")->capture_default_str();
  c->add_option("--stripe", a.stripe, "new files' chains")->capture_default_str();
  CLI::App* up = fs->add_subcommand(
      "up", "Start a whole file system on this machine (mgmtd, storage, metadata) and mount it");
  up->add_option("--data", a.data, "the file system's directory")->required();
  up->add_option("--mount", a.mountpoint, "where to mount it (an existing directory)")->required();
  up->add_option("--nodes", a.nodes, "storage processes")->capture_default_str();
  up->add_option("--targets-per-node", a.targets)->capture_default_str()->check(CLI::Range(1, 99));
  up->add_option("--replicas", a.replicas)->capture_default_str();
  up->add_option("--capacity-mb", a.capacity_mb, "capacity of each target (0: the disk's)");
  up->add_flag("--no-fsync", a.no_fsync, "storage nodes without fdatasync (see fs storage)");
  up->add_option("--chunk-kb", a.chunk_kb, "new files' chunk size")->capture_default_str();
  up->add_option("--stripe", a.stripe, "new files' chains")->capture_default_str();
  up->add_flag("--allow-other", a.allow_other, "let other users use the mount");
  up->add_option("--attr-timeout", a.attr_timeout, "seconds the kernel caches attributes")
      ->capture_default_str();
  CLI::App* mo = fs->add_subcommand("mount", "Mount a running file system (FUSE)");
  mo->add_option("mountpoint", a.mountpoint, "an existing directory")->required();
  mo->add_option("--mgmtd", a.mgmtd, "mgmtd's host:port")->required();
  mo->add_flag("--allow-other", a.allow_other, "let other users use the mount");
  mo->add_option("--attr-timeout", a.attr_timeout, "seconds the kernel caches attributes")
      ->capture_default_str();
  CLI::App* ch = fs->add_subcommand("chains", "Create a chain table from the free targets");
  ch->add_option("--mgmtd", a.mgmtd)->required();
  ch->add_option("--table", a.table)->capture_default_str();
  ch->add_option("--replicas", a.replicas)->capture_default_str();
  for (const bool put : {true, false}) {
    CLI::App* p = fs->add_subcommand(
        put ? "put" : "get",
        put ? "Write stdin into a file (created or truncated)" : "Write a file to stdout");
    p->add_option("--mgmtd", a.mgmtd)->required();
    p->add_option("path", a.path, "/dir/file in the file system")->required();
  }
  CLI::App* r = fs->add_subcommand("routing", "Print the routing info");
  r->add_option("--mgmtd", a.mgmtd)->required();
}

int run_fs(CLI::App& fs, const FsArgs& a) {
  if (fs.got_subcommand("mgmtd")) return run_mgmtd(a);
  if (fs.got_subcommand("storage")) return run_storage(a);
  if (fs.got_subcommand("meta")) return run_meta(a);
  if (fs.got_subcommand("put")) return run_put_get(a, true);
  if (fs.got_subcommand("get")) return run_put_get(a, false);
  if (fs.got_subcommand("cluster")) return run_cluster(a);
  if (fs.got_subcommand("up")) return run_up(a);
  if (fs.got_subcommand("mount")) return run_mount(a);
  if (fs.got_subcommand("chains")) {
    const fs::FsStatus st = fs::create_chains(a.mgmtd, a.table, a.replicas);
    FF_CHECK(st.ok(), "fs chains: {}", st.str());
    std::printf("chain table %u created\n", a.table);
    return 0;
  }
  fs::ClientOptions co;
  co.mgmtd = a.mgmtd;
  co.deadline_ms = 3000;
  fs::StorageClient client(co);
  const fs::Routing r = client.refresh();
  FF_CHECK(r.version > 0 || !r.nodes.empty(), "fs routing: no answer from mgmtd at {}", a.mgmtd);
  print_routing(r);
  return 0;
}

}  // namespace ff::cli
