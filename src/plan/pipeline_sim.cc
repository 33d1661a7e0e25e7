#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "plan/pipeline_sim.h"

namespace ff::plan {

namespace {

constexpr double kNever = -1;

// Per (stage, chunk, direction): when each piece of data exists. Produced times are local (the
// producing rank's compute end); sent times include the p2p latency; received times are what the
// consuming rank's RecvForward / RecvBackward recorded.
struct DataTimes {
  explicit DataTimes(size_t n)
      : act(n, kNever),
        act_sent(n, kNever),
        act_recv(n, kNever),
        grad(n, kNever),
        grad_sent(n, kNever),
        grad_recv(n, kNever) {}
  std::vector<double> act, act_sent, act_recv;     // forward output of the chunk
  std::vector<double> grad, grad_sent, grad_recv;  // input grad of the chunk (the B's output)
};

class Simulator {
 public:
  Simulator(const Schedule& s, const OpDurations& d)
      : s_(s), d_(d), data_(static_cast<size_t>(s.num_dirs) * s.num_stages * s.num_chunks) {}

  SimResult run() {
    const int R = s_.num_ranks;
    SimResult out;
    out.busy.assign(R, 0);
    out.peak_activations.assign(R, 0);
    out.timeline.assign(R, {});
    pos_.assign(R, 0);
    now_.assign(R, 0);
    live_.assign(R, 0);
    // Round-robin: advance every rank as far as its inputs allow, until all are done. A sweep in
    // which nobody moves means the schedule cannot finish.
    for (;;) {
      bool moved = false, done = true;
      for (int r = 0; r < R; ++r) {
        while (pos_[r] < s_.ops[r].size() && step(r, out)) moved = true;
        done = done && pos_[r] == s_.ops[r].size();
      }
      if (done) break;
      if (!moved) report_stall();
    }
    out.step_time = *std::max_element(now_.begin(), now_.end());
    out.bubble.resize(R);
    for (int r = 0; r < R; ++r) out.bubble[r] = out.step_time - out.busy[r];
    return out;
  }

 private:
  size_t index(const ChunkRef& c) const {
    FF_INVARIANT(c.stage >= 0 && c.stage < s_.num_stages && c.chunk >= 0 &&
                     c.chunk < s_.num_chunks && c.dir >= 0 && c.dir < s_.num_dirs,
                 "{}: op names stage {} chunk {} dir {} outside the schedule",
                 method_name(s_.method), c.stage, c.chunk, c.dir);
    return (static_cast<size_t>(c.dir) * s_.num_stages + c.stage) * s_.num_chunks + c.chunk;
  }
  static ChunkRef prev_stage(ChunkRef c) { return {c.stage - 1, c.chunk, c.dir}; }
  static ChunkRef next_stage(ChunkRef c) { return {c.stage + 1, c.chunk, c.dir}; }

  // When `c`'s forward input is available on rank r, or kNever if not yet.
  double input_time(int r, const ChunkRef& c) const {
    if (c.stage == 0) return 0;
    const ChunkRef p = prev_stage(c);
    if (s_.rank_of(p.stage, p.dir) == r) return data_.act[index(p)];
    return data_.act_recv[index(c)];
  }
  // When the gradient of `c`'s output is available on rank r (the loss's, on the last stage).
  double output_grad_time(int r, const ChunkRef& c) const {
    if (c.stage == s_.num_stages - 1) return data_.act[index(c)];
    const ChunkRef n = next_stage(c);
    if (s_.rank_of(n.stage, n.dir) == r) return data_.grad[index(n)];
    return data_.grad_recv[index(c)];
  }

  double duration(const Op& op) const {
    switch (op.kind) {
      case OpKind::Forward:
        return d_.f;
      case OpKind::Backward:
        return op.zb ? d_.b - d_.w : d_.b;
      case OpKind::Weight:
        return d_.w;
      case OpKind::ForwardBackward:
        return d_.fb;
      default:
        return 0;
    }
  }

  // Runs rank r's next op if it can; false if it must wait.
  bool step(int r, SimResult& out) {
    const Op& op = s_.ops[r][pos_[r]];
    double ready = now_[r];
    switch (op.kind) {
      case OpKind::SendForward:
        FF_INVARIANT(data_.act[index(op.a)] != kNever, "rank {}: SendForward before its F", r);
        data_.act_sent[index(op.a)] = now_[r] + d_.p2p;
        ++pos_[r];
        return true;
      case OpKind::SendBackward:
        FF_INVARIANT(data_.grad[index(op.a)] != kNever, "rank {}: SendBackward before its B", r);
        data_.grad_sent[index(op.a)] = now_[r] + d_.p2p;
        ++pos_[r];
        return true;
      case OpKind::RecvForward: {
        const double t = data_.act_sent[index(prev_stage(op.a))];
        if (t == kNever) return false;
        data_.act_recv[index(op.a)] = t;
        ++pos_[r];
        return true;
      }
      case OpKind::RecvBackward: {
        const double t = data_.grad_sent[index(next_stage(op.a))];
        if (t == kNever) return false;
        data_.grad_recv[index(op.a)] = t;
        ++pos_[r];
        return true;
      }
      case OpKind::Forward:
      case OpKind::Backward:
      case OpKind::ForwardBackward:
      case OpKind::Weight:
        break;
    }
    const bool has_f = op.kind == OpKind::Forward || op.kind == OpKind::ForwardBackward;
    const bool has_b = op.kind == OpKind::Backward || op.kind == OpKind::ForwardBackward;
    const ChunkRef& bref = op.kind == OpKind::ForwardBackward ? op.b : op.a;
    if (has_f) {
      const double t = input_time(r, op.a);
      if (t == kNever) return false;
      ready = std::max(ready, t);
    }
    if (has_b) {
      const double t = output_grad_time(r, bref);
      if (t == kNever) return false;
      ready = std::max(ready, t);
    }
    const double end = ready + duration(op);
    out.timeline[r].push_back({static_cast<int>(pos_[r]), ready, end});
    out.busy[r] += end - ready;
    now_[r] = end;
    if (has_f) {
      data_.act[index(op.a)] = end;
      out.peak_activations[r] = std::max(out.peak_activations[r], ++live_[r]);
    }
    if (has_b) {
      data_.grad[index(bref)] = end;
      if (op.kind == OpKind::ForwardBackward || !op.zb) --live_[r];
    }
    if (op.kind == OpKind::Weight) --live_[r];
    ++pos_[r];
    return true;
  }

  [[noreturn]] void report_stall() const {
    for (int r = 0; r < s_.num_ranks; ++r) {
      if (pos_[r] == s_.ops[r].size()) continue;
      const Op& op = s_.ops[r][pos_[r]];
      fail_invariant("{} schedule cannot finish: rank {} waits at op {} ({} stage {} chunk {})",
                     method_name(s_.method), r, pos_[r], op_kind_name(op.kind), op.a.stage,
                     op.a.chunk);
    }
    fail_invariant("{} schedule cannot finish", method_name(s_.method));
  }

  const Schedule& s_;
  const OpDurations& d_;
  DataTimes data_;
  std::vector<size_t> pos_;
  std::vector<double> now_;
  std::vector<int> live_;
};

}  // namespace

void check_durations(const OpDurations& d) {
  const std::pair<const char*, double> fields[] = {
      {"F", d.f}, {"B", d.b}, {"W", d.w}, {"F&B", d.fb}, {"p2p", d.p2p}};
  for (const auto& [name, v] : fields) {
    FF_CHECK(std::isfinite(v) && v >= 0, "duration {} must be finite and >= 0, got {}", name, v);
  }
  FF_CHECK(d.w <= d.b, "duration W ({}) cannot exceed B ({}): W is part of a full backward", d.w,
           d.b);
}

double SimResult::max_bubble() const {
  return bubble.empty() ? 0 : *std::max_element(bubble.begin(), bubble.end());
}

int SimResult::max_peak_activations() const {
  return peak_activations.empty()
             ? 0
             : *std::max_element(peak_activations.begin(), peak_activations.end());
}

SimResult simulate(const Schedule& s, const OpDurations& d) {
  check_durations(d);
  return Simulator(s, d).run();
}

double readme_bubble(Method m, int pp, const OpDurations& d) {
  switch (m) {
    case Method::OneF1B:
      return (pp - 1) * (d.f + d.b);
    case Method::ZB1P:
      return (pp - 1) * (d.f + d.b - 2 * d.w);
    case Method::DualPipe:
    case Method::DualPipeV:
      return (pp / 2 - 1) * (d.fb + d.b - 3 * d.w);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace ff::plan
