// The train-pipeline driver on in-process ranks: --check end to end, a mismatch reported, and the
// checks that must fail alike on every rank before any point-to-point message.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "plan/pipeline_results.h"
#include "plan/plan.h"
#include "thread_ranks.h"

namespace ff::plan {
namespace {

PipelineRunOptions small_run(Method m, int pp, int chunks) {
  PipelineRunOptions o;
  o.method = m;
  o.pp = pp;
  o.chunks = chunks;
  o.model = {.hidden = 8, .seq = 2, .micro_batch = 2, .seed = 233};
  o.dtype = DType::F64;
  o.check = true;
  return o;
}

// The driver end to end on threads: --check passes, the report has every chunk's loss.
TEST(PipelineRun, CheckPassesForEveryMethod) {
  for (Method m : {Method::OneF1B, Method::ZB1P, Method::DualPipe, Method::DualPipeV})
    for (bool forward_only : {false, true}) {
      PipelineRunOptions o = small_run(m, 4, 8);
      o.forward_only = forward_only;
      o.steps = 2;
      const Schedule s0 = make_schedule(m, 4, 8);
      PipelineRunReport report;
      const auto errors = run_ranks(s0.num_ranks, [&](int r, Transport& t) {
        const Schedule s = prepare_pipeline_run(o, t);
        PipelineRunReport mine = run_pipeline(o, s, t);
        if (r == 0) report = mine;
      });
      for (const std::string& e : errors) EXPECT_EQ(e, "");
      SCOPED_TRACE(std::string(method_name(m)) + (forward_only ? " forward-only" : ""));
      EXPECT_EQ(report.ranks, s0.num_ranks);
      EXPECT_EQ(report.losses.size(), 8u);
      EXPECT_EQ(report.step_seconds.size(), 2u);
      ASSERT_TRUE(report.check.has_value());
      EXPECT_TRUE(report.check->passed) << report.check->failure;
      EXPECT_TRUE(report.check->losses_bit_exact);
      EXPECT_EQ(report.check->outputs_identical, forward_only);
      EXPECT_LE(report.check->max_grad_rel_error, 1e-12);
      const auto ref = reference_step<double>(o.model, s0.num_stages, 8, true);
      for (int c = 0; c < 8; ++c) EXPECT_EQ(report.losses[size_t(c)], ref.losses[size_t(c)]);
    }
}

// A wrong result fails the check with the first mismatch named: a loss one ulp off, a grad
// element off by 1e-9 relative, an output one ulp off.
TEST(PipelineRun, CheckReportsTheFirstMismatch) {
  for (bool forward_only : {false, true}) {
    PipelineRunOptions o = small_run(Method::OneF1B, 2, 4);
    o.forward_only = forward_only;
    const Schedule s = make_schedule(o.method, o.pp, o.chunks);
    std::vector<RankStepResult<double>> results(2);
    std::vector<std::vector<MlpStage<double>>> stages(2);
    const auto errors = run_ranks(2, [&](int r, Transport& t) {
      stages[size_t(r)] = build_rank_stages<double>(s, r, o.model);
      results[size_t(r)] = run_rank_step(s, o.model, stages[size_t(r)], t, {forward_only});
    });
    ASSERT_EQ(errors, std::vector<std::string>(2));
    const auto check = [&] {
      std::vector<std::vector<std::byte>> gathered;
      for (size_t r = 0; r < 2; ++r)
        gathered.push_back(
            encode_rank_results(o, {0.5}, results[r].op_times, results[r], stages[r]));
      const PipelineRunReport report = collect_results<double>(o, s, gathered);
      EXPECT_EQ(report.step_seconds, std::vector<double>{0.5});
      return *report.check;
    };
    EXPECT_TRUE(check().passed) << check().failure;

    ChunkLoss<double>& loss = results[1].losses[2];  // rank 1 holds the last stage
    const double saved = loss.loss;
    loss.loss = std::nextafter(saved, 2.0);
    PipelineCheck c = check();
    EXPECT_FALSE(c.passed);
    EXPECT_FALSE(c.losses_bit_exact);
    EXPECT_EQ(c.failure.rfind("the loss of chunk " + std::to_string(loss.chunk) + " is ", 0), 0u)
        << c.failure;
    loss.loss = saved;

    if (forward_only) {
      double& y = results[1].outputs[1].y[3];
      y = std::nextafter(y, 1e9);
      c = check();
      EXPECT_FALSE(c.passed);
      EXPECT_FALSE(c.outputs_identical);
      EXPECT_EQ(
          c.failure.rfind(
              "the output of chunk " + std::to_string(results[1].outputs[1].chunk) + " differs", 0),
          0u)
          << c.failure;
    } else {
      stages[0][0].g_w2[5] *= 1 + 1e-9;
      c = check();
      EXPECT_FALSE(c.passed);
      EXPECT_TRUE(c.losses_bit_exact);
      EXPECT_GT(c.max_grad_rel_error, 1e-12);
      EXPECT_EQ(c.failure.rfind("the grad of stage 0 w2 is off by ", 0), 0u) << c.failure;
      stages[0][0].g_w2[5] = std::numeric_limits<double>::quiet_NaN();  // a NaN is not "close"
      c = check();
      EXPECT_FALSE(c.passed);
      EXPECT_EQ(c.failure.rfind("the grad of stage 0 w2 is off by inf", 0), 0u) << c.failure;
    }
  }
}

// What must fail on every rank with the same line, before any point-to-point message.
std::vector<std::string> prepare_errors(int ranks,
                                        const std::function<PipelineRunOptions(int)>& options) {
  return run_ranks(ranks, [&](int r, Transport& t) { prepare_pipeline_run(options(r), t); });
}

void expect_all(const std::vector<std::string>& errors, const std::string& want) {
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], want) << "rank " << r;
}

TEST(PipelineRun, BadArgumentsFailOnEveryRank) {
  expect_all(prepare_errors(4, [](int) { return small_run(Method::DualPipe, 4, 6); }),
             "dualpipe: chunks must be even and at least 2*pp = 8, got 6");
  expect_all(prepare_errors(3, [](int) { return small_run(Method::DualPipe, 3, 6); }),
             "dualpipe: pp must be even (rank r pairs with rank pp-1-r), got 3");
  expect_all(prepare_errors(2, [](int) { return small_run(Method::DualPipeV, 4, 3); }),
             "dualpipev: chunks must be at least 2 * ranks = pp = 4, got 3");
  expect_all(prepare_errors(3, [](int) { return small_run(Method::DualPipe, 4, 8); }),
             "dualpipe with --pp 4 needs 4 ranks, but the job has 3 (start it with mpirun -np 4)");
  expect_all(prepare_errors(4, [](int) { return small_run(Method::DualPipeV, 4, 8); }),
             "dualpipev with --pp 4 needs 2 ranks, but the job has 4 (start it with mpirun -np 2)");
  expect_all(prepare_errors(2,
                            [](int r) {
                              PipelineRunOptions o = small_run(Method::OneF1B, 2, 4);
                              if (r == 1) o.model.hidden = 16;
                              return o;
                            }),
             "ranks disagree on --hidden: rank 0 has 8, rank 1 has 16");
  // A disagreement wins over an error only some ranks would see.
  expect_all(
      prepare_errors(2, [](int r) { return small_run(Method::DualPipe, 2, r == 0 ? 4 : 3); }),
      "ranks disagree on --chunks: rank 0 has 4, rank 1 has 3");
  expect_all(prepare_errors(2,
                            [](int r) {
                              PipelineRunOptions o = small_run(Method::OneF1B, 2, 4);
                              o.dtype = r == 0 ? DType::F64 : DType::F32;
                              return o;
                            }),
             "ranks disagree on --dtype: rank 0 has f64, rank 1 has f32");
  // Too large for memory: refused before anything is allocated (each stage is 28 H^2 elements).
  const auto huge = prepare_errors(2, [](int) {
    PipelineRunOptions o = small_run(Method::OneF1B, 2, 4);
    o.model.hidden = 1 << 20;
    return o;
  });
  for (const std::string& e : huge) {
    EXPECT_EQ(e.rfind("--hidden 1048576 with 2 ranks and --check needs about ", 0), 0u) << e;
  }
}

}  // namespace
}  // namespace ff::plan
