// validate_schedule: the structural checks, then a unit-duration simulation to show the schedule
// can finish (no rank waits for data that is never sent).
#include <vector>

#include "core/error.h"
#include "plan/pipeline_schedule.h"
#include "plan/pipeline_sim.h"

namespace ff::plan {

namespace {

class Validator {
 public:
  explicit Validator(const Schedule& s)
      : s_(s),
        n_(static_cast<size_t>(s.num_dirs) * s.num_stages * s.num_chunks),
        f_(n_, 0),
        b_(n_, 0),
        zb_(n_, 0),
        w_(n_, 0),
        sent_f_(n_, 0),
        recv_f_(n_, 0),
        sent_b_(n_, 0),
        recv_b_(n_, 0) {}

  void run() {
    const std::string_view m = method_name(s_.method);
    FF_INVARIANT(static_cast<int>(s_.ops.size()) == s_.num_ranks, "{}: {} op lists for {} ranks", m,
                 s_.ops.size(), s_.num_ranks);
    for (int r = 0; r < s_.num_ranks; ++r) {
      for (const Op& op : s_.ops[r]) check_op(r, op);
    }
    for (int d = 0; d < s_.num_dirs; ++d) {
      for (int st = 0; st < s_.num_stages; ++st) {
        for (int c = 0; c < s_.num_chunks; ++c) {
          const ChunkRef ref{st, c, d};
          if (!in_direction(ref)) continue;
          const size_t i = index(ref);
          FF_INVARIANT(f_[i] == 1 && b_[i] == 1, "{}: stage {} chunk {} has {} F and {} B", m, st,
                       c, f_[i], b_[i]);
          FF_INVARIANT(w_[i] == zb_[i], "{}: stage {} chunk {} has {} zero-bubble B and {} W", m,
                       st, c, zb_[i], w_[i]);
          const bool remote_in = st > 0 && s_.rank_of(st - 1, d) != s_.rank_of(st, d);
          FF_INVARIANT(recv_f_[i] == (remote_in ? 1 : 0) &&
                           count(sent_f_, {st - 1, c, d}) == (remote_in ? 1 : 0),
                       "{}: stage {} chunk {}: activation transfers do not pair up", m, st, c);
          const bool remote_out =
              st + 1 < s_.num_stages && s_.rank_of(st + 1, d) != s_.rank_of(st, d);
          FF_INVARIANT(recv_b_[i] == (remote_out ? 1 : 0) &&
                           count(sent_b_, {st + 1, c, d}) == (remote_out ? 1 : 0),
                       "{}: stage {} chunk {}: gradient transfers do not pair up", m, st, c);
        }
      }
    }
    simulate(s_, OpDurations{});  // throws ff::InternalError if some rank can never go on
  }

 private:
  // DualPipe runs the first half of the chunks in direction 0 and the rest in direction 1.
  bool in_direction(const ChunkRef& c) const {
    if (s_.num_dirs == 1) return c.dir == 0;
    return (c.chunk < s_.num_chunks / 2) == (c.dir == 0);
  }
  size_t index(const ChunkRef& c) const {
    if (c.stage < 0 || c.stage >= s_.num_stages) return n_;  // no such stage: a sentinel slot
    return (static_cast<size_t>(c.dir) * s_.num_stages + c.stage) * s_.num_chunks + c.chunk;
  }
  // Ops' refs are checked before they are counted, so they always index inside.
  int& at(std::vector<int>& v, const ChunkRef& c) { return v[index(c)]; }
  int count(const std::vector<int>& v, const ChunkRef& c) const {
    const size_t i = index(c);
    return i < n_ ? v[i] : 0;
  }

  void check_ref(int r, const Op& op, const ChunkRef& c) const {
    FF_INVARIANT(c.stage >= 0 && c.stage < s_.num_stages && c.chunk >= 0 &&
                     c.chunk < s_.num_chunks && c.dir >= 0 && c.dir < s_.num_dirs &&
                     in_direction(c),
                 "{}: rank {} {} names stage {} chunk {} dir {}", method_name(s_.method), r,
                 op_kind_name(op.kind), c.stage, c.chunk, c.dir);
    FF_INVARIANT(s_.rank_of(c.stage, c.dir) == r,
                 "{}: rank {} runs {} of stage {}, held by rank {}", method_name(s_.method), r,
                 op_kind_name(op.kind), c.stage, s_.rank_of(c.stage, c.dir));
  }

  void check_op(int r, const Op& op) {
    const std::string_view m = method_name(s_.method);
    check_ref(r, op, op.a);
    switch (op.kind) {
      case OpKind::Forward:
        ++at(f_, op.a);
        break;
      case OpKind::ForwardBackward:
        check_ref(r, op, op.b);
        ++at(f_, op.a);
        FF_INVARIANT(at(f_, op.b) == 1, "{}: rank {} B of chunk {} before its F", m, r, op.b.chunk);
        ++at(b_, op.b);
        break;
      case OpKind::Backward:
        FF_INVARIANT(at(f_, op.a) == 1, "{}: rank {} B of chunk {} before its F", m, r, op.a.chunk);
        ++at(b_, op.a);
        if (op.zb) ++at(zb_, op.a);
        break;
      case OpKind::Weight:
        FF_INVARIANT(at(zb_, op.a) > at(w_, op.a),
                     "{}: rank {} W of stage {} chunk {} without a "
                     "zero-bubble B before it",
                     m, r, op.a.stage, op.a.chunk);
        ++at(w_, op.a);
        break;
      case OpKind::SendForward:
        FF_INVARIANT(op.peer == s_.rank_of(op.a.stage + 1, op.a.dir),
                     "{}: rank {} sends stage "
                     "{}'s activation to rank {}",
                     m, r, op.a.stage, op.peer);
        ++at(sent_f_, op.a);
        break;
      case OpKind::RecvForward:
        FF_INVARIANT(op.peer == s_.rank_of(op.a.stage - 1, op.a.dir),
                     "{}: rank {} receives stage "
                     "{}'s input from rank {}",
                     m, r, op.a.stage, op.peer);
        ++at(recv_f_, op.a);
        break;
      case OpKind::SendBackward:
        FF_INVARIANT(op.peer == s_.rank_of(op.a.stage - 1, op.a.dir),
                     "{}: rank {} sends stage "
                     "{}'s input grad to rank {}",
                     m, r, op.a.stage, op.peer);
        ++at(sent_b_, op.a);
        break;
      case OpKind::RecvBackward:
        FF_INVARIANT(op.peer == s_.rank_of(op.a.stage + 1, op.a.dir),
                     "{}: rank {} receives stage "
                     "{}'s output grad from rank {}",
                     m, r, op.a.stage, op.peer);
        ++at(recv_b_, op.a);
        break;
    }
  }

  const Schedule& s_;
  const size_t n_;
  std::vector<int> f_, b_, zb_, w_, sent_f_, recv_f_, sent_b_, recv_b_;
};

}  // namespace

void validate_schedule(const Schedule& s) {
  Validator(s).run();
}

}  // namespace ff::plan
