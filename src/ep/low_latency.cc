// Low-latency (decode) dispatch and combine, docs/ep.md "Low-latency mode": no count exchange;
// every (token, expert) row goes straight to a fixed slot at the expert's rank, each message
// headed by a block (call number, status, shape, per-expert counts) whose call number, stored
// last, tells the receiver the rows are complete. Two receive halves per direction alternate by
// call parity, so two calls can be outstanding.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "core/core.h"
#include "ep/ep_impl.h"
#include "ep/rows.h"

namespace ff::ep {
namespace {

constexpr int kTagDispatch = 30000, kTagCombine = 30010;  // + parity
constexpr float kFp8Max = 448.f, kFp8Margin = 1e-4f;

// The block heading one source's rows at a receiver: in the receiver's shared half (same node)
// or at the start of an MPI message (other nodes). `call` is published last.
struct Header {
  uint64_t call = 0;
  int32_t status = 0, fp8 = 0;  // the rows' type: 0 BF16, 1 FP8, 2 F32
  int64_t hidden = 0, max_tokens = 0, num_experts = 0;
  int32_t zero_copy = 0;  // combine: the rows are read in the sender's own half
  char message[200] = {};
};
static_assert(sizeof(Header) <= 256);
constexpr size_t kHeaderBytes = 256;

size_t align64(size_t v) {
  return (v + 63) / 64 * 64;
}

struct Geometry {
  int R = 1, El = 1, E = 1;
  int64_t T = 0, H = 0;
  bool fp8 = false, f32 = false;
  int32_t kind() const { return fp8 ? 1 : f32 ? 2 : 0; }
  size_t x_bytes() const { return size_t(H) * (fp8 ? 1 : f32 ? 4 : 2); }
  size_t scale_bytes() const { return fp8 ? size_t(H / kScaleBlock) * 4 : 0; }
  size_t msg() const { return 16 + x_bytes() + scale_bytes(); }  // source index + data + scales
  // Header, then per local expert the row count and (zero-copy combine) the first row.
  size_t block() const { return kHeaderBytes + align64(size_t(El) * 8); }
  size_t dispatch_half() const { return size_t(R) * block() + size_t(El * R * T) * msg(); }
  size_t combine_row() const { return size_t(H) * (f32 ? 4 : 2); }
  // A combine half: the blocks of the ranks that copied rows here, the blocks this rank
  // publishes for each reader of its own rows (zero copy), then the rows.
  size_t combine_rows_at() const { return 2 * size_t(R) * block(); }
  size_t combine_half() const { return combine_rows_at() + size_t(E * T) * combine_row(); }
};

// The geometry of a call on R ranks (El = 1 when E does not divide: the call then fails its
// validation, but its headers still have a place).
Geometry geometry(int R, int E, int64_t T, int64_t H, bool fp8, bool f32) {
  Geometry g;
  g.R = R;
  g.E = E;
  g.El = E > 0 && E % R == 0 ? E / R : 1;
  g.T = T;
  g.H = H;
  g.fp8 = fp8;
  g.f32 = f32;
  return g;
}

Header* header_at(char* half, const Geometry& g, int src) {
  return reinterpret_cast<Header*>(half + size_t(src) * g.block());
}

uint64_t load_call(const Header* h) {
  return std::atomic_ref<const uint64_t>(h->call).load(std::memory_order_acquire);
}
void publish_call(Header* h, uint64_t call) {
  std::atomic_ref<uint64_t>(h->call).store(call, std::memory_order_release);
}

// ceil(log2(v)) for v > 0, from the bits (DeepEP's rounding of the scale to a power of two).
int log2_ceil(float v) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, 4);
  const int e = int((bits >> 23) & 0xff) - 127;
  return e + ((bits & 0x7fffff) != 0 ? 1 : 0);
}

// One token's row as e4m3 + per-128 inverse scales: amax = max(|x|, 1e-4); scale 448 / amax
// (or a power of two with round_scale), values saturated.
void cast_fp8(const uint16_t* x, int64_t H, bool round_scale, uint8_t* out, float* scales) {
  const int64_t groups = H / kScaleBlock;
  thread_local std::vector<float> amax, scale, scaled;
  amax.resize(size_t(groups));
  scale.resize(size_t(groups));
  scaled.resize(size_t(H));
  absmax_groups_bf16(x, groups, kScaleBlock, amax.data());
  for (int64_t g = 0; g < groups; ++g) {
    const float a = std::max(kFp8Margin, amax[size_t(g)]);
    if (round_scale) {
      const int e = log2_ceil(a * (1.f / kFp8Max));
      scale[size_t(g)] = std::ldexp(1.f, -e);
      scales[g] = std::ldexp(1.f, e);
    } else {
      scale[size_t(g)] = kFp8Max / a;
      scales[g] = a * (1.f / kFp8Max);
    }
  }
  scale_groups_bf16(x, groups, kScaleBlock, scale.data(), scaled.data());
  convert_f32_to_e4m3(scaled.data(), out, size_t(H));
}

void set_error(Header& h, const std::string& msg) {
  h.status = 1;
  std::snprintf(h.message, sizeof h.message, "%s", msg.c_str());
}

// What a send half leaves for its receive half.
struct DispatchState {
  Geometry g;
  uint64_t call = 0;
  int64_t num_tokens = 0;
  int num_topk = 0;
  std::vector<int> slot;  // [N, K]
  std::string error;      // this rank's own input error, thrown by the receive half
};
struct CombineState {
  Geometry g;  // g.f32: F32 rows and output
  uint64_t call = 0;
  int64_t num_tokens = 0;
  int num_topk = 0;
  std::vector<int64_t> topk_idx;
  std::vector<float> topk_weights;
  std::vector<int> slot;
  std::string error;
};

}  // namespace

size_t Buffer::low_latency_size_hint(int64_t max_tokens_per_rank, int64_t hidden, int num_ranks,
                                     int num_experts, bool f32) {
  FF_CHECK(max_tokens_per_rank > 0 && hidden > 0 && num_ranks > 0 && num_experts > 0 &&
               num_experts % num_ranks == 0,
           "ep::Buffer::low_latency_size_hint: bad arguments");
  const Geometry g = geometry(num_ranks, num_experts, max_tokens_per_rank, hidden, false, f32);
  return 2 * std::max(g.dispatch_half(), g.combine_half()) + 64;
}

namespace {

// Posts one message per other-node rank (sends) and the receives for theirs; `got` sized to the
// largest message. Tags by direction and parity: a pair's messages of one kind never overtake.
void post_remote(Buffer::Impl& b, Buffer::Impl::LowLatencySlot& slot, int tag, size_t max_bytes) {
  const int R = b.num_ranks;
  slot.got.resize(size_t(R));
  slot.recvs.clear();
  slot.recv_peer.clear();
  for (int r = 0; r < R; ++r) {
    if (b.node_of(r) == b.node) continue;
    slot.got[size_t(r)].resize(max_bytes);
    slot.recvs.emplace_back();
    MPI_Irecv(slot.got[size_t(r)].data(), int(max_bytes), MPI_BYTE, r, tag, b.comm,
              &slot.recvs.back());
    slot.recv_peer.push_back(r);
  }
  slot.sends.clear();
  for (int r = 0; r < R; ++r) {
    if (b.node_of(r) == b.node) continue;
    slot.sends.emplace_back();
    MPI_Isend(slot.sent[size_t(r)].data(), int(slot.sent[size_t(r)].size()), MPI_BYTE, r, tag,
              b.comm, &slot.sends.back());
  }
}

// The ranks whose rows for `call` have not arrived yet (headers in the own half, MPI receives).
std::vector<int> pending(Buffer::Impl& b, Buffer::Impl::LowLatencySlot& slot, char* half,
                         const Geometry& g, uint64_t call) {
  std::vector<int> left;
  for (int l = 0; l < b.per_node; ++l) {
    const int s = b.global_rank(b.node, l);
    if (load_call(header_at(half, g, s)) != call) left.push_back(s);
  }
  for (size_t i = 0; i < slot.recvs.size(); ++i) {
    int done = 0;
    if (slot.recvs[i] != MPI_REQUEST_NULL) MPI_Test(&slot.recvs[i], &done, MPI_STATUS_IGNORE);
    if (slot.recvs[i] != MPI_REQUEST_NULL) left.push_back(slot.recv_peer[i]);
  }
  std::sort(left.begin(), left.end());
  return left;
}

// The header of source s's rows: in the own half (same node) or its message.
const Header* source_header(Buffer::Impl& b, Buffer::Impl::LowLatencySlot& slot, char* half,
                            const Geometry& g, int s) {
  return b.node_of(s) == b.node ? header_at(half, g, s)
                                : reinterpret_cast<const Header*>(slot.got[size_t(s)].data());
}

void check_headers(Buffer::Impl& b, Buffer::Impl::LowLatencySlot& slot, char* half,
                   const Geometry& g, const char* what) {
  for (int s = 0; s < b.num_ranks; ++s) {
    const Header* h = source_header(b, slot, half, g, s);
    if (h->status != 0) {
      char msg[sizeof h->message + 1] = {};
      std::memcpy(msg, h->message, sizeof h->message);
      fail("ep: {}: rank {}: {}", what, s, msg);
    }
  }
  for (int s = 0; s < b.num_ranks; ++s) {
    const Header* h = source_header(b, slot, half, g, s);
    const auto same = [&](const char* name, int64_t theirs, int64_t mine) {
      FF_CHECK(theirs == mine, "ep: {}: ranks disagree on {}: rank {} has {}, rank {} has {}", what,
               name, s, theirs, b.rank, mine);
    };
    same("hidden", h->hidden, g.H);
    same("max_tokens_per_rank", h->max_tokens, g.T);
    same("num_experts", h->num_experts, g.E);
    same("the rows' type (0 BF16, 1 FP8, 2 F32)", h->fp8, g.kind());
  }
}

// Receive halves are reused every second call: waits until every rank of the node has taken
// the rows of the call before last out of half p (its `done` counter for p).
void wait_half_free(Buffer::Impl& b, std::atomic<uint64_t> (Control::*done)[2], int p,
                    uint64_t call, const char* phase) {
  if (call <= 2) return;
  b.wait_for(
      [&] {
        std::vector<int> left;
        for (int l = 0; l < b.per_node; ++l)
          if ((b.control(l)->*done)[p].load(std::memory_order_acquire) < call - 2)
            left.push_back(b.global_rank(b.node, l));
        return left;
      },
      phase);
}

void finish_sends(Buffer::Impl& b, Buffer::Impl::LowLatencySlot& slot, const char* phase) {
  b.wait_for(
      [&] {
        std::vector<int> left;
        int done = 0;
        if (!slot.sends.empty())
          MPI_Testall(int(slot.sends.size()), slot.sends.data(), &done, MPI_STATUSES_IGNORE);
        if (!slot.sends.empty() && !done) left.push_back(-1);
        return left;
      },
      phase);
  slot.sends.clear();
}

}  // namespace

LowLatencyTicket Buffer::low_latency_dispatch_send(const LowLatencyDispatchArgs& a) {
  Impl& b = *impl_;
  b.enter();
  const int R = b.num_ranks;
  auto st = std::make_shared<DispatchState>();
  Geometry& g = st->g;
  g = geometry(R, a.num_experts, a.max_tokens_per_rank, a.hidden, a.use_fp8 && !a.f32, a.f32);
  const int K = a.num_topk;
  // Local validation: an error still sends a header to every rank (so none of them waits for
  // this one), and every receive half reports it.
  std::string err;
  if (!b.low_latency)
    err = "the buffer was not built with low_latency_mode";
  else if (a.hidden <= 0 || (a.use_fp8 && a.hidden % kScaleBlock != 0))
    err = fmt::format("hidden {} must be positive{}", a.hidden,
                      a.use_fp8 ? " and divisible by 128 with use_fp8" : "");
  else if (a.max_tokens_per_rank <= 0 || a.num_tokens < 0 || a.num_tokens > a.max_tokens_per_rank)
    err = fmt::format("num_tokens {} is outside [0, max_tokens_per_rank {}]", a.num_tokens,
                      a.max_tokens_per_rank);
  else if (a.f32 && a.use_fp8)
    err = "F32 rows (f32) cannot be cast to FP8: set use_fp8 = false";
  else if (a.num_tokens > 0 && (a.f32 ? !a.x_f32 : !a.x))
    err = a.f32 ? "x_f32 is null" : "x is null";
  else
    err = routing_error(a.topk_idx, a.num_tokens, K, a.num_experts, R);
  if (err.empty())
    for (int64_t t = 0; t < a.num_tokens && err.empty(); ++t)
      for (int k = 0; k < K && err.empty(); ++k)
        for (int k2 = 0; k2 < k; ++k2)
          if (a.topk_idx[t * K + k] >= 0 && a.topk_idx[t * K + k] == a.topk_idx[t * K + k2])
            err = fmt::format("topk_idx[{}] names expert {} twice", t, a.topk_idx[t * K + k]);
  if (err.empty() && 2 * std::max(g.dispatch_half(), g.combine_half()) > b.nvl_bytes)
    err = fmt::format(
        "num_nvl_bytes {} is less than the {} bytes this shape needs "
        "(Buffer::low_latency_size_hint)",
        b.nvl_bytes, 2 * std::max(g.dispatch_half(), g.combine_half()));
  const uint64_t call = ++b.ll_dispatch_calls;
  const int p = int(call % 2);
  st->call = call;
  st->num_tokens = err.empty() ? a.num_tokens : 0;
  st->num_topk = K;
  st->error = err;
  Header head;
  head.call = call;
  head.fp8 = g.kind();
  head.hidden = g.H;
  head.max_tokens = g.T;
  head.num_experts = g.E;
  if (!err.empty()) set_error(head, err);
  // Per destination rank: per local expert, the rows in token order.
  std::vector<int> next(size_t(R) * g.El, 0);
  st->slot.assign(size_t(st->num_tokens * K), -1);
  for (int64_t t = 0; t < st->num_tokens; ++t)
    for (int k = 0; k < K; ++k) {
      const int64_t e = a.topk_idx[t * K + k];
      if (e >= 0) st->slot[size_t(t * K + k)] = next[size_t(e)]++;
    }
  Impl::LowLatencySlot& slot = b.ll_dispatch[p];
  wait_half_free(
      b, &Control::ll_dispatch_done, p, call,
      "low_latency_dispatch (a receive half still in use: at most two calls outstanding)");
  finish_sends(b, slot, "low_latency_dispatch (earlier sends)");
  // The rows: FP8-cast once per token, then copied to each chosen expert's slot.
  std::vector<uint8_t> x8(g.fp8 ? size_t(g.H) : 0);
  std::vector<float> sc(g.fp8 ? size_t(g.H / kScaleBlock) : 0);
  slot.sent.assign(size_t(R), {});
  for (int d = 0; d < R; ++d)
    if (b.node_of(d) != b.node) {
      int64_t rows = 0;
      for (int e = 0; e < g.El; ++e) rows += next[size_t(d * g.El + e)];
      slot.sent[size_t(d)].assign(g.block() + size_t(rows) * g.msg(), 0);
    }
  std::vector<int64_t> msg_at(size_t(R) * g.El, 0);  // remote: row offset per (d, e) in message
  for (int d = 0; d < R; ++d) {
    int64_t at = 0;
    for (int e = 0; e < g.El; ++e) {
      msg_at[size_t(d * g.El + e)] = at;
      at += next[size_t(d * g.El + e)];
    }
  }
  const size_t half_bytes = b.nvl_bytes / 2;
  for (int64_t t = 0; t < st->num_tokens; ++t) {
    const char* xr = g.f32 ? reinterpret_cast<const char*>(a.x_f32 + t * g.H)
                           : reinterpret_cast<const char*>(a.x + t * g.H);
    if (g.fp8)
      cast_fp8(reinterpret_cast<const uint16_t*>(xr), g.H, a.round_scale, x8.data(), sc.data());
    for (int k = 0; k < K; ++k) {
      const int64_t e = a.topk_idx[t * K + k];
      if (e < 0) continue;
      const int d = int(e / g.El), el = int(e % g.El), j = st->slot[size_t(t * K + k)];
      char* row;
      if (b.node_of(d) == b.node) {
        char* half = b.dispatch_area(d % b.per_node) + size_t(p) * half_bytes;
        row = half + size_t(R) * g.block() + (size_t(el * R + b.rank) * g.T + j) * g.msg();
      } else {
        row = slot.sent[size_t(d)].data() + g.block() +
              size_t(msg_at[size_t(d * g.El + el)] + j) * g.msg();
      }
      const int32_t src = int32_t(t);
      std::memcpy(row, &src, 4);
      if (g.fp8) {
        std::memcpy(row + 16, x8.data(), g.x_bytes());
        std::memcpy(row + 16 + g.x_bytes(), sc.data(), g.scale_bytes());
      } else {
        std::memcpy(row + 16, xr, g.x_bytes());
      }
    }
  }
  // Headers and counts: remote ones head the messages, local ones are published last.
  for (int d = 0; d < R; ++d) {
    Header h = head;
    char* block;
    if (b.node_of(d) == b.node) {
      block = b.dispatch_area(d % b.per_node) + size_t(p) * half_bytes + size_t(b.rank) * g.block();
      h.call = 0;  // published below
    } else {
      block = slot.sent[size_t(d)].data();
    }
    std::memcpy(block, &h, sizeof h);
    for (int e = 0; e < g.El; ++e)
      reinterpret_cast<int32_t*>(block + kHeaderBytes)[e] = next[size_t(d * g.El + e)];
    if (b.node_of(d) == b.node) publish_call(reinterpret_cast<Header*>(block), call);
  }
  // Other nodes: the largest message any rank can send this rank.
  const size_t max_msg = g.block() + size_t(g.El) * size_t(g.T) * g.msg();
  if (b.num_nodes > 1) post_remote(b, slot, kTagDispatch + p, max_msg);
  LowLatencyTicket ticket;
  ticket.call = call;
  ticket.state = st;
  return ticket;
}

LowLatencyDispatchResult Buffer::low_latency_dispatch_recv(const LowLatencyTicket& ticket) {
  Impl& b = *impl_;
  b.enter();
  FF_CHECK(ticket.state && !ticket.combine,
           "ep: low_latency_dispatch_recv: not a low-latency dispatch ticket");
  const auto& st = *static_cast<const DispatchState*>(ticket.state.get());
  const Geometry& g = st.g;
  const int R = b.num_ranks, p = int(st.call % 2);
  Impl::LowLatencySlot& slot = b.ll_dispatch[p];
  char* half = b.dispatch_area(b.local) + size_t(p) * (b.nvl_bytes / 2);
  b.wait_for([&] { return pending(b, slot, half, g, st.call); }, "low_latency_dispatch");
  // Taken out below; others may reuse this half once it is marked done, so mark it after the
  // copy (an error also marks it: every rank fails the same way).
  struct Done {
    Buffer::Impl& b;
    int p;
    uint64_t call;
    ~Done() { b.control(b.local)->ll_dispatch_done[p].store(call, std::memory_order_release); }
  };
  LowLatencyDispatchResult res;
  {
    Done done{b, p, st.call};
    check_headers(b, slot, half, g, "low_latency_dispatch");
    FF_INVARIANT(st.error.empty(), "ep: low_latency_dispatch: {}", st.error);
    // Compact per expert: source ranks ascending, each source's rows in token order.
    const int64_t rows = int64_t(g.El) * R * g.T;
    slot.rows.resize(size_t(rows) * (g.x_bytes() + g.scale_bytes()) + 64);
    char* xs = slot.rows.data();
    auto* scales = reinterpret_cast<float*>(xs + size_t(rows) * g.x_bytes());
    res.recv_count.assign(size_t(g.El), 0);
    LowLatencyHandle& h = res.handle;
    h.src_info.assign(size_t(rows), -1);
    h.layout_range.assign(size_t(g.El * R), 0);
    std::vector<int64_t> msg_row(size_t(R), 0);  // remote: next row of each message
    for (int e = 0; e < g.El; ++e) {
      int64_t begin = 0;
      for (int s = 0; s < R; ++s) {
        const bool local = b.node_of(s) == b.node;
        const char* block = local ? half + size_t(s) * g.block() : slot.got[size_t(s)].data();
        const int32_t n = reinterpret_cast<const int32_t*>(block + kHeaderBytes)[e];
        FF_INVARIANT(n >= 0 && n <= g.T, "ep: low_latency_dispatch: rank {} sent {} rows", s, n);
        for (int j = 0; j < n; ++j) {
          const char* src =
              local
                  ? half + size_t(R) * g.block() + (size_t(e * R + s) * g.T + j) * g.msg()
                  : slot.got[size_t(s)].data() + g.block() + size_t(msg_row[size_t(s)]++) * g.msg();
          const int64_t dst = int64_t(e) * R * g.T + begin + j;
          int32_t idx = 0;
          std::memcpy(&idx, src, 4);
          h.src_info[size_t(dst)] = idx;
          std::memcpy(xs + size_t(dst) * g.x_bytes(), src + 16, g.x_bytes());
          if (g.fp8)
            std::memcpy(scales + dst * (g.H / kScaleBlock), src + 16 + g.x_bytes(),
                        g.scale_bytes());
        }
        h.layout_range[size_t(e * R + s)] = (begin << 32) | int64_t(n);
        begin += n;
      }
      res.recv_count[size_t(e)] = int(begin);
    }
    if (g.f32) {
      res.recv_x_f32 = reinterpret_cast<const float*>(xs);
    } else if (g.fp8) {
      res.recv_x_fp8 = reinterpret_cast<const uint8_t*>(xs);
      res.recv_scales = scales;
    } else {
      res.recv_x = reinterpret_cast<const uint16_t*>(xs);
    }
    h.max_tokens_per_rank = g.T;
    h.hidden = g.H;
    h.num_tokens = st.num_tokens;
    h.num_experts = g.E;
    h.num_topk = st.num_topk;
    h.slot = st.slot;
    h.call = st.call;
  }
  return res;
}

LowLatencyDispatchResult Buffer::low_latency_dispatch(const LowLatencyDispatchArgs& args) {
  return low_latency_dispatch_recv(low_latency_dispatch_send(args));
}

namespace {

// The send half of a low-latency combine of BF16 or (f32) F32 rows.
LowLatencyTicket combine_send(Buffer::Impl& b, const void* xv, bool f32, const int64_t* topk_idx,
                              const float* topk_weights, const LowLatencyHandle& hd) {
  using Impl = Buffer::Impl;
  b.enter();
  const char* x = static_cast<const char*>(xv);
  const int R = b.num_ranks;
  auto st = std::make_shared<CombineState>();
  Geometry& g = st->g;
  g = geometry(R, hd.num_experts, hd.max_tokens_per_rank, hd.hidden, false, f32);
  std::string err;
  const int K = hd.num_topk;
  if (hd.src_info.size() != size_t(g.El) * R * g.T || hd.layout_range.size() != size_t(g.El * R) ||
      hd.slot.size() != size_t(hd.num_tokens * K))
    err = "the handle is not from a low-latency dispatch on this buffer";
  else if (!x && !hd.src_info.empty())
    err = "x is null";
  else if (hd.num_tokens > 0 && (!topk_idx || !topk_weights))
    err = "topk_idx and topk_weights are required";
  else if (2 * g.combine_half() > b.nvl_bytes)
    err = fmt::format("num_nvl_bytes {} is less than the {} bytes this shape needs", b.nvl_bytes,
                      2 * g.combine_half());
  for (int64_t i = 0; err.empty() && i < hd.num_tokens * K; ++i)
    if ((topk_idx[i] >= 0) != (hd.slot[size_t(i)] >= 0))
      err = fmt::format("topk_idx[{}][{}] is not what was dispatched", i / K, i % K);
  const uint64_t call = ++b.ll_combine_calls;
  const int p = int(call % 2);
  st->call = call;
  st->num_tokens = err.empty() ? hd.num_tokens : 0;
  st->num_topk = K;
  st->error = err;
  if (err.empty()) {
    st->topk_idx.assign(topk_idx, topk_idx + hd.num_tokens * K);
    st->topk_weights.assign(topk_weights, topk_weights + hd.num_tokens * K);
    st->slot = hd.slot;
  }
  Header head;
  head.fp8 = g.kind();
  head.hidden = g.H;
  head.max_tokens = g.T;
  head.num_experts = g.E;
  if (!err.empty()) set_error(head, err);
  Impl::LowLatencySlot& slot = b.ll_combine[p];
  wait_half_free(
      b, &Control::ll_combine_done, p, call,
      "low_latency_combine (a receive half still in use: at most two calls outstanding)");
  finish_sends(b, slot, "low_latency_combine (earlier sends)");
  // Each expert's rows go back to their source ranks, at (global expert, slot) there; or, when
  // x is this rank's combine buffer (zero copy), the ranks of this node read them here, told
  // where by the blocks this rank publishes in its own half.
  const size_t half_bytes = b.nvl_bytes / 2, row_bytes = g.combine_row();
  char* own_half = b.combine_area(b.local) + size_t(p) * half_bytes;
  const bool zero_copy = err.empty() && !f32 && x == own_half + g.combine_rows_at();
  head.zero_copy = zero_copy;
  slot.sent.assign(size_t(R), {});
  for (int s = 0; s < R; ++s) {
    if (b.node_of(s) == b.node) continue;
    int64_t rows = 0;
    for (int e = 0; err.empty() && e < g.El; ++e)
      rows += hd.layout_range[size_t(e * R + s)] & 0xffffffff;
    slot.sent[size_t(s)].assign(g.block() + size_t(rows) * row_bytes, 0);
  }
  for (int s = 0; s < R; ++s) {
    const bool local = b.node_of(s) == b.node;
    char* block = !local      ? slot.sent[size_t(s)].data()
                  : zero_copy ? own_half + size_t(R + s) * g.block()
                              : b.combine_area(s % b.per_node) + size_t(p) * half_bytes +
                                    size_t(b.rank) * g.block();
    int64_t at = 0;  // remote: rows so far in the message
    for (int e = 0; e < g.El; ++e) {
      const int64_t range = err.empty() ? hd.layout_range[size_t(e * R + s)] : 0;
      const int64_t begin = range >> 32, n = range & 0xffffffff;
      reinterpret_cast<int32_t*>(block + kHeaderBytes)[e] = int32_t(n);
      reinterpret_cast<int32_t*>(block + kHeaderBytes)[g.El + e] = int32_t(begin);
      if (local && zero_copy) continue;
      for (int64_t j = 0; j < n; ++j) {
        const char* src = x + size_t(int64_t(e) * R * g.T + begin + j) * row_bytes;
        char* dst = local ? b.combine_area(s % b.per_node) + size_t(p) * half_bytes +
                                g.combine_rows_at() +
                                (size_t(b.rank * g.El + e) * g.T + j) * row_bytes
                          : block + g.block() + size_t(at + j) * row_bytes;
        std::memcpy(dst, src, row_bytes);
      }
      at += n;
    }
    Header h = head;
    h.call = local ? 0 : call;
    std::memcpy(block, &h, sizeof h);
    if (local) publish_call(reinterpret_cast<Header*>(block), call);
  }
  const size_t max_msg = g.block() + size_t(g.El) * size_t(g.T) * row_bytes;
  if (b.num_nodes > 1) post_remote(b, slot, kTagCombine + p, max_msg);
  LowLatencyTicket ticket;
  ticket.call = call;
  ticket.combine = true;
  ticket.state = st;
  return ticket;
}

}  // namespace

LowLatencyTicket Buffer::low_latency_combine_send(const uint16_t* x, const int64_t* topk_idx,
                                                  const float* topk_weights,
                                                  const LowLatencyHandle& hd) {
  return combine_send(*impl_, x, false, topk_idx, topk_weights, hd);
}

namespace {

// The receive half: out is BF16 or (the ticket's rows were F32) F32.
void combine_recv(Buffer::Impl& b, const LowLatencyTicket& ticket, void* out_x) {
  using Impl = Buffer::Impl;
  b.enter();
  FF_CHECK(ticket.state && ticket.combine,
           "ep: low_latency_combine_recv: not a low-latency combine ticket");
  const auto& st = *static_cast<const CombineState*>(ticket.state.get());
  const Geometry& g = st.g;
  const int R = b.num_ranks, p = int(st.call % 2), K = st.num_topk;
  Impl::LowLatencySlot& slot = b.ll_combine[p];
  const size_t half_bytes = b.nvl_bytes / 2;
  char* half = b.combine_area(b.local) + size_t(p) * half_bytes;
  // A rank of this node either wrote its rows into this half (its block here carries the
  // call) or left them in its own half (its block there for this rank carries it).
  const auto zero_copy_block = [&](int d) {
    return b.combine_area(d % b.per_node) + size_t(p) * half_bytes + size_t(R + b.rank) * g.block();
  };
  const auto in_own_half = [&](int d) {
    return load_call(reinterpret_cast<const Header*>(zero_copy_block(d))) == st.call;
  };
  b.wait_for(
      [&] {
        std::vector<int> left;
        for (int l = 0; l < b.per_node; ++l) {
          const int d = b.global_rank(b.node, l);
          if (load_call(header_at(half, g, d)) != st.call && !in_own_half(d)) left.push_back(d);
        }
        for (size_t i = 0; i < slot.recvs.size(); ++i) {
          int finished = 0;
          if (slot.recvs[i] != MPI_REQUEST_NULL)
            MPI_Test(&slot.recvs[i], &finished, MPI_STATUS_IGNORE);
          if (slot.recvs[i] != MPI_REQUEST_NULL) left.push_back(slot.recv_peer[i]);
        }
        return left;
      },
      "low_latency_combine");
  struct Done {
    Buffer::Impl& b;
    int p;
    uint64_t call;
    ~Done() { b.control(b.local)->ll_combine_done[p].store(call, std::memory_order_release); }
  };
  Done done{b, p, st.call};
  std::vector<const char*> block_of(static_cast<size_t>(R));  // each rank's block for this one
  int zero_copy_ranks = 0;
  for (int d = 0; d < R; ++d) {
    if (b.node_of(d) != b.node) {
      block_of[size_t(d)] = slot.got[size_t(d)].data();
    } else if (load_call(header_at(half, g, d)) == st.call) {
      block_of[size_t(d)] = half + size_t(d) * g.block();
    } else {
      block_of[size_t(d)] = zero_copy_block(d);
      ++zero_copy_ranks;
    }
  }
  FF_CHECK(zero_copy_ranks == 0 || zero_copy_ranks == b.per_node,
           "ep: low_latency_combine: {} of this node's {} ranks combined from "
           "low_latency_combine_buffer, the others from their own rows (all or none must)",
           zero_copy_ranks, b.per_node);
  for (int s = 0; s < R; ++s) {
    const Header* h = reinterpret_cast<const Header*>(block_of[size_t(s)]);
    if (h->status != 0) {
      char msg[sizeof h->message + 1] = {};
      std::memcpy(msg, h->message, sizeof h->message);
      fail("ep: low_latency_combine: rank {}: {}", s, msg);
    }
    FF_CHECK(h->fp8 == g.kind(),
             "ep: low_latency_combine: ranks disagree on the rows' type: rank {} sends {}, rank {} "
             "{}",
             s, h->fp8 == 2 ? "F32" : "BF16", b.rank, g.f32 ? "F32" : "BF16");
    FF_CHECK(h->hidden == g.H && h->max_tokens == g.T && h->num_experts == g.E,
             "ep: low_latency_combine: ranks disagree on the shape: rank {} has hidden {}, T {}, "
             "{} experts; rank {} has {}, {}, {}",
             s, h->hidden, h->max_tokens, h->num_experts, b.rank, g.H, g.T, g.E);
  }
  FF_INVARIANT(st.error.empty(), "ep: low_latency_combine: {}", st.error);
  // Remote messages: where each (expert, slot) row starts.
  std::vector<std::vector<int64_t>> msg_at(static_cast<size_t>(R));
  for (int d = 0; d < R; ++d) {
    if (b.node_of(d) == b.node) continue;
    const auto* counts =
        reinterpret_cast<const int32_t*>(slot.got[size_t(d)].data() + kHeaderBytes);
    msg_at[size_t(d)].resize(size_t(g.El));
    int64_t at = 0;
    for (int e = 0; e < g.El; ++e) {
      msg_at[size_t(d)][size_t(e)] = at;
      at += counts[e];
    }
  }
  const size_t row_bytes = g.combine_row();

  std::vector<float> acc(static_cast<size_t>(g.H));
  for (int64_t t = 0; t < st.num_tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int k = 0; k < K; ++k) {
      const int64_t e = st.topk_idx[size_t(t * K + k)];
      if (e < 0) continue;
      const int d = int(e / g.El), el = int(e % g.El), j = st.slot[size_t(t * K + k)];
      const char* row;
      if (b.node_of(d) != b.node) {
        row = slot.got[size_t(d)].data() + g.block() +
              size_t(msg_at[size_t(d)][size_t(el)] + j) * row_bytes;
      } else if (zero_copy_ranks > 0) {  // in d's half: expert el's rows, this rank's block
        const int32_t begin =
            reinterpret_cast<const int32_t*>(block_of[size_t(d)] + kHeaderBytes)[g.El + el];
        row = b.combine_area(d % b.per_node) + size_t(p) * half_bytes + g.combine_rows_at() +
              (size_t(el) * size_t(R * g.T) + size_t(begin + j)) * row_bytes;
      } else {
        row = half + g.combine_rows_at() + (size_t(e) * g.T + j) * row_bytes;
      }
      if (g.f32)
        axpy_f32(acc.data(), st.topk_weights[size_t(t * K + k)],
                 reinterpret_cast<const float*>(row), g.H);
      else
        axpy_bf16(acc.data(), st.topk_weights[size_t(t * K + k)],
                  reinterpret_cast<const uint16_t*>(row), g.H);
    }
    if (g.f32)
      std::memcpy(static_cast<float*>(out_x) + t * g.H, acc.data(), size_t(g.H) * 4);
    else
      convert_f32_to_bf16(acc.data(), static_cast<uint16_t*>(out_x) + t * g.H, size_t(g.H));
  }
}

}  // namespace

std::vector<uint16_t> Buffer::low_latency_combine_recv(const LowLatencyTicket& ticket,
                                                       uint16_t* out_x) {
  FF_CHECK(ticket.state && ticket.combine,
           "ep: low_latency_combine_recv: not a low-latency combine ticket");
  const auto& st = *static_cast<const CombineState*>(ticket.state.get());
  FF_CHECK(!st.g.f32, "ep: low_latency_combine_recv: the rows were F32 (low_latency_combine_f32)");
  std::vector<uint16_t> out;
  if (!out_x) {
    out.resize(size_t(std::max<int64_t>(st.num_tokens, 0) * st.g.H));
    out_x = out.data();
  }
  combine_recv(*impl_, ticket, out_x);
  return out;
}

void Buffer::low_latency_combine_f32(const float* x, const int64_t* topk_idx,
                                     const float* topk_weights, const LowLatencyHandle& handle,
                                     float* out) {
  FF_CHECK(out != nullptr || handle.num_tokens == 0, "ep: low_latency_combine_f32: out is null");
  combine_recv(*impl_, combine_send(*impl_, x, true, topk_idx, topk_weights, handle), out);
}

uint16_t* Buffer::low_latency_combine_buffer(const LowLatencyHandle& hd) {
  Impl& b = *impl_;
  b.enter();
  const int R = b.num_ranks;
  FF_CHECK(hd.num_experts > 0 && hd.num_experts % R == 0 && hd.max_tokens_per_rank > 0,
           "ep: low_latency_combine_buffer: the handle is not from a low-latency dispatch");
  const Geometry g = geometry(R, hd.num_experts, hd.max_tokens_per_rank, hd.hidden, false, false);
  FF_CHECK(2 * g.combine_half() <= b.nvl_bytes,
           "ep: low_latency_combine_buffer: num_nvl_bytes {} is less than the {} bytes needed",
           b.nvl_bytes, 2 * g.combine_half());
  // The half of the next combine: free once every rank of the node has read the call before
  // last there.
  const uint64_t next = b.ll_combine_calls + 1;
  const int p = int(next % 2);
  wait_half_free(b, &Control::ll_combine_done, p, next,
                 "low_latency_combine_buffer (the rows of the call before last still being read)");
  return reinterpret_cast<uint16_t*>(b.combine_area(b.local) + size_t(p) * (b.nvl_bytes / 2) +
                                     g.combine_rows_at());
}

std::vector<uint16_t> Buffer::low_latency_combine(const uint16_t* x, const int64_t* topk_idx,
                                                  const float* topk_weights,
                                                  const LowLatencyHandle& handle, uint16_t* out) {
  return low_latency_combine_recv(low_latency_combine_send(x, topk_idx, topk_weights, handle), out);
}

}  // namespace ff::ep
