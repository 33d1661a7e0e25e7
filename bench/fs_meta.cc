// Benchmark of the file system as applications use it (docs/fs.md): metadata operations
// (mdtest-like: every thread creates, stats and removes files in a directory of its own) and
// sequential and random reads and writes, through the FUSE mount and through the native API
// (FsClient; reads batched as the batch API does), each next to the same workload on the local
// file system of the same disk, in the same run. The cluster runs in this process: mgmtd, three
// storage nodes (two targets each, replication 3), a metadata service over RocksDB; reads are
// cold on both sides (the storage's and the local file's pages dropped first).
//   BENCH fs_meta <case> <metric>=... local_<metric>=... baseline=local_fs ratio=...
// Options: --dir DIR (/tmp/ff_bench_fs_meta), --threads N (4), --files N per thread (500),
// --mb MB for the sequential cases (256), --ios N random 4 KiB I/Os (2000). The FUSE cases need
// root and /dev/fuse (skipped otherwise).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "core/core.h"
#include "fs/fs.h"

namespace {

using ff::bench::now_seconds;
namespace fs = ff::fs;

template <class Fn>
double run_threads(int threads, Fn&& fn) {
  std::vector<std::thread> ts;
  const double t0 = now_seconds();
  for (int t = 0; t < threads; ++t) ts.emplace_back([&, t] { fn(t); });
  for (auto& t : ts) t.join();
  return now_seconds() - t0;
}

void drop_cache(const std::string& dir) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// A workload's operations on one side (POSIX paths under a root, or the native API).
struct Side {
  std::string name;
  std::function<void(int t)> mkdir_thread;
  std::function<bool(int t, int i)> create, stat, remove;
  std::function<bool(const std::string& data, uint64_t total)> seq_write;  // file "seq"
  std::function<bool(uint64_t total)> seq_read;
  std::function<bool(const std::vector<uint64_t>& offsets)> rand_read;  // 4 KiB each
  std::function<bool(const std::vector<uint64_t>& offsets)> rand_write;
  std::function<void()> drop;
};

Side posix_side(const std::string& name, const std::string& root, const std::string& drop_dir) {
  Side s;
  s.name = name;
  const auto path = [root](int t, int i) {
    return root + "/t" + std::to_string(t) + "/f" + std::to_string(i);
  };
  s.mkdir_thread = [root](int t) { ::mkdir((root + "/t" + std::to_string(t)).c_str(), 0755); };
  s.create = [path](int t, int i) {
    const int fd = ::open(path(t, i).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    return fd >= 0 && ::close(fd) == 0;
  };
  s.stat = [path](int t, int i) {
    struct stat st;
    return ::stat(path(t, i).c_str(), &st) == 0;
  };
  s.remove = [path](int t, int i) { return ::unlink(path(t, i).c_str()) == 0; };
  const std::string seq = root + "/seq";
  s.seq_write = [seq](const std::string& data, uint64_t total) {
    const int fd = ::open(seq.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    bool ok = fd >= 0;
    for (uint64_t done = 0; ok && done < total; done += data.size())
      ok = ::write(fd, data.data(), data.size()) == ssize_t(data.size());
    return ok && ::fsync(fd) == 0 && ::close(fd) == 0;
  };
  s.seq_read = [seq](uint64_t total) {
    const int fd = ::open(seq.c_str(), O_RDONLY);
    std::string buf(1 << 20, '\0');
    uint64_t got = 0;
    for (ssize_t n; fd >= 0 && (n = ::read(fd, buf.data(), buf.size())) > 0;) got += uint64_t(n);
    ::close(fd);
    return got == total;
  };
  s.rand_read = [seq](const std::vector<uint64_t>& offs) {
    const int fd = ::open(seq.c_str(), O_RDONLY);
    char buf[4096];
    bool ok = fd >= 0;
    for (const uint64_t o : offs) ok &= ::pread(fd, buf, 4096, off_t(o)) == 4096;
    ::close(fd);
    return ok;
  };
  s.rand_write = [seq](const std::vector<uint64_t>& offs) {
    const int fd = ::open(seq.c_str(), O_WRONLY);
    char buf[4096];
    std::memset(buf, 'r', sizeof buf);
    bool ok = fd >= 0;
    for (const uint64_t o : offs) ok &= ::pwrite(fd, buf, 4096, off_t(o)) == 4096;
    return ok && ::fsync(fd) == 0 && ::close(fd) == 0;
  };
  s.drop = [drop_dir] { drop_cache(drop_dir); };
  return s;
}

Side native_side(fs::FsClient& c, const std::string& data_dir) {
  Side s;
  s.name = "native";
  auto dirs = std::make_shared<std::vector<uint64_t>>(64, 0);
  s.mkdir_thread = [&c, dirs](int t) {
    (*dirs)[size_t(t)] = c.mkdir(fs::kRootInode, "n" + std::to_string(t), 0755).inode.id;
  };
  s.create = [&c, dirs](int t, int i) {
    uint64_t fh = 0;
    return c.create((*dirs)[size_t(t)], "f" + std::to_string(i), 0644, {}, &fh) == 0 &&
           c.close(fh) == 0;
  };
  s.stat = [&c, dirs](int t, int i) {
    return c.lookup((*dirs)[size_t(t)], "f" + std::to_string(i)).ok();
  };
  s.remove = [&c, dirs](int t, int i) {
    return c.unlink((*dirs)[size_t(t)], "f" + std::to_string(i)) == 0;
  };
  s.seq_write = [&c](const std::string& data, uint64_t total) {
    uint64_t fh = 0;
    bool ok = c.open("/nseq", O_CREAT | O_TRUNC | O_WRONLY, 0644, &fh) == 0;
    for (uint64_t done = 0; ok && done < total; done += data.size())
      ok = c.pwrite(fh, data.data(), data.size(), done) == int64_t(data.size());
    return c.close(fh) == 0 && ok;
  };
  // Reads in batches of eight 1 MiB reads (one storage call per node for a batch).
  s.seq_read = [&c](uint64_t total) {
    uint64_t fh = 0;
    if (c.open("/nseq", O_RDONLY, 0, &fh) != 0) return false;
    std::string buf(8 << 20, '\0');
    uint64_t got = 0;
    for (uint64_t off = 0; off < total; off += buf.size()) {
      std::vector<fs::FsClient::ReadIo> ios;
      for (size_t k = 0; k < 8; ++k)
        ios.push_back({fh, buf.data() + (k << 20), size_t(1) << 20, off + (k << 20)});
      for (const int64_t r : c.batch_pread(ios)) got += r > 0 ? uint64_t(r) : 0;
    }
    c.close(fh);
    return got == total;
  };
  s.rand_read = [&c](const std::vector<uint64_t>& offs) {
    uint64_t fh = 0;
    if (c.open("/nseq", O_RDONLY, 0, &fh) != 0) return false;
    std::string buf(32 * 4096, '\0');
    bool ok = true;
    for (size_t i = 0; i < offs.size(); i += 32) {
      std::vector<fs::FsClient::ReadIo> ios;
      for (size_t k = i; k < std::min(offs.size(), i + 32); ++k)
        ios.push_back({fh, buf.data() + (k - i) * 4096, 4096, offs[k]});
      for (const int64_t r : c.batch_pread(ios)) ok &= r == 4096;
    }
    c.close(fh);
    return ok;
  };
  s.rand_write = [&c](const std::vector<uint64_t>& offs) {
    uint64_t fh = 0;
    if (c.open("/nseq", O_WRONLY, 0, &fh) != 0) return false;
    char buf[4096];
    std::memset(buf, 'r', sizeof buf);
    bool ok = true;
    for (const uint64_t o : offs) ok &= c.pwrite(fh, buf, 4096, o) == 4096;
    return c.close(fh) == 0 && ok;
  };
  s.drop = [data_dir] { drop_cache(data_dir); };
  return s;
}

struct Figures {
  double create = 0, stat = 0, remove = 0;                            // ops/s
  double seq_write = 0, seq_read = 0, rand_read = 0, rand_write = 0;  // MB/s
};

Figures measure(Side& s, int threads, int files, uint64_t mb, int ios) {
  Figures f;
  std::atomic<int> errors{0};
  const int n = threads * files;
  for (int t = 0; t < threads; ++t) s.mkdir_thread(t);
  const auto phase = [&](const std::function<bool(int, int)>& op) {
    const double secs = run_threads(threads, [&](int t) {
      for (int i = 0; i < files; ++i)
        if (!op(t, i)) ++errors;
    });
    return n / secs;
  };
  f.create = phase(s.create);
  f.stat = phase(s.stat);
  f.remove = phase(s.remove);
  const uint64_t total = mb << 20;
  const std::string data(1 << 20, 'd');
  double t0 = now_seconds();
  if (!s.seq_write(data, total)) ++errors;
  f.seq_write = double(mb) / (now_seconds() - t0);
  s.drop();
  t0 = now_seconds();
  if (!s.seq_read(total)) ++errors;
  f.seq_read = double(mb) / (now_seconds() - t0);
  std::mt19937_64 rng(42);
  std::vector<uint64_t> offs;
  offs.resize(size_t(ios));
  for (auto& o : offs) o = (rng() % (total / 4096)) * 4096;
  s.drop();
  t0 = now_seconds();
  if (!s.rand_read(offs)) ++errors;
  f.rand_read = ios * 4096.0 / (1 << 20) / (now_seconds() - t0);
  t0 = now_seconds();
  if (!s.rand_write(offs)) ++errors;
  f.rand_write = ios * 4096.0 / (1 << 20) / (now_seconds() - t0);
  FF_CHECK(errors == 0, "bench fs_meta: {}: {} operations failed", s.name, errors.load());
  return f;
}

void report(const std::string& side, const Figures& f, const Figures& local) {
  const auto line = [&](const char* c, const char* metric, double v, double l) {
    std::printf("BENCH fs_meta %s_%s %s=%.1f local_%s=%.1f baseline=local_fs ratio=%.3f\n",
                side.c_str(), c, metric, v, metric, l, l > 0 ? v / l : 0.0);
  };
  line("create", "ops_per_s", f.create, local.create);
  line("stat", "ops_per_s", f.stat, local.stat);
  line("remove", "ops_per_s", f.remove, local.remove);
  line("seq_write", "MBps", f.seq_write, local.seq_write);
  line("seq_read", "MBps", f.seq_read, local.seq_read);
  line("rand_read_4k", "MBps", f.rand_read, local.rand_read);
  line("rand_write_4k", "MBps", f.rand_write, local.rand_write);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string dir = "/tmp/ff_bench_fs_meta";
  int threads = 4, files = 500, ios = 2000;
  uint64_t mb = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--dir")
      dir = argv[i + 1];
    else if (a == "--threads")
      threads = std::clamp(std::atoi(argv[i + 1]), 1, 64);
    else if (a == "--files")
      files = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--mb")
      mb = std::max<uint64_t>(1, std::strtoull(argv[i + 1], nullptr, 10));
    else if (a == "--ios")
      ios = std::max(1, std::atoi(argv[i + 1]));
  }
  try {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir + "/local");
    Side local = posix_side("local", dir + "/local", dir + "/local");
    const Figures lf = measure(local, threads, files, mb, ios);
    std::printf(
        "local fs (%s): create %.0f, stat %.0f, remove %.0f ops/s; seq write %.0f, read %.0f "
        "MB/s; 4 KiB random read %.1f, write %.1f MB/s\n",
        dir.c_str(), lf.create, lf.stat, lf.remove, lf.seq_write, lf.seq_read, lf.rand_read,
        lf.rand_write);

    fs::MgmtdOptions mo;
    mo.heartbeat_ms = 200;
    mo.lease_ms = 2000;
    fs::MgmtdServer mgmtd(mo);
    std::vector<std::unique_ptr<fs::StorageServer>> nodes;
    for (uint32_t n = 1; n <= 3; ++n) {
      fs::StorageOptions so;
      so.node_id = n;
      so.mgmtd = mgmtd.address();
      so.data_dir = dir + "/node-" + std::to_string(n);
      so.targets = 2;
      nodes.push_back(std::make_unique<fs::StorageServer>(so));
    }
    fs::ClientOptions co;
    co.mgmtd = mgmtd.address();
    fs::StorageClient storage(co);
    fs::FsStatus made{fs::FsCode::Unavailable, "not tried"};
    for (int i = 0; i < 100 && !made.ok(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      made = fs::create_chains(mgmtd.address(), 1, 3);
    }
    FF_CHECK(made.ok(), "bench fs_meta: {}", made.str());
    FF_CHECK(fs::wait_all_serving(storage, 20000), "bench fs_meta: chains not serving");
    fs::MetaOptions meta_o;
    meta_o.mgmtd = mgmtd.address();
    meta_o.db_dir = dir + "/meta";
    meta_o.layout.stripe = 2;
    fs::MetaServer meta(meta_o);
    fs::FsClientOptions fo;
    fo.mgmtd = mgmtd.address();
    fs::FsClient client(fo);
    for (int i = 0; i < 100 && !client.stat(fs::kRootInode).ok(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));

    // Bounds measured here: a metadata round trip (a stat of / through gRPC and a read
    // transaction) and the store's synced commits (the same disk, `threads` committers), of which
    // a create needs two (create, close) and a remove one.
    {
      std::atomic<uint64_t> n{0};
      const double secs = run_threads(threads, [&](int) {
        const double until = now_seconds() + 1.0;
        while (now_seconds() < until)
          if (client.stat(fs::kRootInode).ok()) ++n;
      });
      auto store = fs::open_rocksdb_txn_store(dir + "/bound-txn");
      std::atomic<uint64_t> commits{0};
      const double csecs = run_threads(threads, [&](int t) {
        const double until = now_seconds() + 1.0;
        for (uint64_t i = 0; now_seconds() < until; ++i)
          if (fs::run_txn(*store, [&](fs::Txn& x) {
                x.set("k" + std::to_string(t) + "-" + std::to_string(i), "v");
              }) == fs::TxnStatus::Committed)
            ++commits;
      });
      std::printf("bounds: metadata round trip %.0f ops/s; store commits %.0f/s (%d threads)\n",
                  double(n.load()) / secs, double(commits.load()) / csecs, threads);
    }

    if (!std::getenv("FF_BENCH_NO_NATIVE")) {
      Side native = native_side(client, dir);
      report("native", measure(native, threads, files, mb, ios), lf);
    }

    if (std::getenv("FF_BENCH_NO_FUSE")) {
    } else if (::access("/dev/fuse", R_OK | W_OK) == 0 && ::geteuid() == 0) {
      const std::string mnt = dir + "/mnt";
      std::filesystem::create_directories(mnt);
      fs::MountOptions m;
      m.mountpoint = mnt;
      fs::FuseMount mount(client, m);
      std::filesystem::create_directories(mnt + "/fuse");
      Side fuse = posix_side("fuse", mnt + "/fuse", dir);
      report("fuse", measure(fuse, threads, files, mb, ios), lf);
    } else {
      std::printf("fuse cases skipped: they need root and /dev/fuse\n");
    }
    std::filesystem::remove_all(dir + "/local");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
