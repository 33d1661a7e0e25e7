// Benchmark of the storage cluster (docs/fs.md): chunk writes and reads through the client
// against mgmtd and three storage servers (two targets each, replication 3, all in this
// process, over gRPC on loopback), next to the raw throughput of the same disk measured in the
// same run: O_DIRECT sequential write (then fdatasync) and read of a file of the same size.
// Every replica lands on the one disk here, so the write bound is raw write / 3. Reads are cold:
// the block files' pages are dropped (posix_fadvise DONTNEED) before each read pass.
//   BENCH fs <case> chunk=... threads=... MBps=... raw_MBps=... baseline=<raw...> ratio=...
// Options: --dir DIR (default /tmp/ff_bench_fs), --mb MB per case (256), --threads N (4),
// --chunk 1M|64K and --fsync yes|no for one case.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "core/core.h"
#include "fs/fs.h"

namespace {

using ff::bench::now_seconds;

struct Raw {
  double write_mbps = 0, read_mbps = 0;
  double flushes_per_s = 0;  // 64 KiB O_DIRECT overwrite + fdatasync, one after the other
};

// O_DIRECT sequential write then read of `bytes` in 1 MiB requests.
Raw raw_disk(const std::string& dir, uint64_t bytes) {
  const std::string path = dir + "/raw.bin";
  constexpr size_t kReq = 1 << 20;
  void* buf = nullptr;
  FF_CHECK(posix_memalign(&buf, 4096, kReq) == 0, "bench fs: no aligned buffer");
  std::memset(buf, 0x5a, kReq);
  Raw r;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0644);
  FF_CHECK(fd >= 0, "bench fs: {}: O_DIRECT open failed: {}", path, std::strerror(errno));
  double t0 = now_seconds();
  for (uint64_t done = 0; done < bytes; done += kReq)
    FF_CHECK(::write(fd, buf, kReq) == ssize_t(kReq), "bench fs: raw write failed");
  ::fdatasync(fd);
  r.write_mbps = double(bytes) / (1 << 20) / (now_seconds() - t0);
  ::close(fd);
  fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  FF_CHECK(fd >= 0, "bench fs: {}: O_DIRECT open failed", path);
  t0 = now_seconds();
  for (uint64_t done = 0; done < bytes; done += kReq)
    FF_CHECK(::read(fd, buf, kReq) == ssize_t(kReq), "bench fs: raw read failed");
  r.read_mbps = double(bytes) / (1 << 20) / (now_seconds() - t0);
  ::close(fd);
  // The device's cache flushes: a durable update costs two per replica (data, metadata).
  fd = ::open(path.c_str(), O_WRONLY | O_DIRECT);
  FF_CHECK(fd >= 0, "bench fs: {}: O_DIRECT open failed", path);
  int flushes = 0;
  t0 = now_seconds();
  for (; now_seconds() - t0 < 1.0; ++flushes) {
    FF_CHECK(::pwrite(fd, buf, 64 << 10, off_t(flushes % 64) << 16) == (64 << 10),
             "bench fs: raw write failed");
    ::fdatasync(fd);
  }
  r.flushes_per_s = flushes / (now_seconds() - t0);
  ::close(fd);
  std::filesystem::remove(path);
  std::free(buf);
  return r;
}

// Drops the cached pages of every block file under `dir` (the next reads come from the disk).
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

template <class Fn>
double run_threads(int threads, Fn&& fn) {
  std::vector<std::thread> ts;
  const double t0 = now_seconds();
  for (int t = 0; t < threads; ++t) ts.emplace_back([&, t] { fn(t); });
  for (auto& t : ts) t.join();
  return now_seconds() - t0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/ff_bench_fs";
  uint64_t mb = 256;
  int threads = 4;
  std::string only_chunk, only_fsync;  // --chunk 1M|64K, --fsync yes|no: one case (profiling)
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--dir")
      dir = argv[i + 1];
    else if (a == "--mb")
      mb = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (a == "--chunk")
      only_chunk = argv[i + 1];
    else if (a == "--fsync")
      only_fsync = argv[i + 1];
  }
  try {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const uint64_t bytes = mb << 20;
    const Raw raw = raw_disk(dir, bytes);
    std::printf(
        "raw disk (%s): O_DIRECT write %.0f MB/s, read %.0f MB/s (%llu MiB, 1 MiB requests), "
        "%.0f 64 KiB writes + fdatasync a second\n",
        dir.c_str(), raw.write_mbps, raw.read_mbps, static_cast<unsigned long long>(mb),
        raw.flushes_per_s);

    for (const bool fsync : {true, false}) {
      if (!only_fsync.empty() && (only_fsync == "yes") != fsync) continue;
      ff::fs::MgmtdOptions mo;
      mo.heartbeat_ms = 200;
      mo.lease_ms = 2000;
      ff::fs::MgmtdServer mgmtd(mo);
      std::vector<std::unique_ptr<ff::fs::StorageServer>> nodes;
      for (uint32_t n = 1; n <= 3; ++n) {
        ff::fs::StorageOptions so;
        so.node_id = n;
        so.mgmtd = mgmtd.address();
        so.data_dir = dir + "/node-" + std::to_string(n);
        so.targets = 2;
        so.fsync = fsync;
        so.data_dir += fsync ? "" : "-nofsync";
        nodes.push_back(std::make_unique<ff::fs::StorageServer>(so));
      }
      ff::fs::ClientOptions co;
      co.mgmtd = mgmtd.address();
      ff::fs::StorageClient client(co);
      ff::fs::FsStatus made{ff::fs::FsCode::Unavailable, "not tried"};
      for (int i = 0; i < 100 && !made.ok(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        made = ff::fs::create_chains(mgmtd.address(), 1, 3);
      }
      FF_CHECK(made.ok(), "bench fs: {}", made.str());
      FF_CHECK(ff::fs::wait_all_serving(client, 20000), "bench fs: chains not serving");
      const ff::fs::Routing routing = client.refresh();

      uint64_t inode_base = 1;
      for (const uint32_t chunk : {1u << 20, 64u << 10}) {
        if (!only_chunk.empty() && only_chunk != (chunk == (1u << 20) ? "1M" : "64K")) continue;
        const uint64_t count = bytes / chunk;
        const std::string data(chunk, 'x');
        const uint64_t base = inode_base;
        inode_base += count + 1;
        std::atomic<int> errors{0};
        // Chunk k of the case is chunk 0 of inode base + k: chunks spread over both chains.
        const double tw = run_threads(threads, [&](int t) {
          for (uint64_t k = uint64_t(t); k < count; k += uint64_t(threads)) {
            const uint64_t inode = base + k;
            if (!client
                     .write(routing.chain_for(1, inode, 0), ff::fs::ChunkId::of(inode, 0), 0, data,
                            chunk)
                     .status.ok())
              ++errors;
          }
        });
        // The transport's bound on this machine: one chunk-sized read per call from the page
        // cache (the same chunk again and again), unbatched. A write makes three such calls
        // (one per replica) besides its disk work, so a third of this rate bounds it here.
        std::atomic<uint64_t> rpcs{0};
        const double trpc = run_threads(threads, [&](int t) {
          const uint64_t inode = base + uint64_t(t) % count;
          const ff::fs::ReadRequest r{routing.chain_for(1, inode, 0), ff::fs::ChunkId::of(inode, 0),
                                      0, chunk};
          const uint64_t n = std::max<uint64_t>(8, count / uint64_t(threads) / 2);
          for (uint64_t i = 0; i < n; ++i)
            if (client.read(r).status.ok()) ++rpcs;
        });
        const double rpc_mbps = double(rpcs.load()) * chunk / (1 << 20) / trpc;
        drop_cache(dir);  // (both modes: the pages are written back first)
        // Reads in batches of up to 8 MiB (BatchRead: one call per replica for a batch).
        const uint64_t batch = std::max<uint64_t>(1, (8u << 20) / chunk);
        const double tr = run_threads(threads, [&](int t) {
          std::vector<ff::fs::ReadRequest> reqs;
          for (uint64_t k = uint64_t(t); k < count; k += uint64_t(threads)) {
            const uint64_t inode = base + k;
            reqs.push_back(
                {routing.chain_for(1, inode, 0), ff::fs::ChunkId::of(inode, 0), 0, chunk});
            if (reqs.size() == batch || k + uint64_t(threads) >= count) {
              for (const auto& r : client.batch_read(reqs))
                if (!r.status.ok() || r.data.size() != chunk) ++errors;
              reqs.clear();
            }
          }
        });
        FF_CHECK(errors == 0, "bench fs: {} failed calls", errors.load());
        const double wm = double(bytes) / (1 << 20) / tw, rm = double(bytes) / (1 << 20) / tr;
        const std::string name =
            std::string(chunk == (1u << 20) ? "1M" : "64K") + (fsync ? "" : "_nofsync");
        std::printf(
            "BENCH fs write_%s chunk=%u threads=%d replicas=3 MBps=%.1f raw_write_MBps=%.1f "
            "bound_MBps=%.1f transport_bound_MBps=%.1f flush_bound_MBps=%s baseline=raw_write/3 "
            "ratio=%.2f\n",
            name.c_str(), chunk, threads, wm, raw.write_mbps, raw.write_mbps / 3, rpc_mbps / 3,
            fsync ? fmt::format("{:.1f}", raw.flushes_per_s / 6 * chunk / (1 << 20)).c_str()
                  : "none",
            wm / (raw.write_mbps / 3));
        std::printf(
            "BENCH fs read_%s chunk=%u threads=%d batch=%llu MBps=%.1f raw_read_MBps=%.1f "
            "baseline=raw_read ratio=%.2f\n",
            name.c_str(), chunk, threads, static_cast<unsigned long long>(batch), rm, raw.read_mbps,
            rm / raw.read_mbps);
        std::fflush(stdout);
      }
      nodes.clear();
      mgmtd.stop();
    }
    std::filesystem::remove_all(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench fs: %s\n", e.what());
    return 1;
  }
  return 0;
}
