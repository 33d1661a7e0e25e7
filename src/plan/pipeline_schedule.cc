// Schedule generators. 1F1B and ZB1P are the classic warm-up / steady / cool-down loops; DualPipe
// and DualPipeV follow the eight-step per-rank structure of upstream's dualpipe.py (the reference
// notes' table), emitting each transfer at the point upstream posts it.
#include <algorithm>
#include <deque>

#include "core/error.h"
#include "plan/pipeline_schedule.h"

namespace ff::plan {

namespace {

constexpr int kMaxPp = 1024;
constexpr int kMaxChunks = 1 << 20;
// pp x chunks (stage-chunk pairs, a handful of ops each): keeps a schedule's op lists and the
// simulator's tables within a few hundred MB.
constexpr int64_t kMaxStageChunks = int64_t{1} << 20;

// Builds one rank's op list for 1F1B (zb = false) or ZB1P (zb = true). Rank r warms up with
// pp-1-r forwards. ZB1P splits every B and lets rank r keep up to r weight grads pending, so the
// early ranks fill their cool-down gaps with W (ZB-H1: the bubble drops by 2W per stage and the
// peak activations stay at pp, as in 1F1B).
std::vector<Op> one_f_one_b_rank(int pp, int n, int r, bool zb) {
  std::vector<Op> ops;
  int next_f = 0, next_b = 0;
  std::deque<ChunkRef> pending_w;
  auto forward = [&] {
    const ChunkRef c{r, next_f++, 0};
    if (r > 0) ops.push_back({OpKind::RecvForward, c, {}, false, r - 1});
    ops.push_back({OpKind::Forward, c, {}, false, -1});
    if (r < pp - 1) ops.push_back({OpKind::SendForward, c, {}, false, r + 1});
  };
  auto backward = [&] {
    const ChunkRef c{r, next_b++, 0};
    if (r < pp - 1) ops.push_back({OpKind::RecvBackward, c, {}, false, r + 1});
    ops.push_back({OpKind::Backward, c, {}, zb, -1});
    if (r > 0) ops.push_back({OpKind::SendBackward, c, {}, false, r - 1});
    if (!zb) return;
    pending_w.push_back(c);
    if (static_cast<int>(pending_w.size()) > r) {
      ops.push_back({OpKind::Weight, pending_w.front(), {}, false, -1});
      pending_w.pop_front();
    }
  };
  const int warmup = std::min(pp - 1 - r, n);
  for (int i = 0; i < warmup; ++i) forward();
  for (int i = 0; i < n - warmup; ++i) {
    forward();
    backward();
  }
  for (int i = 0; i < warmup; ++i) backward();
  for (const ChunkRef& c : pending_w) ops.push_back({OpKind::Weight, c, {}, false, -1});
  return ops;
}

// One rank of DualPipe or DualPipeV. A rank runs two "phases": phase 0 is the copy it reaches
// first in its own forward order, phase 1 the other. The builder keeps upstream's per-phase
// counters (next chunk to compute / send / receive) and its first-in-first-out queue of pending
// weight grads, so the emitted list is exactly the order upstream executes.
class DualRankBuilder {
 public:
  DualRankBuilder(const Schedule& s, int rank, bool split_middle_pair)
      : s_(s), r_(rank), v_(s.method == Method::DualPipeV), split_middle_pair_(split_middle_pair) {
    const int R = s.num_ranks;
    if (v_) {
      half_ranks_ = R;
      h_ = r_;
      chunks_per_phase_ = s.num_chunks;
      middle_ = r_ == R - 1;
    } else {
      half_ranks_ = R / 2;
      h_ = std::min(r_, R - 1 - r_);
      chunks_per_phase_ = s.num_chunks / 2;
      middle_ = r_ == R / 2 - 1 || r_ == R / 2;
      second_half_ = r_ >= R / 2;
    }
  }

  std::vector<Op> build() {
    const int n1 = 2 * (half_ranks_ - h_ - 1);
    for (int i = 0; i < n1; ++i) forward_chunk(0);

    // Step 2: forwards of both phases; the middle ranks pass phase 0 on at once (DualPipe).
    const bool send_f0_early = middle_ && !v_;
    recv_forward(0);
    for (int i = 0; i <= h_; ++i) {
      forward_chunk(0, /*recv=*/false, /*send=*/send_f0_early);
      recv_forward(0);
      forward_chunk(1, /*recv=*/true, /*send=*/!middle_ || i < h_);
      if (!send_f0_early) send_forward(0);
    }

    // Step 3: zero-bubble B of phase 1, a W, and the next phase-1 forward.
    for (int i = 0; i < half_ranks_ - h_ - 1; ++i) {
      backward_chunk(1, /*zb=*/true);
      recv_forward(1);
      weight();
      forward_chunk(1, /*recv=*/false);
    }

    // Step 4, the main step: F0&B1 then F1&B0.
    const int n4 = chunks_per_phase_ - 2 * half_ranks_ + h_ + 1;
    for (int i = 0; i < n4; ++i) {
      if (i == 0 && middle_) {
        if (split_middle_pair_) {
          forward_chunk(0, /*recv=*/false, /*send=*/false);
          send_forward(1);
          backward_chunk(1, /*zb=*/false, /*recv=*/true, /*send=*/false);
          send_forward(0);
          send_backward(1);
        } else {
          send_forward(1);  // the last step-2 forward of phase 1, held back above
          forward_backward_chunk(0, 1, /*recv0=*/false);
        }
      } else {
        forward_backward_chunk(0, 1, /*recv0=*/i > 0);
      }
      forward_backward_chunk(1, 0);
    }

    // Step 5: B1 then F1&B0.
    for (int i = 0; i < half_ranks_ - h_ - 1; ++i) {
      backward_chunk(1);
      forward_backward_chunk(1, 0);
    }

    // Step 6: B1, B0 pairs; the second half of them zero-bubble.
    bool zb = false;
    for (int i = 0; i <= h_; ++i) {
      if (i == (h_ + 1) / 2 && h_ % 2 == 1) zb = true;
      backward_chunk(1, zb);
      if (i == (h_ + 1) / 2 && h_ % 2 == 0) zb = true;
      backward_chunk(0, zb);
    }

    // Step 7: W then a zero-bubble B0; step 8: the remaining Ws.
    for (int i = 0; i < half_ranks_ - h_ - 1; ++i) {
      weight();
      backward_chunk(0, /*zb=*/true);
    }
    for (int i = 0; i <= h_; ++i) weight();
    FF_INVARIANT(pending_w_.empty(), "dualpipe rank {}: {} weight grads left", r_,
                 pending_w_.size());
    return std::move(ops_);
  }

 private:
  // Upstream numbers phases per rank; on DualPipe's second half, phase 0 is the reverse direction.
  int physical(int phase) const { return phase ^ (second_half_ ? 1 : 0); }

  ChunkRef ref(int ph, int index) const {
    const int n = s_.num_chunks;
    if (v_) return {ph == 0 ? r_ : s_.num_stages - 1 - r_, index, 0};
    return {ph == 0 ? r_ : s_.num_stages - 1 - r_, index + (ph == 1 ? n / 2 : 0), ph};
  }

  // Where a phase's data comes from and goes to. DualPipe: phase 0 flows up the ranks, phase 1
  // down. DualPipeV: phase 0 down the V's first arm, phase 1 back up; the last rank's hop from
  // phase 0 to phase 1 stays on the rank.
  bool is_first_stage(int ph) const {
    if (v_) return r_ == 0 && ph == 0;
    return (r_ == 0 && ph == 0) || (r_ == s_.num_ranks - 1 && ph == 1);
  }
  bool is_last_stage(int ph) const {
    if (v_) return r_ == 0 && ph == 1;
    return (r_ == 0 && ph == 1) || (r_ == s_.num_ranks - 1 && ph == 0);
  }
  bool input_is_local(int ph) const { return v_ && r_ == s_.num_ranks - 1 && ph == 1; }
  bool output_is_local(int ph) const { return v_ && r_ == s_.num_ranks - 1 && ph == 0; }
  int upstream_peer(int ph) const { return ph == 0 ? r_ - 1 : r_ + 1; }
  int downstream_peer(int ph) const { return ph == 0 ? r_ + 1 : r_ - 1; }

  void recv_forward(int phase) {
    const int ph = physical(phase);
    if (is_first_stage(ph) || input_is_local(ph)) return;
    ops_.push_back({OpKind::RecvForward, ref(ph, recv_f_[ph]++), {}, false, upstream_peer(ph)});
  }
  void send_forward(int phase) {
    const int ph = physical(phase);
    if (is_last_stage(ph) || output_is_local(ph)) return;
    ops_.push_back({OpKind::SendForward, ref(ph, send_f_[ph]++), {}, false, downstream_peer(ph)});
  }
  void recv_backward(int phase) {
    const int ph = physical(phase);
    if (is_last_stage(ph) || output_is_local(ph)) return;
    ops_.push_back({OpKind::RecvBackward, ref(ph, recv_b_[ph]++), {}, false, downstream_peer(ph)});
  }
  void send_backward(int phase) {
    const int ph = physical(phase);
    if (is_first_stage(ph) || input_is_local(ph)) return;
    ops_.push_back({OpKind::SendBackward, ref(ph, send_b_[ph]++), {}, false, upstream_peer(ph)});
  }

  void forward_chunk(int phase, bool recv = true, bool send = true) {
    if (recv) recv_forward(phase);
    const int ph = physical(phase);
    ops_.push_back({OpKind::Forward, ref(ph, next_f_[ph]++), {}, false, -1});
    if (send) send_forward(phase);
  }
  void backward_chunk(int phase, bool zb = false, bool recv = true, bool send = true) {
    if (recv) recv_backward(phase);
    const int ph = physical(phase);
    const ChunkRef c = ref(ph, next_b_[ph]++);
    ops_.push_back({OpKind::Backward, c, {}, zb, -1});
    if (zb) pending_w_.push_back(c);
    if (send) send_backward(phase);
  }
  void forward_backward_chunk(int phase0, int phase1, bool recv0 = true) {
    if (recv0) recv_forward(phase0);
    recv_backward(phase1);
    const int ph0 = physical(phase0), ph1 = physical(phase1);
    const ChunkRef f = ref(ph0, next_f_[ph0]++);
    const ChunkRef b = ref(ph1, next_b_[ph1]++);
    ops_.push_back({OpKind::ForwardBackward, f, b, false, -1});
    send_forward(phase0);
    send_backward(phase1);
  }
  void weight() {
    FF_INVARIANT(!pending_w_.empty(), "dualpipe rank {}: W with no pending weight grad", r_);
    ops_.push_back({OpKind::Weight, pending_w_.front(), {}, false, -1});
    pending_w_.pop_front();
  }

  const Schedule& s_;
  const int r_;
  const bool v_;
  const bool split_middle_pair_;
  int half_ranks_ = 0, h_ = 0, chunks_per_phase_ = 0;
  bool middle_ = false, second_half_ = false;
  int next_f_[2] = {0, 0}, next_b_[2] = {0, 0};
  int send_f_[2] = {0, 0}, recv_f_[2] = {0, 0}, send_b_[2] = {0, 0}, recv_b_[2] = {0, 0};
  std::deque<ChunkRef> pending_w_;
  std::vector<Op> ops_;
};

}  // namespace

Method parse_method(std::string_view name) {
  if (name == "1f1b") return Method::OneF1B;
  if (name == "zb1p") return Method::ZB1P;
  if (name == "dualpipe") return Method::DualPipe;
  if (name == "dualpipev") return Method::DualPipeV;
  fail("unknown pipeline method '{}' (expected 1f1b, zb1p, dualpipe or dualpipev)", name);
}

std::string_view method_name(Method m) {
  switch (m) {
    case Method::OneF1B:
      return "1f1b";
    case Method::ZB1P:
      return "zb1p";
    case Method::DualPipe:
      return "dualpipe";
    case Method::DualPipeV:
      return "dualpipev";
  }
  return "?";
}

std::string_view op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Forward:
      return "F";
    case OpKind::Backward:
      return "B";
    case OpKind::Weight:
      return "W";
    case OpKind::ForwardBackward:
      return "F&B";
    case OpKind::SendForward:
      return "SendF";
    case OpKind::RecvForward:
      return "RecvF";
    case OpKind::SendBackward:
      return "SendB";
    case OpKind::RecvBackward:
      return "RecvB";
  }
  return "?";
}

int Schedule::rank_of(int stage, int dir) const {
  switch (method) {
    case Method::OneF1B:
    case Method::ZB1P:
      return stage;
    case Method::DualPipe:
      return dir == 0 ? stage : num_ranks - 1 - stage;
    case Method::DualPipeV:
      return stage < num_ranks ? stage : num_stages - 1 - stage;
  }
  return -1;
}

Schedule make_schedule(Method method, int pp, int num_chunks, const ScheduleOptions& options) {
  const std::string_view name = method_name(method);
  FF_CHECK(pp >= 2 && pp <= kMaxPp, "{}: pp must be in [2, {}], got {}", name, kMaxPp, pp);
  FF_CHECK(num_chunks >= 1 && num_chunks <= kMaxChunks, "{}: chunks must be in [1, {}], got {}",
           name, kMaxChunks, num_chunks);
  FF_CHECK(int64_t{pp} * num_chunks <= kMaxStageChunks,
           "{}: pp x chunks = {} x {} is more than {} stage-chunk pairs", name, pp, num_chunks,
           kMaxStageChunks);
  Schedule s;
  s.method = method;
  s.pp = pp;
  s.num_chunks = num_chunks;
  s.num_stages = pp;
  switch (method) {
    case Method::OneF1B:
    case Method::ZB1P:
      s.num_ranks = pp;
      break;
    case Method::DualPipe:
      FF_CHECK(pp % 2 == 0, "dualpipe: pp must be even (rank r pairs with rank pp-1-r), got {}",
               pp);
      FF_CHECK(num_chunks % 2 == 0 && num_chunks >= 2 * pp,
               "dualpipe: chunks must be even and at least 2*pp = {}, got {}", 2 * pp, num_chunks);
      s.num_ranks = pp;
      s.num_dirs = 2;
      break;
    case Method::DualPipeV:
      FF_CHECK(pp % 2 == 0,
               "dualpipev: pp counts stages and must be even (pp/2 ranks hold two each), got {}",
               pp);
      FF_CHECK(num_chunks >= pp, "dualpipev: chunks must be at least 2 * ranks = pp = {}, got {}",
               pp, num_chunks);
      s.num_ranks = pp / 2;
      break;
  }
  s.rank_stages.resize(s.num_ranks);
  s.ops.resize(s.num_ranks);
  for (int r = 0; r < s.num_ranks; ++r) {
    switch (method) {
      case Method::OneF1B:
      case Method::ZB1P:
        s.rank_stages[r] = {{r, -1, 0}};
        s.ops[r] = one_f_one_b_rank(pp, num_chunks, r, method == Method::ZB1P);
        break;
      case Method::DualPipe:
        s.rank_stages[r] = {{r, -1, 0}, {pp - 1 - r, -1, 1}};
        s.ops[r] = DualRankBuilder(s, r, options.split_middle_pair).build();
        break;
      case Method::DualPipeV:
        s.rank_stages[r] = {{r, -1, 0}, {pp - 1 - r, -1, 0}};
        s.ops[r] = DualRankBuilder(s, r, options.split_middle_pair).build();
        break;
    }
  }
  return s;
}

}  // namespace ff::plan
