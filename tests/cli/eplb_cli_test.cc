// fireflyer eplb: the README example in JSON and text, CSV input, --spread, and one-line errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli_run.h"

namespace {

namespace fs = std::filesystem;
using ff::testing::CliRun;
using ff::testing::run_cli;
using json = nlohmann::json;

const std::string kFixtures = std::string(FF_FIXTURES_DIR) + "/eplb";
const std::string kReadmeArgs = " --replicas 16 --groups 4 --nodes 2 --gpus 8";

// A scratch directory of this process's own, removed with the fixture.
class CliEplb : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ff_cli_eplb_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  // Runs a command that must fail: exit status 1, nothing on stdout, one line on stderr.
  std::string error_line(const std::string& args) {
    const CliRun out = run_cli(args, "2>/dev/null");
    const CliRun err = run_cli(args, "2>&1 >/dev/null");
    EXPECT_EQ(err.status, 1) << args;
    EXPECT_EQ(out.out, "") << args;
    EXPECT_EQ(std::count(err.out.begin(), err.out.end(), '\n'), 1) << err.out;
    return err.out;
  }
  fs::path dir_;
};

TEST_F(CliEplb, ReadmeExampleAsJson) {
  const CliRun r = run_cli("eplb --load " + kFixtures + "/readme_example.json --json" + kReadmeArgs,
                           "2>/dev/null");
  ASSERT_EQ(r.status, 0);
  const json doc = json::parse(r.out);  // throws on anything but exactly one JSON value
  ASSERT_TRUE(doc.is_object());
  std::set<std::string> keys;
  for (const auto& [key, value] : doc.items()) keys.insert(key);
  EXPECT_EQ(keys, (std::set<std::string>{"phy2log", "log2phy", "logcnt", "gpu_load", "imbalance"}));
  EXPECT_EQ(doc["phy2log"], json::parse("[[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],"
                                        " [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]"));
  EXPECT_EQ(doc["logcnt"], json::parse("[[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1],"
                                       " [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]]"));
  // log2phy: [layer][expert][max count 2], -1 padded, consistent with phy2log.
  ASSERT_EQ(doc["log2phy"].size(), 2u);
  for (int l = 0; l < 2; ++l) {
    ASSERT_EQ(doc["log2phy"][l].size(), 12u);
    for (int e = 0; e < 12; ++e) {
      const json& slots = doc["log2phy"][l][e];
      ASSERT_EQ(slots.size(), 2u);
      for (int r = 0; r < 2; ++r) {
        if (r < doc["logcnt"][l][e].get<int>())
          EXPECT_EQ(doc["phy2log"][l][slots[r].get<int>()].get<int>(), e);
        else
          EXPECT_EQ(slots[r].get<int>(), -1);
      }
    }
  }
  EXPECT_EQ(doc["log2phy"][0][1], json::parse("[15, 13]"));  // rank 0 is the original
  ASSERT_EQ(doc["gpu_load"].size(), 2u);
  ASSERT_EQ(doc["gpu_load"][0].size(), 8u);
  EXPECT_TRUE(doc["gpu_load"][0][0].is_number_float());
  EXPECT_DOUBLE_EQ(doc["gpu_load"][0][0].get<double>(), 121.5);
  EXPECT_DOUBLE_EQ(doc["gpu_load"][1][1].get<double>(), 179.5);
  EXPECT_NEAR(doc["imbalance"]["after"][0].get<double>(), 1.21, 0.005);
  EXPECT_NEAR(doc["imbalance"]["after"][1].get<double>(), 1.24, 0.005);
  EXPECT_NEAR(doc["imbalance"]["before"][0].get<double>(), 2.08, 0.005);
  EXPECT_NEAR(doc["imbalance"]["before"][1].get<double>(), 2.28, 0.005);
}

TEST_F(CliEplb, ReadmeExampleAsText) {
  const CliRun r = run_cli("eplb --load " + kFixtures + "/readme_example.json" + kReadmeArgs);
  ASSERT_EQ(r.status, 0) << r.out;
  const std::vector<std::string> want = {
      "eplb: 2 layers x 12 experts -> 16 replicas on 8 GPUs (2 nodes, 4 groups), hierarchical "
      "policy\n",
      "layer 0: imbalance (max / mean GPU load) 2.08 before, 1.21 after\n",
      "  gpu 0 (node 0): load 121.5, experts 5 6\n",
      "  gpu 7 (node 1): load 152, experts 11 1\n",
      "layer 1: imbalance (max / mean GPU load) 2.28 before, 1.24 after\n",
      "  gpu 3 (node 0): load 172, experts 8 9\n",
  };
  for (const std::string& line : want) EXPECT_NE(r.out.find(line), std::string::npos) << line;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1 + 2 * (1 + 8));
}

// CSV (one layer a line, blank lines and spaces allowed) gives the same plan as JSON.
TEST_F(CliEplb, CsvInput) {
  const std::string json_out =
      run_cli("eplb --json --load " + kFixtures + "/readme_example.json" + kReadmeArgs).out;
  EXPECT_EQ(run_cli("eplb --json --load " + kFixtures + "/readme_example.csv" + kReadmeArgs).out,
            json_out);
  const std::string csv = write("spaced.csv",
                                "\n  90,132, 40 ,61,104,165,39,4,73,56,183,86\r\n\n"
                                "20,107,104,64,19,197,187,157,172,86,16,27  \n\n");
  EXPECT_EQ(run_cli("eplb --json --load " + csv + kReadmeArgs).out, json_out);
  // Defaults: one slot per expert, one GPU.
  const CliRun r =
      run_cli("eplb --json --load " + kFixtures + "/readme_example.csv", "2>/dev/null");
  ASSERT_EQ(r.status, 0);
  const json doc = json::parse(r.out);
  EXPECT_EQ(doc["phy2log"][0].size(), 12u);
  EXPECT_EQ(doc["gpu_load"][0], json::parse("[1033.0]"));
}

// Expert 3 (28) gets 4 copies on 4 GPUs: two share a GPU unless --spread.
TEST_F(CliEplb, Spread) {
  const std::string loads = write("hot.json", "[[8, 2, 18, 28]]");
  const auto copies_share_a_gpu = [](const json& doc) {
    for (int g = 0; g < 4; ++g)
      if (doc["phy2log"][0][2 * g] == doc["phy2log"][0][2 * g + 1]) return true;
    return false;
  };
  const std::string args = "eplb --json --load " + loads + " --replicas 8 --gpus 4";
  EXPECT_TRUE(copies_share_a_gpu(json::parse(run_cli(args, "2>/dev/null").out)));
  EXPECT_FALSE(copies_share_a_gpu(json::parse(run_cli(args + " --spread", "2>/dev/null").out)));
}

TEST_F(CliEplb, MissingFile) {
  EXPECT_EQ(error_line("eplb --load /nonexistent/loads.json"),
            "error: /nonexistent/loads.json: cannot open: No such file or directory\n");
}

TEST_F(CliEplb, BadJson) {
  const std::string f = write("bad.json", "[[1, 2], [3,");
  EXPECT_EQ(error_line("eplb --load " + f).rfind("error: " + f + ": not valid JSON: ", 0), 0u);
  const std::string s = write("string.json", "[[1, 2], [3, \"x\"]]");
  EXPECT_EQ(error_line("eplb --load " + s),
            "error: " + s + ": layer 1, expert 1: \"x\" is not a number\n");
  const std::string flat = write("flat.json", "[1, 2]");
  EXPECT_EQ(error_line("eplb --load " + flat),
            "error: " + flat + ": layer 0 is not an array of expert loads\n");
}

TEST_F(CliEplb, BadCsvNumber) {
  const std::string f = write("bad.csv", "1, 2, 3\n\n4, 5x, 6\n");
  EXPECT_EQ(error_line("eplb --load " + f), "error: " + f + ":3: '5x' is not a number\n");
  const std::string empty_field = write("empty_field.csv", "1,,3\n");
  EXPECT_EQ(error_line("eplb --load " + empty_field),
            "error: " + empty_field + ":1: '' is not a number\n");
}

TEST_F(CliEplb, RaggedRows) {
  const std::string f = write("ragged.csv", "1, 2, 3\n4, 5\n");
  EXPECT_EQ(error_line("eplb --load " + f),
            "error: " + f +
                ": expert loads: layer 1 has 2 experts, layer 0 has 3 (rows must be "
                "equal)\n");
  const std::string empty = write("empty.json", "  \n");
  EXPECT_EQ(error_line("eplb --load " + empty),
            "error: " + empty + ": empty file, expected expert loads\n");
}

TEST_F(CliEplb, BadCounts) {
  const std::string f = " --load " + kFixtures + "/readme_example.json";
  EXPECT_EQ(error_line("eplb" + f + " --replicas 16 --gpus 0"),
            "error: num_gpus must be positive (got 0)\n");
  EXPECT_EQ(error_line("eplb" + f + " --replicas 15 --gpus 8"),
            "error: num_replicas (15) is not a multiple of num_gpus (8)\n");
  EXPECT_EQ(error_line("eplb" + f + " --replicas 8 --gpus 8"),
            "error: num_replicas (8) is less than num_experts (12): every expert needs a slot\n");
  EXPECT_EQ(error_line("eplb" + f + " --groups 5"),
            "error: num_experts (12) is not a multiple of num_groups (5)\n");
  EXPECT_EQ(error_line("eplb" + f + " --replicas 18 --nodes 2 --gpus 3"),
            "error: num_gpus (3) is not a multiple of num_nodes (2)\n");
  EXPECT_EQ(
      error_line("eplb" + f + " --replicas 16 --groups 3 --nodes 2 --gpus 8 --policy hierarchical"),
      "error: num_groups (3) is not a multiple of num_nodes (2), as the hierarchical policy "
      "needs\n");
  const std::string negative = write("negative.json", "[[1, 2], [3, -4]]");
  EXPECT_EQ(error_line("eplb --load " + negative),
            "error: expert load at layer 1, expert 1 is negative (-4)\n");
}

}  // namespace
