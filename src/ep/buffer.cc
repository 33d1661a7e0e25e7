// ep::Buffer: the rank geometry (nodes by host or FF_EP_RANKS_PER_NODE), the node's shared
// segments (an MPI-3 shared window), and the waits every call is built from, each bounded by a
// deadline so that a dead or failed rank never hangs the others.
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/core.h"
#include "ep/ep_impl.h"

namespace ff::ep {
namespace {

using Clock = std::chrono::steady_clock;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  FF_CHECK(*end == '\0' && x > 0 && x <= INT_MAX, "{}={}: expected a positive integer", name,
           printable(v));
  return int(x);
}

// Spins a little, then yields and sleeps (up to 1 ms) between polls: oversubscribed ranks must
// leave the cores to the ranks that have work.
class Backoff {
 public:
  explicit Backoff(double timeout_s)
      : deadline_(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(timeout_s))) {}
  // False once the deadline has passed.
  bool pause() {
    if (++polls_ < 64) return true;
    if (polls_ < 256) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(sleep_);
      sleep_ = std::min(2 * sleep_, std::chrono::microseconds(1000));
    }
    return Clock::now() < deadline_;
  }

 private:
  Clock::time_point deadline_;
  int polls_ = 0;
  std::chrono::microseconds sleep_{10};
};

constexpr int kTagSpan = 1 << 12;  // tags per call (phases x peers stay below it)

const char* kind_name(int32_t kind) {
  switch (kind) {
    case 1:
      return "FP8";
    case 2:
      return "BF16 (combine)";
    case 3:
      return "F32";
    case 4:
      return "F32 (combine)";
    default:
      return "BF16";
  }
}

}  // namespace

void Buffer::Impl::check_usable() const {
  FF_CHECK(!broken, "ep: the buffer is unusable after an earlier timeout (rank {})", rank);
}

void Buffer::Impl::fail_timeout(const char* phase, const std::vector<int>& missing) {
  broken = true;
  std::string who;
  for (const int r : missing) who += (who.empty() ? "" : ", ") + std::to_string(r);
  fail("ep: timed out after {} s in {} waiting for rank{} {}", timeout_s, phase,
       missing.size() > 1 ? "s" : "", who);
}

void Buffer::Impl::wait_for(const std::function<std::vector<int>()>& missing, const char* phase) {
  Backoff backoff(timeout_s);
  for (;;) {
    const std::vector<int> left = missing();
    if (left.empty()) return;
    if (!backoff.pause()) fail_timeout(phase, left);
  }
}

void Buffer::Impl::node_barrier(const char* phase) {
  const uint64_t seq = ++barrier_seq;
  control(local)->arrived.store(seq, std::memory_order_release);
  Backoff backoff(timeout_s);
  for (;;) {
    std::vector<int> missing;
    for (int l = 0; l < per_node; ++l)
      if (control(l)->arrived.load(std::memory_order_acquire) < seq)
        missing.push_back(global_rank(node, l));
    if (missing.empty()) return;
    if (!backoff.pause()) fail_timeout(phase, missing);
  }
}

void Buffer::Impl::transfer(const std::vector<std::span<const char>>& sends,
                            const std::vector<std::span<char>>& recvs, const char* phase) {
  std::vector<MPI_Request> reqs;
  std::vector<int> recv_peer;  // per request: the peer of a receive, -1 for a send
  const int tag = call_tag;
  call_tag = (call_tag + 1) % kTagSpan;
  for (int r = 0; r < num_ranks; ++r) {
    if (r < int(recvs.size()) && !recvs[size_t(r)].empty()) {
      FF_CHECK(recvs[size_t(r)].size() <= size_t(INT_MAX), "ep: a message of {} bytes is too long",
               recvs[size_t(r)].size());
      reqs.emplace_back();
      MPI_Irecv(recvs[size_t(r)].data(), int(recvs[size_t(r)].size()), MPI_BYTE, r, tag, comm,
                &reqs.back());
      recv_peer.push_back(r);
    }
  }
  for (int r = 0; r < num_ranks; ++r) {
    if (r < int(sends.size()) && !sends[size_t(r)].empty()) {
      FF_CHECK(sends[size_t(r)].size() <= size_t(INT_MAX), "ep: a message of {} bytes is too long",
               sends[size_t(r)].size());
      reqs.emplace_back();
      MPI_Isend(sends[size_t(r)].data(), int(sends[size_t(r)].size()), MPI_BYTE, r, tag, comm,
                &reqs.back());
      recv_peer.push_back(-1);
    }
  }
  Backoff backoff(timeout_s);
  for (;;) {
    int done = 0;
    MPI_Testall(int(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE);
    if (done) return;
    if (!backoff.pause()) {
      std::vector<int> missing;
      for (size_t i = 0; i < reqs.size(); ++i) {
        int flag = 0;
        if (reqs[i] != MPI_REQUEST_NULL) MPI_Test(&reqs[i], &flag, MPI_STATUS_IGNORE);
        if (reqs[i] != MPI_REQUEST_NULL && recv_peer[i] >= 0) missing.push_back(recv_peer[i]);
      }
      if (missing.empty())  // only sends left: a peer that stopped receiving
        for (size_t i = 0; i < reqs.size(); ++i)
          if (reqs[i] != MPI_REQUEST_NULL) missing.push_back(-1);
      missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
      fail_timeout(phase, missing);
    }
  }
}

std::vector<std::vector<char>> Buffer::Impl::exchange(std::span<const char> mine,
                                                      const char* phase) {
  std::vector<std::vector<char>> all(size_t(num_ranks), std::vector<char>(mine.size()));
  all[size_t(rank)].assign(mine.begin(), mine.end());
  std::vector<std::span<const char>> sends(static_cast<size_t>(num_ranks));
  std::vector<std::span<char>> recvs(static_cast<size_t>(num_ranks));
  for (int r = 0; r < num_ranks; ++r) {
    if (r == rank || mine.empty()) continue;
    sends[size_t(r)] = mine;
    recvs[size_t(r)] = all[size_t(r)];
  }
  transfer(sends, recvs, phase);
  return all;
}

std::vector<CallHeader> agree(Buffer::Impl& b, const CallHeader& mine, const char* what) {
  const auto raw = b.exchange({reinterpret_cast<const char*>(&mine), sizeof mine}, what);
  std::vector<CallHeader> all(raw.size());
  for (size_t r = 0; r < raw.size(); ++r) std::memcpy(&all[r], raw[r].data(), sizeof(CallHeader));
  for (size_t r = 0; r < all.size(); ++r)
    if (all[r].status != 0) {
      all[r].message[sizeof all[r].message - 1] = '\0';
      fail("ep: {}: rank {}: {}", what, r, all[r].message);
    }
  const auto same = [&](const char* name, int64_t CallHeader::*field) {
    for (size_t r = 1; r < all.size(); ++r)
      FF_CHECK(all[r].*field == all[0].*field,
               "ep: {}: ranks disagree on {}: rank 0 has {}, rank {} has {}", what, name,
               all[0].*field, r, all[r].*field);
  };
  same("hidden", &CallHeader::hidden);
  same("num_topk", &CallHeader::num_topk);
  same("num_experts", &CallHeader::num_experts);
  same("cached (handle given)", &CallHeader::cached);
  if (all[0].kind == 2 || all[0].kind == 4)
    same("whether top-k weights are given", &CallHeader::with_weights);
  for (size_t r = 1; r < all.size(); ++r)
    FF_CHECK(all[r].kind == all[0].kind,
             "ep: {}: ranks disagree on the data type: rank 0 sends {}, rank {} {}", what,
             kind_name(all[0].kind), r, kind_name(all[r].kind));
  return all;
}

Buffer::Buffer(MPI_Comm comm, size_t num_nvl_bytes, size_t num_rdma_bytes, bool low_latency_mode)
    : impl_(std::make_unique<Impl>()) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  FF_CHECK(initialized, "ep::Buffer: MPI is not initialized (call MPI_Init_thread first)");
  Impl& b = *impl_;
  MPI_Comm_dup(comm, &b.comm);
  MPI_Comm_rank(b.comm, &b.rank);
  MPI_Comm_size(b.comm, &b.num_ranks);
  b.nvl_bytes = (num_nvl_bytes + 63) / 64 * 64;
  b.rdma_bytes = num_rdma_bytes;
  b.low_latency = low_latency_mode;
  const char* t = std::getenv("FF_EP_TIMEOUT_S");
  if (t && *t) {
    char* end = nullptr;
    b.timeout_s = std::strtod(t, &end);
    FF_CHECK(*end == '\0' && b.timeout_s > 0, "FF_EP_TIMEOUT_S={}: expected seconds > 0",
             printable(t));
  }
  // Nodes: FF_EP_RANKS_PER_NODE consecutive ranks, else the ranks sharing a host, which must
  // then be consecutive blocks of one size (mpirun's default mapping by slot).
  const int forced = env_int("FF_EP_RANKS_PER_NODE", 0);
  if (forced > 0) {
    FF_CHECK(b.num_ranks % forced == 0,
             "FF_EP_RANKS_PER_NODE={} does not divide the {} ranks into equal nodes", forced,
             b.num_ranks);
    b.per_node = forced;
    MPI_Comm_split(b.comm, b.rank / forced, b.rank, &b.node_comm);
  } else {
    MPI_Comm_split_type(b.comm, MPI_COMM_TYPE_SHARED, b.rank, MPI_INFO_NULL, &b.node_comm);
    MPI_Comm_size(b.node_comm, &b.per_node);
    int local = 0;
    MPI_Comm_rank(b.node_comm, &local);
    int ok = b.num_ranks % b.per_node == 0 && local == b.rank % b.per_node ? 1 : 0, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, b.comm);
    FF_CHECK(all_ok,
             "ep::Buffer: the ranks of each host must be consecutive blocks of one size "
             "(launch with mpirun's default --map-by slot, or set FF_EP_RANKS_PER_NODE)");
  }
  MPI_Comm_rank(b.node_comm, &b.local);
  b.node = b.rank / b.per_node;
  b.num_nodes = b.num_ranks / b.per_node;
  // The node's segments: control block + dispatch area + combine area per rank.
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  char* base = nullptr;
  const size_t seg = kControlBytes + 2 * b.nvl_bytes + 64;  // + room to align the start
  FF_CHECK(seg <= size_t(LLONG_MAX), "ep::Buffer: {} bytes is too large", seg);
  const int rc = MPI_Win_allocate_shared(MPI_Aint(seg), 1, info, b.node_comm, &base, &b.win);
  MPI_Info_free(&info);
  FF_CHECK(rc == MPI_SUCCESS, "ep::Buffer: cannot allocate {} bytes of shared memory on rank {}",
           seg, b.rank);
  b.segments.resize(size_t(b.per_node));
  for (int l = 0; l < b.per_node; ++l) {
    MPI_Aint size = 0;
    int disp = 0;
    char* at = nullptr;
    MPI_Win_shared_query(b.win, l, &size, &disp, &at);
    // 64-byte aligned (the control block's atomics); the offset within a page is the same in
    // every process that maps the segment, so all agree on where it starts.
    b.segments[size_t(l)] = at + (64 - reinterpret_cast<uintptr_t>(at) % 64) % 64;
  }
  new (b.control(b.local)) Control{};
  b.control(b.local)->arrived.store(0, std::memory_order_relaxed);
  if (b.num_nodes > 1) {
    b.stage_send.resize(b.rdma_bytes);
    b.stage_recv.resize(b.rdma_bytes);
  }
  MPI_Barrier(b.comm);
}

Buffer::~Buffer() {
  Impl& b = *impl_;
  b.stop_comm_thread();  // runs what is queued first
  if (b.broken) return;  // freeing is collective: after a timeout the peers may never join
  // Free only when every rank is destroying this buffer (a non-blocking barrier on its own
  // communicator, within the deadline): a rank that left by an exception while the others
  // went on must not hang them in MPI_Win_free. Otherwise the segments are left to the OS.
  MPI_Request req;
  MPI_Ibarrier(b.comm, &req);
  Backoff backoff(b.timeout_s);
  for (int done = 0;;) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) break;
    if (!backoff.pause()) return;
  }
  if (b.win != MPI_WIN_NULL) MPI_Win_free(&b.win);
  if (b.node_comm != MPI_COMM_NULL) MPI_Comm_free(&b.node_comm);
  if (b.comm != MPI_COMM_NULL) MPI_Comm_free(&b.comm);
}

int Buffer::rank() const {
  return impl_->rank;
}
int Buffer::num_ranks() const {
  return impl_->num_ranks;
}
int Buffer::num_nodes() const {
  return impl_->num_nodes;
}
int Buffer::ranks_per_node() const {
  return impl_->per_node;
}

}  // namespace ff::ep
