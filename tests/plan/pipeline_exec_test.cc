// The pipeline executor on in-process ranks (one thread each, ThreadHub) against the sequential
// reference: every method, several (pp, chunks), training and inference, float64 and float32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "plan/plan.h"
#include "thread_ranks.h"

namespace ff::plan {
namespace {

template <typename T>
struct RankRun {
  RankStepResult<T> result;
  std::vector<MlpStage<T>> stages;
};

template <typename T>
std::vector<RankRun<T>> run_step(const Schedule& s, const PipelineModelConfig& c,
                                 bool forward_only) {
  std::vector<RankRun<T>> runs(size_t(s.num_ranks));
  const auto errors = run_ranks(s.num_ranks, [&](int r, Transport& t) {
    RankRun<T>& run = runs[size_t(r)];
    run.stages = build_rank_stages<T>(s, r, c);
    run.result = run_rank_step(s, c, run.stages, t, ExecOptions{.forward_only = forward_only});
  });
  for (int r = 0; r < s.num_ranks; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
  return runs;
}

template <typename T>
double max_relative_error(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(double(got[i])) || !std::isfinite(double(want[i])))
      return std::numeric_limits<double>::infinity();  // std::max would drop a NaN
    diff = std::max(diff, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// One step of `s`: every chunk's loss exactly once and bit-exact; every stage's grad (its
// replicas summed) within `tolerance` of the reference's, relative to the tensor's largest
// element; with forward_only, every output bit-identical and the grads untouched.
template <typename T>
void expect_matches_reference(const Schedule& s, const PipelineModelConfig& c, bool forward_only,
                              double tolerance) {
  SCOPED_TRACE(std::string(method_name(s.method)) + " pp=" + std::to_string(s.pp) +
               " chunks=" + std::to_string(s.num_chunks) + (forward_only ? " forward-only" : ""));
  const auto runs = run_step<T>(s, c, forward_only);
  const ReferenceResult<T> ref = reference_step<T>(c, s.num_stages, s.num_chunks, forward_only);
  std::vector<int> loss_seen(size_t(s.num_chunks), 0), output_seen = loss_seen;
  std::vector<std::vector<T>> g_w1(size_t(s.num_stages)), g_w2 = g_w1;
  for (int r = 0; r < s.num_ranks; ++r) {
    const RankRun<T>& run = runs[size_t(r)];
    for (const ChunkLoss<T>& l : run.result.losses) {
      ++loss_seen[size_t(l.chunk)];
      EXPECT_EQ(std::memcmp(&l.loss, &ref.losses[size_t(l.chunk)], sizeof(T)), 0)
          << "loss of chunk " << l.chunk << ": " << l.loss << " vs " << ref.losses[size_t(l.chunk)];
    }
    for (const ChunkOutput<T>& o : run.result.outputs) {
      ++output_seen[size_t(o.chunk)];
      EXPECT_TRUE(o.y == ref.outputs[size_t(o.chunk)]) << "output of chunk " << o.chunk;
    }
    for (size_t i = 0; i < run.stages.size(); ++i) {
      const int stage = s.rank_stages[size_t(r)][i].stage;
      for (auto [sum, g] : {std::pair{&g_w1[size_t(stage)], &run.stages[i].g_w1},
                            std::pair{&g_w2[size_t(stage)], &run.stages[i].g_w2}}) {
        if (sum->empty()) sum->assign(g->size(), T(0));
        for (size_t k = 0; k < g->size(); ++k) (*sum)[k] += (*g)[k];
      }
    }
  }
  for (int chunk = 0; chunk < s.num_chunks; ++chunk) {
    EXPECT_EQ(loss_seen[size_t(chunk)], 1) << "chunk " << chunk;
    EXPECT_EQ(output_seen[size_t(chunk)], forward_only ? 1 : 0) << "chunk " << chunk;
  }
  for (int st = 0; st < s.num_stages; ++st) {
    if (forward_only) {
      for (T g : g_w1[size_t(st)]) ASSERT_EQ(g, T(0));
      continue;
    }
    EXPECT_LE(max_relative_error(g_w1[size_t(st)], ref.stages[size_t(st)].g_w1), tolerance)
        << "stage " << st << " w1";
    EXPECT_LE(max_relative_error(g_w2[size_t(st)], ref.stages[size_t(st)].g_w2), tolerance)
        << "stage " << st << " w2";
  }
}

const PipelineModelConfig kTiny{.hidden = 8, .seq = 3, .micro_batch = 2, .seed = 233};

TEST(PipelineExec, EveryMethodMatchesTheReferenceInFloat64) {
  const std::vector<std::tuple<Method, int, int>> cases = {
      {Method::OneF1B, 2, 1},     {Method::OneF1B, 4, 8},    {Method::OneF1B, 4, 3},
      {Method::ZB1P, 2, 5},       {Method::ZB1P, 4, 8},      {Method::ZB1P, 6, 13},
      {Method::DualPipe, 2, 4},   {Method::DualPipe, 4, 8},  {Method::DualPipe, 4, 14},
      {Method::DualPipe, 6, 20},  {Method::DualPipe, 8, 16}, {Method::DualPipeV, 2, 2},
      {Method::DualPipeV, 4, 4},  {Method::DualPipeV, 4, 9}, {Method::DualPipeV, 8, 10},
      {Method::DualPipeV, 16, 16}};
  for (const auto& [m, pp, chunks] : cases)
    for (bool split : {true, false}) {
      if (!split && m != Method::DualPipe && m != Method::DualPipeV) continue;
      const Schedule s = make_schedule(m, pp, chunks, {split});
      expect_matches_reference<double>(s, kTiny, /*forward_only=*/false, 1e-12);
    }
}

TEST(PipelineExec, InferenceOutputsAreIdentical) {
  for (Method m : {Method::OneF1B, Method::ZB1P, Method::DualPipe, Method::DualPipeV}) {
    expect_matches_reference<double>(make_schedule(m, 4, 8), kTiny, /*forward_only=*/true, 0);
    expect_matches_reference<float>(make_schedule(m, 4, 8), kTiny, /*forward_only=*/true, 0);
  }
}

TEST(PipelineExec, Float32MatchesTheReference) {
  const PipelineModelConfig c{.hidden = 16, .seq = 4, .micro_batch = 2, .seed = 5};
  for (Method m : {Method::OneF1B, Method::ZB1P, Method::DualPipe, Method::DualPipeV})
    expect_matches_reference<float>(make_schedule(m, 4, 12), c, /*forward_only=*/false,
                                    grad_tolerance(DType::F32));
}

// Upstream's own shape rule holds for us too: a hidden size that is not a multiple of the
// kernel's vector width or tiles exercises the tails.
TEST(PipelineExec, OddShapes) {
  const PipelineModelConfig c{.hidden = 5, .seq = 7, .micro_batch = 1, .seed = 1};
  expect_matches_reference<double>(make_schedule(Method::DualPipe, 4, 8), c, false, 1e-12);
  expect_matches_reference<float>(make_schedule(Method::DualPipeV, 4, 5), c, false,
                                  grad_tolerance(DType::F32));
}

// Op times: every compute op counted once under its kind.
TEST(PipelineExec, OpTimesCountEveryComputeOp) {
  for (Method m : {Method::OneF1B, Method::ZB1P, Method::DualPipe, Method::DualPipeV}) {
    const Schedule s = make_schedule(m, 4, 8);
    const auto runs = run_step<double>(s, kTiny, false);
    for (int r = 0; r < s.num_ranks; ++r) {
      int want[kNumComputeKinds] = {};
      for (const Op& op : s.ops[size_t(r)]) {
        if (op.kind == OpKind::Forward) ++want[int(ComputeKind::F)];
        if (op.kind == OpKind::Backward) ++want[int(op.zb ? ComputeKind::Bzb : ComputeKind::B)];
        if (op.kind == OpKind::Weight) ++want[int(ComputeKind::W)];
        if (op.kind == OpKind::ForwardBackward) ++want[int(ComputeKind::FB)];
      }
      const RankStepResult<double>& res = runs[size_t(r)].result;
      for (int k = 0; k < kNumComputeKinds; ++k) {
        EXPECT_EQ(res.op_times[size_t(k)].count, want[k])
            << method_name(m) << " rank " << r << " " << compute_kind_name(ComputeKind(k));
        EXPECT_GE(res.op_times[size_t(k)].seconds, 0);
      }
      EXPECT_GT(res.step_seconds, 0);
    }
  }
}

// A schedule whose W names another chunk than the oldest deferred B is refused, not guessed.
TEST(PipelineExec, AScheduleTheRankCannotFollowIsAnInternalError) {
  Schedule s = make_schedule(Method::ZB1P, 2, 3);
  std::vector<Op>& ops = s.ops[0];
  std::vector<size_t> ws;
  for (size_t i = 0; i < ops.size(); ++i)
    if (ops[i].kind == OpKind::Weight) ws.push_back(i);
  ASSERT_GE(ws.size(), 2u);
  std::swap(ops[ws[0]].a, ops[ws[1]].a);
  const auto errors = run_ranks(2, [&](int r, Transport& t) {
    auto stages = build_rank_stages<double>(s, r, kTiny);
    run_rank_step(s, kTiny, stages, t, {});
  });
  EXPECT_NE(errors[0].find("but the oldest deferred B is"), std::string::npos) << errors[0];
}

TEST(PipelineTransport, TagsNeverCollide) {
  std::vector<int64_t> tags;
  for (int kind = 0; kind < 2; ++kind)
    for (int dir = 0; dir < 2; ++dir)
      for (int stage = 0; stage < 4; ++stage)
        for (int chunk = 0; chunk < 6; ++chunk)
          tags.push_back(message_tag(MessageKind(kind), {stage, chunk, dir}, 4, 2));
  std::sort(tags.begin(), tags.end());
  EXPECT_EQ(std::adjacent_find(tags.begin(), tags.end()), tags.end());
  EXPECT_EQ(tags.front(), 0);
  EXPECT_EQ(tags.back(), int64_t(tags.size()) - 1);
}

// A receive nobody sends fails the waiting rank after the hub's timeout instead of hanging.
TEST(PipelineTransport, ThreadWaitTimesOut) {
  ThreadHub hub(2, /*timeout_s=*/0.2);
  auto t = hub.transport(0);
  double x = 0;
  const auto r = t->post_recv(&x, sizeof x, 1, 7);
  try {
    t->wait(r);
    FAIL() << "no timeout";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("a message from rank 1 with tag 7"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ff::plan
