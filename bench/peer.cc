// Peer benchmark: fireflyer against llama.cpp (llama-cpp-python from PyPI) on the same CPU, the
// same thread count and the same synthetic DeepSeek-V3-shaped weights, in BF16 (identical
// weights), 8-bit (our Q8 against Q8_0) and 4-bit (our Q4 against Q4_K_M as llama-quantize makes
// it). The measuring is done by bench/peer/run_peer.py (docs/BENCHMARKS.md, "peer"); this program
// is its entry point and fireflyer's side of it:
//
//   bench_peer [driver options]        runs bench/peer/run_peer.py (what `make bench` calls);
//                                      it prints a SKIP line and exits 0 when PyPI is unreachable
//   bench_peer --write-synthetic DIR [--vocab N] [--layers N] [--experts N] [--tokenizer TDIR]
//                                      writes the BF16 checkpoint (bench/synthetic_model.h) with
//                                      TDIR's tokenizer.json and tokenizer_config.json
//   bench_peer --worker --model DIR [--quantize none|q8|q4] [--prompt N] [--gen N]
//                                      loads the model, warms up, prints one JSON line
//                                      {"ready":..}, then answers each "round" line on stdin with
//                                      {"prefill_s":..,"decode_s":..}: a prompt of N tokens into a
//                                      fresh KV cache, then `gen` decode steps, one token each
//   bench_peer --read-bandwidth        prints the memory read bandwidth in GB/s (bench_util.h)
//
// The worker protocol and the token ids are shared with bench/peer/llama_worker.py: prompt token
// i is 2 + (i * 7919) % (vocab - 2), decode token i is 2 + (i * 31) % (vocab - 2).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "model/model.h"
#include "synthetic_model.h"

namespace ff {
namespace {

int32_t prompt_token(int i, int vocab) {
  return 2 + int32_t((int64_t(i) * 7919) % (vocab - 2));
}
int32_t decode_token(int i, int vocab) {
  return 2 + int32_t((int64_t(i) * 31) % (vocab - 2));
}

struct RoundTimes {
  double prefill_s = 0.0, decode_s = 0.0;
};

// One prompt into a fresh sequence, then `gen` single-token steps; the cache is released after.
RoundTimes run_round(Model& model, KVCache& cache, int prompt_len, int gen) {
  const int vocab = model.config().vocab_size;
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (int i = 0; i < prompt_len; ++i) prompt[size_t(i)] = prompt_token(i, vocab);
  KVSequence seq;
  std::vector<float> logits;
  RoundTimes t;
  Model::Request r{&seq, prompt, false};
  double t0 = bench::now_seconds();
  model.forward({&r, 1}, cache, &logits);
  t.prefill_s = bench::now_seconds() - t0;
  t0 = bench::now_seconds();
  for (int i = 0; i < gen; ++i) {
    const int32_t tok = decode_token(i, vocab);
    Model::Request d{&seq, std::span<const int32_t>(&tok, 1), false};
    model.forward({&d, 1}, cache, &logits);
  }
  t.decode_s = bench::now_seconds() - t0;
  cache.release(seq);
  return t;
}

int worker(const std::string& path, Quantize quantize, int prompt_len, int gen) {
  double t0 = bench::now_seconds();
  auto model = Model::load(path, quantize);
  const double load_s = bench::now_seconds() - t0;
  const ModelConfig& c = model->config();
  KVCache cache(c, (prompt_len + gen) / kPageSize + 2, model->default_cache_dtype());
  run_round(*model, cache, prompt_len, gen);  // warm-up: first-touch pages, workspaces
  std::printf(
      "{\"ready\":true,\"engine\":\"fireflyer\",\"quantize\":\"%s\",\"load_s\":%.3f,"
      "\"threads\":%d,\"bytes_per_token\":%.0f}\n",
      quantize_name(quantize), load_s, ThreadPool::global().size(),
      double(model->weights().bytes_per_token_decode(c)));
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "quit") break;
    if (line != "round") {
      std::printf("{\"error\":\"unknown command '%s'\"}\n", line.c_str());
      std::fflush(stdout);
      continue;
    }
    const RoundTimes t = run_round(*model, cache, prompt_len, gen);
    std::printf("{\"prefill_s\":%.6f,\"decode_s\":%.6f}\n", t.prefill_s, t.decode_s);
    std::fflush(stdout);
  }
  return 0;
}

int write_synthetic(const std::string& dir, const synth::SynthConfig& s,
                    const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  synth::write_synthetic(dir, s, /*fp8=*/false);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    if (tokenizer_dir.empty()) continue;
    const fs::path to = fs::path(dir) / f;
    fs::copy_file(fs::path(tokenizer_dir) / f, to, fs::copy_options::overwrite_existing);
    // A read-only source stays read-only in the copy; a later rewrite must be able to replace it.
    fs::permissions(to, fs::perms::owner_write, fs::perm_options::add);
  }
  std::printf("wrote %s (vocab %d, %d layers, %d experts)\n", dir.c_str(), s.vocab, s.layers,
              s.experts);
  return 0;
}

// Replaces this process with the driver script, passing our own path and the arguments on.
int run_driver(int argc, char** argv) {
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::string> args = {FF_PYTHON, FF_PEER_SCRIPT, "--bench-peer", self};
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  std::fflush(stdout);
  execv(FF_PYTHON, cargs.data());
  std::printf("SKIP peer: cannot run %s %s: %s\n", FF_PYTHON, FF_PEER_SCRIPT, std::strerror(errno));
  return 0;
}

}  // namespace
}  // namespace ff

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "--read-bandwidth") {
    std::printf("%.2f\n", ff::bench::measure_read_bandwidth_gbps());
    return 0;
  }
  if (mode != "--worker" && mode != "--write-synthetic") return ff::run_driver(argc, argv);
  std::string model, out, tokenizer;
  ff::Quantize quantize = ff::Quantize::None;
  int prompt_len = 128, gen = 64;
  ff::synth::SynthConfig s;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        FF_CHECK(i + 1 < argc, "bench_peer: {} needs a value", a);
        return argv[++i];
      };
      if (a == "--worker") {
      } else if (a == "--write-synthetic") {
        out = value();
      } else if (a == "--model") {
        model = value();
      } else if (a == "--quantize") {
        quantize = ff::parse_quantize(value());
      } else if (a == "--prompt") {
        prompt_len = std::stoi(value());
      } else if (a == "--gen") {
        gen = std::stoi(value());
      } else if (a == "--vocab") {
        s.vocab = std::stoi(value());
      } else if (a == "--layers") {
        s.layers = std::stoi(value());
      } else if (a == "--experts") {
        s.experts = std::stoi(value());
      } else if (a == "--tokenizer") {
        tokenizer = value();
      } else {
        FF_CHECK(false, "bench_peer: unknown argument {}", a);
      }
    }
    if (mode == "--write-synthetic") return ff::write_synthetic(out, s, tokenizer);
    FF_CHECK(!model.empty(), "bench_peer --worker needs --model");
    return ff::worker(model, quantize, prompt_len, gen);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_peer: %s\n", e.what());
    return 1;
  }
}
