#include "plan/pipeline_exec.h"

#include <chrono>
#include <deque>
#include <memory>

#include "core/error.h"

namespace ff::plan {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One rank's step. Buffers are shared_ptrs so that a posted send can own its buffer while the
// chunk's state lets go of it, and a local hand-off (DualPipeV's turn) moves no data.
template <typename T>
class RankExecutor {
 public:
  RankExecutor(const Schedule& s, const PipelineModelConfig& c, std::vector<MlpStage<T>>& stages,
               Transport& t, const ExecOptions& opt)
      : s_(s), c_(c), stages_(stages), t_(t), opt_(opt), rank_(t.rank()) {
    FF_INVARIANT(rank_ >= 0 && rank_ < s.num_ranks, "rank {} outside the schedule's {} ranks",
                 rank_, s.num_ranks);
    FF_INVARIANT(stages.size() == s.rank_stages[size_t(rank_)].size(),
                 "rank {} holds {} stage copies, the schedule places {}", rank_, stages.size(),
                 s.rank_stages[size_t(rank_)].size());
    states_.resize(stages.size() * size_t(s.num_chunks));
  }

  RankStepResult<T> run() {
    const Clock::time_point t0 = Clock::now();
    for (const Op& op : s_.ops[size_t(rank_)]) {
      execute(op);
      t_.progress();
    }
    t_.wait_sends();
    result_.step_seconds = seconds_since(t0);
    check_finished();
    return std::move(result_);
  }

 private:
  using Buffer = std::shared_ptr<std::vector<T>>;

  struct ChunkState {
    Buffer x, h, a, y, label, dy, dh, dx;
    Transport::Request x_recv = -1, dy_recv = -1;  // posted, not yet waited for
    bool forwarded = false;
  };

  void execute(const Op& op) {
    const bool fwd = opt_.forward_only;
    switch (op.kind) {
      case OpKind::RecvForward:
        return post_recv(op, MessageKind::Activation, state(op.a).x);
      case OpKind::RecvBackward:
        if (!fwd) post_recv(op, MessageKind::Grad, state(op.a).dy);
        return;
      case OpKind::SendForward:
        return send(op, MessageKind::Activation, state(op.a).y, +1);
      case OpKind::SendBackward:
        if (!fwd) send(op, MessageKind::Grad, state(op.a).dx, -1);
        return;
      case OpKind::Forward: {
        resolve_input(op.a);
        const Clock::time_point t0 = Clock::now();
        forward(op.a);
        return record(ComputeKind::F, t0);
      }
      case OpKind::Backward: {
        if (fwd) return;
        resolve_output_grad(op.a);
        const Clock::time_point t0 = Clock::now();
        backward(op.a, op.zb);
        return record(op.zb ? ComputeKind::Bzb : ComputeKind::B, t0);
      }
      case OpKind::Weight: {
        if (fwd) return;
        const Clock::time_point t0 = Clock::now();
        weight(op.a);
        return record(ComputeKind::W, t0);
      }
      case OpKind::ForwardBackward: {
        resolve_input(op.a);
        if (!fwd) resolve_output_grad(op.b);
        const Clock::time_point t0 = Clock::now();
        forward(op.a);
        if (fwd) return record(ComputeKind::F, t0);
        backward(op.b, /*zb=*/false);
        return record(ComputeKind::FB, t0);
      }
    }
    fail_invariant("rank {}: unknown op kind {}", rank_, int(op.kind));
  }

  void record(ComputeKind k, Clock::time_point t0) {
    OpTime& o = result_.op_times[size_t(k)];
    ++o.count;
    o.seconds += seconds_since(t0);
  }

  size_t copy_index(int stage, int dir) const {
    const auto& held = s_.rank_stages[size_t(rank_)];
    for (size_t i = 0; i < held.size(); ++i)
      if (held[i].stage == stage && held[i].dir == dir) return i;
    return held.size();
  }
  bool holds(int stage, int dir) const {
    return copy_index(stage, dir) < s_.rank_stages[size_t(rank_)].size();
  }

  ChunkState& state(const ChunkRef& r) {
    const size_t i = copy_index(r.stage, r.dir);
    FF_INVARIANT(i < stages_.size() && r.chunk >= 0 && r.chunk < s_.num_chunks,
                 "rank {} has no stage {} (dir {}) chunk {}", rank_, r.stage, r.dir, r.chunk);
    return states_[i * size_t(s_.num_chunks) + size_t(r.chunk)];
  }
  MlpStage<T>& stage(const ChunkRef& r) { return stages_[copy_index(r.stage, r.dir)]; }

  Buffer alloc(size_t n) { return std::make_shared<std::vector<T>>(n); }
  bool is_last(const ChunkRef& r) const { return r.stage == s_.num_stages - 1; }
  size_t act() const { return c_.activation_size(); }

  void post_recv(const Op& op, MessageKind kind, Buffer& into) {
    ChunkState& st = state(op.a);
    FF_INVARIANT(!into, "rank {}: a second receive for stage {} chunk {}", rank_, op.a.stage,
                 op.a.chunk);
    into = alloc(act());
    const Transport::Request r =
        t_.post_recv(into->data(), act() * sizeof(T), op.peer, tag(kind, op.a));
    (kind == MessageKind::Activation ? st.x_recv : st.dy_recv) = r;
  }

  // `step` names the receiver: stage + 1 for an activation, stage - 1 for a grad.
  void send(const Op& op, MessageKind kind, Buffer& what, int step) {
    FF_INVARIANT(what, "rank {}: {} of stage {} chunk {} before it was computed", rank_,
                 op_kind_name(op.kind), op.a.stage, op.a.chunk);
    const ChunkRef receiver{op.a.stage + step, op.a.chunk, op.a.dir};
    t_.post_send(what->data(), act() * sizeof(T), op.peer, tag(kind, receiver), what);
    what.reset();
  }

  int tag(MessageKind kind, const ChunkRef& receiver) const {
    return int(message_tag(kind, receiver, s_.num_stages, s_.num_dirs));
  }

  void resolve_input(const ChunkRef& r) {
    ChunkState& st = state(r);
    if (st.x_recv >= 0) {
      t_.wait(st.x_recv);
      st.x_recv = -1;
    } else if (!st.x && r.stage == 0) {
      st.x = alloc(act());
      chunk_input(c_, r.chunk, st.x->data());
    } else if (!st.x && holds(r.stage - 1, r.dir)) {
      ChunkState& prev = state({r.stage - 1, r.chunk, r.dir});
      FF_INVARIANT(prev.y, "rank {}: F of stage {} chunk {} before stage {}'s", rank_, r.stage,
                   r.chunk, r.stage - 1);
      st.x = std::move(prev.y);
    }
    FF_INVARIANT(st.x, "rank {}: F of stage {} chunk {} has no input (no RecvForward)", rank_,
                 r.stage, r.chunk);
  }

  void resolve_output_grad(const ChunkRef& r) {
    ChunkState& st = state(r);
    if (st.dy_recv >= 0) {
      t_.wait(st.dy_recv);
      st.dy_recv = -1;
    } else if (!st.dy && !is_last(r) && holds(r.stage + 1, r.dir)) {
      ChunkState& next = state({r.stage + 1, r.chunk, r.dir});
      FF_INVARIANT(next.dx, "rank {}: B of stage {} chunk {} before stage {}'s", rank_, r.stage,
                   r.chunk, r.stage + 1);
      st.dy = std::move(next.dx);
    }
    FF_INVARIANT(st.dy || is_last(r), "rank {}: B of stage {} chunk {} has no output grad", rank_,
                 r.stage, r.chunk);
  }

  void forward(const ChunkRef& r) {
    ChunkState& st = state(r);
    FF_INVARIANT(!st.forwarded, "rank {}: a second F of stage {} chunk {}", rank_, r.stage,
                 r.chunk);
    st.forwarded = true;
    st.h = alloc(act() * 4);
    st.a = alloc(act() * 4);
    st.y = alloc(act());
    stage_forward(stage(r), st.x->data(), c_.rows(), st.h->data(), st.a->data(), st.y->data());
    if (is_last(r)) {
      st.label = alloc(act());
      chunk_label(c_, r.chunk, st.label->data());
      result_.losses.push_back({r.chunk, mse_loss(st.y->data(), st.label->data(), act())});
    }
    if (opt_.forward_only) {
      // Only y outlives an inference F: for the send or the local hand-off, or as an output.
      st.x.reset();
      st.h.reset();
      st.a.reset();
      st.label.reset();
      if (is_last(r)) result_.outputs.push_back({r.chunk, std::move(*st.y)});
      if (is_last(r)) st.y.reset();
    }
  }

  void backward(const ChunkRef& r, bool zb) {
    ChunkState& st = state(r);
    FF_INVARIANT(st.forwarded && st.h, "rank {}: B of stage {} chunk {} before its F (or twice)",
                 rank_, r.stage, r.chunk);
    if (is_last(r)) {
      st.dy = alloc(act());
      mse_loss_grad(st.y->data(), st.label->data(), act(), st.dy->data());
      st.y.reset();
      st.label.reset();
    }
    st.dh = alloc(act() * 4);
    if (r.stage > 0) st.dx = alloc(act());
    stage_backward_input(stage(r), st.h->data(), st.dy->data(), c_.rows(), st.dh->data(),
                         st.dx ? st.dx->data() : nullptr);
    st.h.reset();
    if (zb) {
      weight_queue_.push_back(r);
    } else {
      weight_grads(r);
    }
  }

  void weight(const ChunkRef& r) {
    FF_INVARIANT(!weight_queue_.empty(), "rank {}: W of stage {} chunk {} with no deferred B",
                 rank_, r.stage, r.chunk);
    FF_INVARIANT(weight_queue_.front() == r,
                 "rank {}: W of stage {} chunk {}, but the oldest deferred B is stage {} chunk {}",
                 rank_, r.stage, r.chunk, weight_queue_.front().stage, weight_queue_.front().chunk);
    weight_queue_.pop_front();
    weight_grads(r);
  }

  void weight_grads(const ChunkRef& r) {
    ChunkState& st = state(r);
    stage_backward_weight(stage(r), st.x->data(), st.a->data(), st.dh->data(), st.dy->data(),
                          c_.rows());
    st.x.reset();
    st.a.reset();
    st.dh.reset();
    st.dy.reset();
  }

  // Every receive was used and every deferred weight grad done: anything else is a schedule
  // that does not match this rank's work.
  void check_finished() const {
    FF_INVARIANT(weight_queue_.empty(), "rank {}: {} zero-bubble B without their W", rank_,
                 weight_queue_.size());
    for (const ChunkState& st : states_)
      FF_INVARIANT(st.x_recv < 0 && st.dy_recv < 0, "rank {}: a receive no op used", rank_);
  }

  const Schedule& s_;
  const PipelineModelConfig& c_;
  std::vector<MlpStage<T>>& stages_;
  Transport& t_;
  const ExecOptions opt_;
  const int rank_;
  std::vector<ChunkState> states_;  // [copy][chunk]
  std::deque<ChunkRef> weight_queue_;
  RankStepResult<T> result_;
};

}  // namespace

const char* compute_kind_name(ComputeKind k) {
  switch (k) {
    case ComputeKind::F:
      return "F";
    case ComputeKind::B:
      return "B";
    case ComputeKind::Bzb:
      return "Bzb";
    case ComputeKind::W:
      return "W";
    case ComputeKind::FB:
      return "FB";
  }
  return "?";
}

void add_op_times(OpTimes& into, const OpTimes& more) {
  for (size_t k = 0; k < into.size(); ++k) {
    into[k].count += more[k].count;
    into[k].seconds += more[k].seconds;
  }
}

template <typename T>
std::vector<MlpStage<T>> build_rank_stages(const Schedule& s, int rank,
                                           const PipelineModelConfig& c) {
  std::vector<MlpStage<T>> stages;
  for (const ChunkRef& held : s.rank_stages[size_t(rank)])
    stages.push_back(MlpStage<T>::init(c.hidden, c.seed, held.stage));
  return stages;
}

template <typename T>
RankStepResult<T> run_rank_step(const Schedule& s, const PipelineModelConfig& c,
                                std::vector<MlpStage<T>>& stages, Transport& transport,
                                const ExecOptions& opt) {
  return RankExecutor<T>(s, c, stages, transport, opt).run();
}

template std::vector<MlpStage<float>> build_rank_stages<float>(const Schedule&, int,
                                                               const PipelineModelConfig&);
template std::vector<MlpStage<double>> build_rank_stages<double>(const Schedule&, int,
                                                                 const PipelineModelConfig&);
template RankStepResult<float> run_rank_step<float>(const Schedule&, const PipelineModelConfig&,
                                                    std::vector<MlpStage<float>>&, Transport&,
                                                    const ExecOptions&);
template RankStepResult<double> run_rank_step<double>(const Schedule&, const PipelineModelConfig&,
                                                      std::vector<MlpStage<double>>&, Transport&,
                                                      const ExecOptions&);

}  // namespace ff::plan
