// Expert-parallel MoE communication with DeepEP's (V1) semantics between the processes of an MPI
// job: dispatch sends each token to the ranks of its top-k experts, combine brings the experts'
// outputs back and sums them. Shared memory within a node, MPI between nodes. docs/ep.md has the
// layouts, the protocol and its failure cases.
//
//   MPI_Init_thread(...);
//   ff::ep::Buffer buf(MPI_COMM_WORLD, ff::ep::Buffer::size_hint(tokens, hidden, topk, ranks));
//   auto layout = buf.get_dispatch_layout(topk_idx, tokens, topk, num_experts);
//   auto d = buf.dispatch({.x = {.data = x, .num_tokens = tokens, .hidden = hidden},
//                          .topk_idx = topk_idx, .topk_weights = w, .num_topk = topk,
//                          .num_experts = num_experts, .layout = &layout});
//   ... experts on d.recv_x (d.num_recv rows), weighted and reduced per row ...
//   auto out = buf.combine(y, d.handle);   // out.x: [tokens, hidden] BF16
#pragma once
#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <vector>

namespace ff::ep {

constexpr int kScaleBlock = 128;   // FP8 rows carry one f32 scale per 128 channels
constexpr int kMaxExperts = 1024;  // experts per call (DeepEP's recv-counter limit)
constexpr int kMaxTopk = 32;

// get_dispatch_layout's result. Expert e lives on rank e / (num_experts / num_ranks).
struct Layout {
  std::vector<int> num_tokens_per_rank;    // [R]: tokens with at least one expert on the rank
  std::vector<int> num_tokens_per_node;    // [nodes]; empty on a single node
  std::vector<int> num_tokens_per_expert;  // [E]: (token, k) entries choosing the expert
  std::vector<uint8_t> is_token_in_rank;   // [N, R], 0 / 1
};

// Rows to dispatch: BF16, or FP8 (e4m3 bytes + f32 scales per 128 channels). Rows are
// contiguous (hidden elements apart). Every rank passes the same `fp8`, also one with no tokens.
struct Tokens {
  const void* data = nullptr;  // [num_tokens, hidden] BF16, e4m3 (fp8) or F32 (f32)
  bool fp8 = false;
  const float* scales = nullptr;  // [num_tokens, hidden / 128], with fp8
  int64_t num_tokens = 0;
  int64_t hidden = 0;
  bool f32 = false;  // fp32 rows (a CPU model's activations, moved without rounding)
};

// What combine (and a cached dispatch) needs from a dispatch.
struct Handle {
  int num_ranks = 0;
  int64_t num_tokens = 0;  // this rank's tokens
  int64_t num_recv = 0;    // rows this rank received
  int64_t hidden = 0;
  std::vector<int> counts;                // [R, R]: counts[s * R + d] = tokens rank s sent to d
  std::vector<int> rank_prefix_matrix;    // [R, R]: [s * R + d] = tokens ranks <= s sent to d
  std::vector<uint8_t> is_token_in_rank;  // [num_tokens, R]
  std::vector<int> send_slot;             // [num_tokens, R]: the token's index among those sent
                                          // to that rank, -1 where not sent
  std::vector<int> recv_src_idx;          // [num_recv]: source token index of each received row
  std::vector<int> num_recv_tokens_per_expert;  // as in DispatchResult (alignment applied)
  // Internode only: node_counts[s * nodes + b] = tokens of rank s bound for node b; fwd_masks:
  // per token this rank forwarded (the other nodes' ranks with its local index, in rank then
  // token order), which of this node's ranks it went to (bit = local rank).
  std::vector<int> node_counts;
  std::vector<uint32_t> fwd_masks;
};

struct DispatchArgs {
  Tokens x;
  const int64_t* topk_idx = nullptr;    // [N, num_topk], -1 = none; null with `handle`
  const float* topk_weights = nullptr;  // [N, num_topk]; optional
  int num_topk = 0;
  int num_experts = 0;
  const Layout* layout = nullptr;  // from get_dispatch_layout; computed when null
  const Handle* handle = nullptr;  // cached dispatch: same routing as that dispatch
  int expert_alignment = 1;
};

struct DispatchResult {
  int64_t num_recv = 0;
  // Views into the buffer, valid until the next dispatch on it: received rows ordered by
  // source rank, then source token index, bit for bit as sent. The caller may overwrite them
  // (combining recv_x in place is zero-copy).
  uint16_t* recv_x = nullptr;                   // BF16 input: [num_recv, hidden]
  float* recv_x_f32 = nullptr;                  // F32 input: [num_recv, hidden]
  uint8_t* recv_x_fp8 = nullptr;                // FP8 input: [num_recv, hidden]
  float* recv_scales = nullptr;                 // FP8 input: [num_recv, hidden / 128]
  std::vector<int64_t> recv_topk_idx;           // [num_recv, K]: local expert id or -1 (not cached)
  std::vector<float> recv_topk_weights;         // [num_recv, K]: 0 where the id is -1
  std::vector<int> num_recv_tokens_per_expert;  // [E_local], rounded up to the alignment
  Handle handle;
};

struct CombineResult {
  std::vector<uint16_t> x;          // [num_tokens, hidden] BF16
  std::vector<float> topk_weights;  // [num_tokens, K], when weights were given
};

// Low-latency mode (decode): no count exchange, fixed worst-case slots. Each (token, expert)
// pair goes straight to the expert's rank; the receiver sees the masked layout
// [E_local, R * T, hidden] that gemm's m_grouped_*_masked consume.
struct LowLatencyDispatchArgs {
  const uint16_t* x = nullptr;  // [num_tokens, hidden] BF16
  int64_t num_tokens = 0;       // <= max_tokens_per_rank
  int64_t hidden = 0;
  const int64_t* topk_idx = nullptr;  // [num_tokens, num_topk], -1 = none, distinct per token
  int num_topk = 0;
  int64_t max_tokens_per_rank = 0;  // T, the same on every rank
  int num_experts = 0;
  bool use_fp8 = true;           // cast to e4m3 per 128 channels (scale 448 / amax)
  bool f32 = false;              // F32 rows from x_f32 instead of x, moved as they are
  const float* x_f32 = nullptr;  // [num_tokens, hidden] with f32 (use_fp8 must be false)
  bool round_scale = false;      // scales rounded up to powers of two (UE8M0)
};

struct LowLatencyHandle {
  int64_t max_tokens_per_rank = 0, hidden = 0, num_tokens = 0;
  int num_experts = 0, num_topk = 0;
  std::vector<int> src_info;          // [E_local, R * T]: source token index of each row
  std::vector<int64_t> layout_range;  // [E_local, R]: begin << 32 | count per source rank
  std::vector<int> slot;              // [num_tokens, num_topk]: the (token, k) pair's row among
                                      // this rank's rows for that expert, -1 for none
  uint64_t call = 0;                  // which of the two receive buffers holds the rows
};

struct LowLatencyDispatchResult {
  // Views, valid until the low-latency dispatch after next (two results can be held):
  const uint16_t* recv_x = nullptr;     // BF16: [E_local, R * T, hidden]
  const float* recv_x_f32 = nullptr;    // F32 rows: [E_local, R * T, hidden]
  const uint8_t* recv_x_fp8 = nullptr;  // FP8: [E_local, R * T, hidden] e4m3
  const float* recv_scales = nullptr;   // FP8: [E_local, R * T, hidden / 128], row-major
  std::vector<int> recv_count;          // [E_local]: valid rows per expert
  LowLatencyHandle handle;
};

// The send half's receipt: pass it to the matching receive.
struct LowLatencyTicket {
  uint64_t call = 0;
  bool combine = false;
  std::shared_ptr<const void> state;
};

// The result of an asynchronous call, computed on the buffer's communication thread. get()
// waits for it and rethrows the call's error.
template <class T>
class Event {
 public:
  Event() = default;
  explicit Event(std::shared_future<T> f) : f_(std::move(f)) {}
  bool ready() const {
    return f_.valid() && f_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  void wait() const { f_.wait(); }
  const T& get() const { return f_.get(); }

 private:
  std::shared_future<T> f_;
};

class Buffer {
 public:
  // Collective over `comm`. A low_latency_mode buffer carries the low-latency calls only (its
  // areas hold their receive halves); the normal calls need a buffer of their own.
  // num_nvl_bytes: this rank's shared-memory space for each direction
  // (rows received by dispatch, rows returned by combine); num_rdma_bytes: staging for the
  // internode hop. Ranks are grouped into nodes by host, or by FF_EP_RANKS_PER_NODE.
  Buffer(MPI_Comm comm, size_t num_nvl_bytes, size_t num_rdma_bytes = 0,
         bool low_latency_mode = false);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // Bytes that hold any dispatch / combine of `tokens` rows per rank (all of them to one rank).
  // f32: also for F32 rows (twice the BF16 size).
  static size_t size_hint(int64_t tokens, int64_t hidden, int num_topk, int num_ranks,
                          int num_nodes = 1, bool f32 = false);

  int rank() const;
  int num_ranks() const;
  int num_nodes() const;
  int ranks_per_node() const;

  // Local, no communication.
  Layout get_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int num_topk,
                             int num_experts) const;

  // Collective (every rank of the buffer calls it with its own tokens).
  DispatchResult dispatch(const DispatchArgs& args);

  // x: [handle.num_recv, hidden] BF16 in the order dispatch delivered; topk_weights [num_recv,
  // num_topk] (summed back like x) when num_topk > 0, the same on every rank; bias0 / bias1:
  // [num_tokens, hidden] BF16, optional, added to the sum. out: where to write the
  // [num_tokens, hidden] result (null: CombineResult::x holds it). Collective.
  CombineResult combine(const uint16_t* x, const Handle& handle,
                        const float* topk_weights = nullptr, int num_topk = 0,
                        const uint16_t* bias0 = nullptr, const uint16_t* bias1 = nullptr,
                        uint16_t* out = nullptr);

  // combine for F32 rows (dispatched as F32): the same sums, kept in fp32 throughout (also
  // between nodes). out: [num_tokens, hidden]; returns the summed top-k weights when given.
  std::vector<float> combine_f32(const float* x, const Handle& handle, float* out,
                                 const float* topk_weights = nullptr, int num_topk = 0);

  // Where to write the experts' outputs for a zero-copy combine: [handle.num_recv, hidden] BF16
  // in this rank's shared segment, read there by the ranks that sum them. (Combining the
  // dispatch's recv_x view in place is zero-copy too.) Valid until the next dispatch.
  uint16_t* combine_buffer(const Handle& handle);

  // The same calls on the buffer's communication thread, in the order they were made (a
  // synchronous call waits for the queued ones first). Whatever the arguments point to must
  // stay valid until the event is ready. Needs MPI_THREAD_MULTIPLE.
  Event<DispatchResult> dispatch_async(const DispatchArgs& args);
  Event<CombineResult> combine_async(const uint16_t* x, const Handle& handle,
                                     const float* topk_weights = nullptr, int num_topk = 0,
                                     const uint16_t* bias0 = nullptr,
                                     const uint16_t* bias1 = nullptr, uint16_t* out = nullptr);

  // Low-latency dispatch in two halves: send, then (after any compute) receive. Collective:
  // every rank sends and receives once per call; at most two calls may be outstanding.
  LowLatencyTicket low_latency_dispatch_send(const LowLatencyDispatchArgs& args);
  LowLatencyDispatchResult low_latency_dispatch_recv(const LowLatencyTicket& ticket);
  LowLatencyDispatchResult low_latency_dispatch(const LowLatencyDispatchArgs& args);

  // x: [E_local, R * T, hidden] BF16 in recv_x's layout; returns [num_tokens, hidden] BF16 with
  // out[t] = sum over k (ascending, -1 skipped) of topk_weights[t, k] * x(expert, row), in fp32,
  // rounded once. topk_idx / topk_weights: this rank's, as dispatched. out: where to write it
  // (null: the returned vector holds it).
  LowLatencyTicket low_latency_combine_send(const uint16_t* x, const int64_t* topk_idx,
                                            const float* topk_weights,
                                            const LowLatencyHandle& handle);
  std::vector<uint16_t> low_latency_combine_recv(const LowLatencyTicket& ticket,
                                                 uint16_t* out = nullptr);
  std::vector<uint16_t> low_latency_combine(const uint16_t* x, const int64_t* topk_idx,
                                            const float* topk_weights,
                                            const LowLatencyHandle& handle,
                                            uint16_t* out = nullptr);

  // low_latency_combine for F32 rows (dispatched from x_f32): the same weighted sums, written
  // to out [num_tokens, hidden] F32.
  void low_latency_combine_f32(const float* x, const int64_t* topk_idx, const float* topk_weights,
                               const LowLatencyHandle& handle, float* out);

  // Where to write the experts' outputs ([E_local, R * T, hidden] BF16, recv_x's layout) for a
  // zero-copy low-latency combine: in this rank's segment, read there by the ranks of its node.
  // It belongs to the next low_latency_combine_send; every rank of a node must use it for that
  // call, or none.
  uint16_t* low_latency_combine_buffer(const LowLatencyHandle& handle);

  // Bytes of num_nvl_bytes (intranode) / num_rdma_bytes (internode) the low-latency calls need.
  // f32: for F32 rows (x_f32).
  static size_t low_latency_size_hint(int64_t max_tokens_per_rank, int64_t hidden, int num_ranks,
                                      int num_experts, bool f32 = false);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ff::ep
