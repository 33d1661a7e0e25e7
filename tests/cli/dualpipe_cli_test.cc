// `fireflyer dualpipe`: the simulator's command line, JSON, SVG and errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"

namespace {

using ff::testing::run_cli;

TEST(DualPipeCli, JsonHasBubblesStepTimeAndPeakActivations) {
  const auto r = run_cli("dualpipe --method dualpipe --pp 8 --chunks 20 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["bubble"].size(), 8u);
  EXPECT_EQ(j["peak_activations"].size(), 8u);
  EXPECT_DOUBLE_EQ(j["step_time"].get<double>(), 66);  // figure units: F=1 B=2 W=1 F&B=3
  EXPECT_DOUBLE_EQ(j["bubble"][0].get<double>(), 6);
  EXPECT_EQ(j["peak_activations"][0].get<int>(), 9);
}

TEST(DualPipeCli, EveryMethodMatchesItsFormulaWithDistinctDurations) {
  // The README's formulas with F=10 B=23 W=7 F&B=29, pp=8: 1F1B 231, ZB1P 133, DualPipe(V) 93
  // (with the report's overlapped middle pair).
  const std::pair<const char*, double> cases[] = {
      {"1f1b", 231}, {"zb1p", 133}, {"dualpipe", 93}, {"dualpipev", 93}};
  for (const auto& [method, bubble] : cases) {
    const auto r = run_cli(std::string("dualpipe --method ") + method +
                           " --pp 8 --chunks 16 --f 10 --b 23 --w 7 --fb 29 "
                           "--overlap-middle-pair --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    double max_bubble = 0;
    for (const auto& b : j["bubble"]) max_bubble = std::max(max_bubble, b.get<double>());
    EXPECT_DOUBLE_EQ(max_bubble, bubble) << method;
    EXPECT_DOUBLE_EQ(j["readme_bubble"].get<double>(), bubble) << method;
  }
}

TEST(DualPipeCli, TextReportAndSvg) {
  const std::string svg =
      (std::filesystem::temp_directory_path() / "ff_dualpipe_cli_test.svg").string();
  const auto r = run_cli("dualpipe --method dualpipev --pp 8 --chunks 10 --svg " + svg);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("dualpipev pp=8 ranks=4 chunks=10"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("README formula"), std::string::npos) << r.out;
  std::ifstream in(svg);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  EXPECT_EQ(text.rfind("<svg", 0), 0u);
  EXPECT_NE(text.find("Device 3"), std::string::npos);
  std::filesystem::remove(svg);
}

TEST(DualPipeCli, BadInputIsOneLineErrorAndExitOne) {
  const std::pair<const char*, const char*> cases[] = {
      {"dualpipe --method dualpipe --pp 5 --chunks 20",
       "error: dualpipe: pp must be even (rank r pairs with rank pp-1-r), got 5\n"},
      {"dualpipe --method dualpipe --pp 8 --chunks 10",
       "error: dualpipe: chunks must be even and at least 2*pp = 16, got 10\n"},
      {"dualpipe --method gpipe",
       "error: unknown pipeline method 'gpipe' (expected 1f1b, zb1p, dualpipe or dualpipev)\n"},
      {"dualpipe --method 1f1b --pp 4 --chunks 8 --w 5",
       "error: duration W (5) cannot exceed B (2): W is part of a full backward\n"},
      {"dualpipe --method 1f1b --pp 4 --chunks 8 --fb -3",
       "error: duration F&B must be finite and >= 0, got -3\n"},
      {"dualpipe --method 1f1b --pp 8 --chunks 10000 --svg /tmp/ff_never_written.svg",
       "error: the timeline has 160000 blocks, more than an SVG picture draws (50000); use fewer "
       "chunks or stages\n"},
      {"dualpipe --method 1f1b --pp 4 --chunks 8 --svg /nonexistent/dir/x.svg",
       "error: cannot write --svg file '/nonexistent/dir/x.svg'\n"},
  };
  for (const auto& [args, message] : cases) {
    const auto r = run_cli(args);
    EXPECT_EQ(r.status, 1) << args;
    EXPECT_EQ(r.out, message) << args;
  }
  EXPECT_NE(run_cli("dualpipe --pp x").status, 0);  // not a number: a usage error
}

}  // namespace
