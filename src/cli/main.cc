// The `fireflyer` command.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "core/core.h"

int main(int argc, char** argv) {
  CLI::App app{"fireflyer: DeepSeek-V3-architecture inference on any CPU"};
  app.require_subcommand(1);
  ff::cli::GenerateArgs gen;
  ff::cli::add_generate_command(app, gen);
  ff::cli::ServeArgs serve;
  ff::cli::add_serve_command(app, serve);
  ff::cli::TokenizeArgs tokenize;
  ff::cli::add_tokenize_command(app, tokenize);
  ff::cli::DualPipeArgs dualpipe;
  ff::cli::add_dualpipe_command(app, dualpipe);
  ff::cli::TrainPipelineArgs train_pipeline;
  ff::cli::add_train_pipeline_command(app, train_pipeline);
  ff::cli::EplbArgs eplb;
  ff::cli::add_eplb_command(app, eplb);
  ff::cli::FsArgs fs;
  ff::cli::add_fs_command(app, fs);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    ff::fault::arm_from_env();  // FF_FAULTS: for failure-path tests (docs/server.md)
    if (app.got_subcommand("generate")) return ff::cli::run_generate(gen);
    if (app.got_subcommand("serve")) return ff::cli::run_serve(serve);
    if (app.got_subcommand("tokenize")) return ff::cli::run_tokenize(tokenize);
    if (app.got_subcommand("dualpipe")) return ff::cli::run_dualpipe(dualpipe);
    if (app.got_subcommand("train-pipeline")) return ff::cli::run_train_pipeline(train_pipeline);
    if (app.got_subcommand("eplb")) return ff::cli::run_eplb(eplb);
    if (app.got_subcommand("fs")) return ff::cli::run_fs(*app.get_subcommand("fs"), fs);
  } catch (const ff::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
