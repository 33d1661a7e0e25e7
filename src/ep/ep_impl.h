// Private to src/ep: the state behind ep::Buffer, the rank geometry, the deadline-bounded waits
// (shared-memory barrier, point-to-point exchange) the dispatch and combine files build on.
#pragma once
#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ep/ep.h"

namespace ff::ep {

// Head of each rank's shared segment (one cache line per field that others poll).
struct Control {
  alignas(64) std::atomic<uint64_t> arrived;  // the last barrier sequence this rank reached
  // Low-latency mode: the last call whose rows this rank has taken out of each receive half
  // (senders wait for it before they reuse the half).
  alignas(64) std::atomic<uint64_t> ll_dispatch_done[2];
  alignas(64) std::atomic<uint64_t> ll_combine_done[2];
  // Normal-mode combine: where this rank's rows are (0: combine area, 1: dispatch area).
  alignas(64) std::atomic<uint32_t> combine_rows_at;
};
constexpr size_t kControlBytes = 4096;

// The communication thread of the asynchronous calls: a FIFO of calls run one at a time.
struct CommThread {
  std::thread thread;
  std::mutex mu;
  std::condition_variable wake, idle;
  std::deque<std::function<void()>> queue;
  int running = 0;
  bool stop = false;
};

struct Buffer::Impl {
  MPI_Comm comm = MPI_COMM_NULL;       // a duplicate of the user's
  MPI_Comm node_comm = MPI_COMM_NULL;  // the ranks of this node
  MPI_Win win = MPI_WIN_NULL;
  int rank = 0, num_ranks = 1;
  int node = 0, num_nodes = 1, local = 0, per_node = 1;
  size_t nvl_bytes = 0, rdma_bytes = 0;
  bool low_latency = false;
  std::vector<char*> segments;  // [per_node]: each local rank's segment, mapped here
  uint64_t barrier_seq = 0;
  int call_tag = 0;  // MPI tags of the current call's messages
  double timeout_s = 60;
  bool broken = false;  // a timeout left messages in flight: the buffer refuses further calls
  std::vector<char> stage_send, stage_recv;  // internode staging (num_rdma_bytes each)
  // Low-latency mode: calls so far, and per parity the received rows (the results' storage),
  // the messages to and from other nodes and their MPI requests.
  uint64_t ll_dispatch_calls = 0, ll_combine_calls = 0;
  struct LowLatencySlot {
    std::vector<char> rows;                    // result rows (x, scales) of a dispatch
    std::vector<std::vector<char>> sent, got;  // [R] messages to / from other nodes' ranks
    std::vector<MPI_Request> sends, recvs;
    std::vector<int> recv_peer;
  };
  LowLatencySlot ll_dispatch[2], ll_combine[2];

  int node_of(int r) const { return r / per_node; }
  int global_rank(int node_index, int local_index) const {
    return node_index * per_node + local_index;
  }
  Control* control(int local_rank) const {
    return reinterpret_cast<Control*>(segments[size_t(local_rank)]);
  }
  char* dispatch_area(int local_rank) const { return segments[size_t(local_rank)] + kControlBytes; }
  char* combine_area(int local_rank) const { return dispatch_area(local_rank) + nvl_bytes; }

  std::unique_ptr<CommThread> comm_thread;

  // The start of every call: waits for the queued asynchronous calls (unless on the
  // communication thread itself), then refuses a broken buffer.
  void enter();
  void check_usable() const;
  void enqueue(std::function<void()> call);
  void stop_comm_thread();
  // Every local rank reaches this point (release / acquire on the segments' counters), or the
  // call throws after timeout_s naming the ranks that did not arrive.
  void node_barrier(const char* phase);
  // Each rank's `mine` (the same size on every rank) to every rank: the result's [r] is rank r's.
  std::vector<std::vector<char>> exchange(std::span<const char> mine, const char* phase);
  // Point-to-point round: sends[r] to rank r, recvs[r] (sized by the caller) from rank r; empty
  // spans are skipped. Waits for all of them, within the deadline.
  void transfer(const std::vector<std::span<const char>>& sends,
                const std::vector<std::span<char>>& recvs, const char* phase);
  [[noreturn]] void fail_timeout(const char* phase, const std::vector<int>& missing);
  // Polls `missing` (the ranks still awaited) until it is empty, backing off, or throws after
  // timeout_s naming them.
  void wait_for(const std::function<std::vector<int>()>& missing, const char* phase);
};

// The first part of every call: this rank's status and shape, exchanged before any data moves
// so a bad input on one rank fails every rank (naming it) instead of hanging the others.
struct CallHeader {
  int32_t status = 0;  // 0 ok
  int32_t kind = 0;    // 0 BF16, 1 FP8 (dispatch); 2 combine
  int64_t num_tokens = 0, hidden = 0, num_topk = 0, num_experts = 0;
  int64_t cached = 0, with_weights = 0;
  char message[256] = {};
};

// Bytes per row: a dispatched row (data, scales, K ids, K weights, source index), a combined
// row (BF16 data, K weights), a forwarded row (source index, destination mask, then a
// dispatched row's fields).
struct RowSizes {
  size_t dispatch, combine, forward;
};
RowSizes row_sizes(int64_t hidden, int num_topk, bool fp8, bool f32 = false);

// The sections of a dispatch area of `area` bytes: cap rows of each field, 64-byte aligned.
struct DispatchRows {
  int64_t cap = 0;
  size_t x = 0, scales = 0, idx = 0, weights = 0, src = 0;  // byte offsets
};
DispatchRows dispatch_rows(size_t area, int64_t hidden, int num_topk, bool fp8, bool f32 = false);

// Why a routing is invalid ("" when it is valid).
std::string routing_error(const int64_t* topk_idx, int64_t num_tokens, int num_topk,
                          int num_experts, int num_ranks);

// Exchanges the headers and throws on every rank if any rank failed or the ranks disagree on a
// shape; returns all headers.
std::vector<CallHeader> agree(Buffer::Impl& b, const CallHeader& mine, const char* what);

}  // namespace ff::ep
