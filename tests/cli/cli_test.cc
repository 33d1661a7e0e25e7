// The fireflyer command: exit codes and one-line errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cli_run.h"
#include "text/text.h"

namespace {

using ff::testing::CliRun;
using ff::testing::run_cli;

TEST(Cli, MissingModelIsOneLineErrorAndNonZeroExit) {
  const CliRun r = run_cli("generate --model /nonexistent/model --prompt hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out,
            "error: /nonexistent/model: no such file or directory (expected an HF checkpoint "
            "directory or a GGUF file)\n");
}

TEST(Cli, BadFlagsAreUsageErrors) {
  EXPECT_NE(run_cli("generate --prompt hi").status, 0);                 // --model missing
  EXPECT_NE(run_cli("frobnicate").status, 0);                           // unknown command
  EXPECT_NE(run_cli("generate -m x -p y --temperature -1").status, 0);  // out of range
}

TEST(Cli, GeneratesWithTheFixtureModel) {
  const std::string dir = std::string(FF_FIXTURES_DIR) + "/tiny-v3";
  if (!std::filesystem::exists(dir + "/tokenizer.json")) GTEST_SKIP() << "fixture tiny-v3 missing";
  const CliRun r = run_cli("generate --model " + dir + " --prompt 'The' -n 8 --ignore-eos");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("8 generated"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode"), std::string::npos) << r.out;
}

// A GGUF file works wherever a checkpoint directory does: the same weights in BF16 give the same
// greedy text; a damaged file is a one-line error and exit status 1.
TEST(Cli, GeneratesFromAGgufFile) {
  const std::string fx = FF_FIXTURES_DIR;
  const std::string args = " --prompt 'The' -n 12 --ignore-eos --no-stats";
  const CliRun dir = run_cli("generate --model " + fx + "/tiny-v3-bf16" + args, "2>/dev/null");
  const CliRun gguf =
      run_cli("generate --model " + fx + "/gguf-models/tiny-v3-bf16.gguf" + args, "2>/dev/null");
  EXPECT_EQ(dir.status, 0) << dir.out;
  EXPECT_EQ(gguf.status, 0) << gguf.out;
  EXPECT_EQ(gguf.out, dir.out);
  const CliRun tok =
      run_cli("tokenize --model " + fx + "/gguf-models/default-model-q8_0.gguf 'It is'");
  EXPECT_EQ(tok.status, 0) << tok.out;
  EXPECT_EQ(tok.out, run_cli("tokenize --model " + fx + "/default-model 'It is'").out);

  const std::string bad = ::testing::TempDir() + "/cli_truncated.gguf";
  {
    std::ifstream in(fx + "/gguf-models/tiny-v3-bf16.gguf", std::ios::binary);
    std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(bad, std::ios::binary).write(b.data(), std::streamsize(b.size() / 2));
  }
  const CliRun r = run_cli("generate --model " + bad + " --prompt hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_EQ(r.out.rfind("error: " + bad + ": ", 0), 0u) << r.out;
  std::filesystem::remove(bad);
}

// `generate` applies the engine's context rule, with the engine's message, before echoing the
// prompt (the default model's context is 1024 tokens).
TEST(Cli, GenerateRefusesMaxTokensPastTheContext) {
  const std::string dir = std::string(FF_FIXTURES_DIR) + "/default-model";
  const CliRun r = run_cli("generate --model " + dir + " --prompt 'It is a truth' -n 1100");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out,
            "error: the context is 1024 tokens, but 1105 were requested (5 in the prompt, 1100 "
            "max_tokens)\n");
  const CliRun ok = run_cli("generate --model " + dir +
                            " --prompt 'It is a truth' -n 1019 "
                            "--ignore-eos --no-stats");
  EXPECT_EQ(ok.status, 0) << ok.out;
}

// `tokenize` prints the ids as one JSON array, BOS as the tokenizer config says, and needs only
// tokenizer.json and tokenizer_config.json.
TEST(Cli, TokenizePrintsIdsAsJson) {
  namespace fs = std::filesystem;
  const std::string model = std::string(FF_FIXTURES_DIR) + "/default-model";
  const fs::path dir = fs::temp_directory_path() / "ff_cli_tokenize";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(model + "/" + f, dir / f);
  const ff::Tokenizer tok = ff::Tokenizer::from_dir(model);
  const std::string text = "It is a truth universally acknowledged, 42 times.";
  const auto json_of = [](const std::vector<int32_t>& ids) {
    std::string s = "[";
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
    return s + "]\n";
  };
  CliRun r = run_cli("tokenize --model " + dir.string() + " '" + text + "'");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, json_of(tok.encode(text, true)));
  ASSERT_EQ(tok.encode(text, true).front(), tok.bos_id());
  r = run_cli("tokenize --model " + dir.string() + " --no-special '" + text + "'");
  EXPECT_EQ(r.out, json_of(tok.encode(text, false)));
  r = run_cli("tokenize -m " + dir.string() + " - < " + model + "/README.md");
  std::ifstream readme(model + "/README.md");
  const std::string all((std::istreambuf_iterator<char>(readme)), std::istreambuf_iterator<char>());
  EXPECT_EQ(r.out, json_of(tok.encode(all, true)));
  r = run_cli("tokenize --model " + dir.string() + " ''");
  EXPECT_EQ(r.out, json_of(tok.encode("", true)));
  fs::remove(dir / "tokenizer.json");
  r = run_cli("tokenize --model " + dir.string() + " hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("tokenizer.json"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  fs::remove_all(dir);
}

// DeepSeek-V3's tokenizer (when ../shared has it) gives the HF tokenizers ids of the goldens.
TEST(Cli, TokenizeMatchesTokenizersOnDeepSeekV3) {
  const std::string dir = std::string(FF_SHARED_DIR) + "/data/deepseek-v3-tokenizer";
  if (!std::filesystem::exists(dir + "/tokenizer.json"))
    GTEST_SKIP() << "DeepSeek-V3 tokenizer not found at " << dir << "; skipping";
  const ff::Tokenizer tok = ff::Tokenizer::from_dir(dir);
  const CliRun r = run_cli("tokenize --model " + dir + " 'Hello, DeepSeek-V3 tokenizer!'");
  EXPECT_EQ(r.status, 0) << r.out;
  const std::vector<int32_t> ids = tok.encode("Hello, DeepSeek-V3 tokenizer!", true);
  EXPECT_EQ(ids.front(), 0);
  std::string want = "[";
  for (size_t i = 0; i < ids.size(); ++i) want += (i ? ", " : "") + std::to_string(ids[i]);
  EXPECT_EQ(r.out, want + "]\n");
}

}  // namespace
