// `fireflyer train-pipeline` without mpirun (a singleton MPI job of one rank): the one-rank
// schedule end to end, its JSON, and its errors. CMakeLists.txt's PipelineMpi.* tests run it under
// mpirun on 2 to 8 ranks.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"

namespace {

using ff::testing::run_cli;

const std::string kTiny = "--hidden 8 --seq 2 --micro-batch 2";

// Open MPI 4.1 leaves allocations behind at MPI_Finalize (its own, and those of the components it
// unloads), which LeakSanitizer reports in the sanitizer build; the commands started here must not
// fail on them. ctest runs each test in a process of its own, so this reaches only their children.
// The executor's own memory is leak-checked by tests/plan on in-process ranks.
const bool kNoMpiLeakReports = [] {
  setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
  return true;
}();

// DualPipeV with pp 2 runs both stages on one rank, the turn handed over locally.
TEST(TrainPipelineCli, OneRankDualPipeVChecksAgainstTheReference) {
  const auto r = run_cli(
      "train-pipeline --method dualpipev --pp 2 --chunks 3 --dtype f64 --check "
      "--json " +
      kTiny);
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["method"], "dualpipev");
  EXPECT_EQ(j["ranks"], 1);
  EXPECT_EQ(j["losses"].size(), 3u);
  EXPECT_TRUE(j["check"]["passed"].get<bool>());
  EXPECT_TRUE(j["check"]["losses_bit_exact"].get<bool>());
  EXPECT_EQ(j["check"]["grad_tolerance"].get<double>(), 1e-12);
  EXPECT_GT(j["step_time_s"].get<double>(), 0);
  for (const char* kind : {"F", "B", "Bzb", "W"})
    EXPECT_TRUE(j["op_time_s"][kind].is_number()) << kind << ": " << r.out;
  EXPECT_TRUE(j["op_time_s"]["FB"].is_number());
}

TEST(TrainPipelineCli, TextReportsLossesStepTimeAndCheck) {
  const auto r = run_cli(
      "train-pipeline --method dualpipev --pp 2 --chunks 2 --forward-only "
      "--check " +
      kTiny);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("dualpipev pp=2 ranks=1 chunks=2 hidden=8 seq=2 micro-batch=2 f32 "
                       "forward-only\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("loss[1] "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step time "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("check ok: 2 losses bit-exact, outputs identical\n"), std::string::npos)
      << r.out;
}

TEST(TrainPipelineCli, ErrorsAreOneLineAndExitOne) {
  auto r = run_cli("train-pipeline --method dualpipe --pp 4 --chunks 8 " + kTiny);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out,
            "error: dualpipe with --pp 4 needs 4 ranks, but the job has 1 (start it with mpirun "
            "-np 4)\n");
  r = run_cli("train-pipeline --method gpipe " + kTiny);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out,
            "error: unknown pipeline method 'gpipe' (expected 1f1b, zb1p, dualpipe or "
            "dualpipev)\n");
  EXPECT_NE(run_cli("train-pipeline --dtype bf16").status, 0);
  EXPECT_NE(run_cli("train-pipeline --hidden 0").status, 0);
}

}  // namespace
