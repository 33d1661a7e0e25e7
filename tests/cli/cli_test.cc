// The fireflyer command: exit codes and one-line errors.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace {

struct CliRun {
  int status;
  std::string out;
};

// Runs the CLI with `args`, capturing stdout+stderr.
CliRun run_cli(const std::string& args) {
  const std::string cmd = std::string(FF_CLI_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

TEST(Cli, MissingModelIsOneLineErrorAndNonZeroExit) {
  const CliRun r = run_cli("generate --model /nonexistent/model --prompt hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out,
            "error: /nonexistent/model: not a directory (expected an HF checkpoint directory)\n");
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

}  // namespace
