// Serving throughput and latency of the HTTP server over the engine, with continuous batching
// against the same engine with batching off (max_running = 1: one request at a time), measured
// in the same run on the same fixed workload.
//
// Workload (fixed seed, like SGLang's `random` dataset): N requests to /v1/completions with
// random token-id prompts of 32..256 tokens, 32..96 output tokens (ignore_eos, temperature 0),
// streamed. Clients keep `concurrency` requests in flight (1, 4, 16).
//
// Metrics as vLLM's / SGLang's serving benchmarks define them, from the client's clock at each
// streamed chunk that carries text: TTFT = first chunk - send; ITL = gaps between chunks, pooled
// over requests; TPOT = (latency - TTFT) / (output tokens - 1) per request; output tokens from
// usage.completion_tokens; throughput over the whole run (first send to last response).
//
// Usage: bench_serve [--model DIR] [--requests N] [--repeat R]   (default: the default model, 96)
//        bench_serve --synthetic bf16|fp8 [--requests N] [--keep DIR] [--repeat R]
//        common: [--levels 1,4,16] [--max-batch-tokens N]   (the engine's token budget per step,
//        for both the batched engine and the baseline; default: the engine's)
//
// Each concurrency level runs the baseline and then the batched engine back to back, R times
// (default 1); the pair with the median ratio is printed, with ratio_min / ratio_max when R > 1.
//
// --synthetic: a weight-bandwidth-bound checkpoint instead, as a real DeepSeek-V3 deployment is
// at decode: bench_model_decode's DeepSeek-V3-shaped one (synthetic_model.h; hidden 2048, real
// MLA dims, 1 dense + 3 MoE layers of 32 experts, top-8, 1 shared) with the vocabulary cut to the
// default model's tokenizer (3072 ids, whose files are copied in, so every generated id has
// text), about 0.84 GB in BF16. Written to a temporary directory (or --keep DIR, reused when
// there). Workload sized for a few minutes on 2 cores: 48 requests, prompts of 16..64 tokens,
// 32..64 output tokens.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "server/http.h"
#include "server/server.h"
#include "synthetic_model.h"

namespace ff {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Job {
  std::vector<int32_t> prompt;
  int max_tokens;
};

struct Summary {
  double seconds = 0, req_per_s = 0, out_tok_per_s = 0;
  double ttft_p50 = 0, ttft_p99 = 0, tpot_p50 = 0, tpot_p99 = 0, itl_p50 = 0, itl_p99 = 0;
  int64_t output_tokens = 0;
  int failed = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * double(v.size() - 1);
  const size_t lo = size_t(idx);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - double(lo));
}

Summary run_clients(int port, const std::vector<Job>& jobs, int concurrency) {
  std::mutex mu;
  std::vector<double> ttft, tpot, itl;
  int64_t out_tokens = 0;
  int failed = 0;
  std::atomic<size_t> next{0};
  const auto t0 = Clock::now();
  auto client = [&] {
    for (size_t i; (i = next.fetch_add(1)) < jobs.size();) {
      json body = {{"prompt", jobs[i].prompt}, {"max_tokens", jobs[i].max_tokens},
                   {"temperature", 0},         {"ignore_eos", true},
                   {"stream", true},           {"stream_options", {{"include_usage", true}}}};
      std::vector<double> chunk_times;
      int64_t completion_tokens = 0;
      std::string buffer;
      const auto sent = Clock::now();
      server::HttpResult r = server::http_request(
          "127.0.0.1", port, "POST", "/v1/completions", body.dump(),
          [&](std::string_view data) {
            const double t = std::chrono::duration<double>(Clock::now() - sent).count();
            buffer.append(data);
            size_t cut;
            while ((cut = buffer.find("\n\n")) != std::string::npos) {
              const std::string ev = buffer.substr(0, cut);
              buffer.erase(0, cut + 2);
              if (ev.rfind("data: {", 0) != 0) continue;
              const json j = json::parse(ev.substr(6));
              if (j.contains("usage") && j["usage"].is_object())
                completion_tokens = j["usage"]["completion_tokens"];
              if (!j["choices"].empty() && !j["choices"][0]["text"].get<std::string>().empty())
                chunk_times.push_back(t);
            }
            return true;
          },
          600);
      const double latency = std::chrono::duration<double>(Clock::now() - sent).count();
      std::lock_guard<std::mutex> lock(mu);
      if (r.status != 200 || chunk_times.empty() || completion_tokens == 0) {
        ++failed;
        continue;
      }
      ttft.push_back(chunk_times.front());
      for (size_t k = 1; k < chunk_times.size(); ++k)
        itl.push_back(chunk_times[k] - chunk_times[k - 1]);
      if (completion_tokens > 1)
        tpot.push_back((latency - chunk_times.front()) / double(completion_tokens - 1));
      out_tokens += completion_tokens;
    }
  };
  std::vector<std::thread> threads;
  for (int c = 0; c < concurrency; ++c) threads.emplace_back(client);
  for (auto& t : threads) t.join();
  Summary s;
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  s.output_tokens = out_tokens;
  s.failed = failed;
  s.req_per_s = double(jobs.size() - size_t(failed)) / s.seconds;
  s.out_tok_per_s = double(out_tokens) / s.seconds;
  s.ttft_p50 = percentile(ttft, 50) * 1e3;
  s.ttft_p99 = percentile(ttft, 99) * 1e3;
  s.tpot_p50 = percentile(tpot, 50) * 1e3;
  s.tpot_p99 = percentile(tpot, 99) * 1e3;
  s.itl_p50 = percentile(itl, 50) * 1e3;
  s.itl_p99 = percentile(itl, 99) * 1e3;
  return s;
}

// Serves with the given engine options and runs the workload at one concurrency.
Summary measure(Model& model, const Tokenizer& tok, engine::EngineOptions eo,
                const std::vector<Job>& jobs, int concurrency) {
  engine::Engine engine(model, tok, eo);
  server::ServerOptions so;
  so.port = 0;
  server::Server server(engine, so);
  server.start();
  // Warm-up: page in the weights, size the workspaces.
  run_clients(server.port(), std::vector<Job>(jobs.begin(), jobs.begin() + 2), 2);
  const Summary s = run_clients(server.port(), jobs, concurrency);
  server.stop();
  return s;
}

int run(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::string model_dir = "tests/fixtures/default-model";
  std::string synthetic, keep;
  int num_requests = 0, repeat = 1;
  int64_t max_batch_tokens = engine::EngineOptions{}.max_batch_tokens;
  std::vector<int> levels = {1, 4, 16};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model_dir = argv[i + 1];
    if (a == "--requests") num_requests = std::max(2, std::atoi(argv[i + 1]));
    if (a == "--synthetic") synthetic = argv[i + 1];
    if (a == "--keep") keep = argv[i + 1];
    if (a == "--repeat") repeat = std::max(1, std::atoi(argv[i + 1]));
    if (a == "--max-batch-tokens") max_batch_tokens = std::max(1, std::atoi(argv[i + 1]));
    if (a == "--levels") {
      levels.clear();
      for (const char* p = argv[i + 1]; *p;) {
        char* end = nullptr;
        const long v = std::strtol(p, &end, 10);
        if (end == p || v < 1) {
          std::fprintf(stderr, "error: --levels takes concurrencies like 1,4,16\n");
          return 2;
        }
        levels.push_back(int(v));
        p = *end == ',' ? end + 1 : end;
      }
    }
  }
  // Prompt and output length ranges (inclusive).
  int in_lo = 32, in_hi = 256, out_lo = 32, out_hi = 96;
  std::string temp_root;
  if (!synthetic.empty()) {
    if (synthetic != "bf16" && synthetic != "fp8") {
      std::fprintf(stderr, "error: --synthetic takes bf16 or fp8\n");
      return 2;
    }
    const std::string tok_dir = model_dir;  // the tokenizer comes from the default model
    if (!fs::exists(tok_dir + "/tokenizer.json")) {
      std::printf("BENCH serve skipped: no tokenizer at %s (run from the repository root)\n",
                  tok_dir.c_str());
      return 0;
    }
    const std::string root =
        keep.empty() ? (temp_root = (fs::temp_directory_path() / "ff_bench_serve").string()) : keep;
    model_dir = root + "/" + synthetic;
    if (!fs::exists(model_dir + "/model.safetensors")) {
      synth::SynthConfig sc;
      sc.vocab = int(Tokenizer::from_dir(tok_dir).vocab_size());
      sc.max_position = 4096;
      synth::write_synthetic(model_dir, sc, synthetic == "fp8");
      for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
        if (fs::exists(tok_dir + "/" + f))
          fs::copy_file(tok_dir + "/" + f, model_dir + "/" + f,
                        fs::copy_options::overwrite_existing);
    }
    in_lo = 16, in_hi = 64, out_hi = 64;
    if (num_requests == 0) num_requests = 48;
  }
  if (num_requests == 0) num_requests = 96;
  if (!fs::exists(model_dir + "/config.json")) {
    std::printf(
        "BENCH serve skipped: no model at %s (run from the repository root or pass "
        "--model DIR)\n",
        model_dir.c_str());
    return 0;
  }
  auto model = Model::load(model_dir);
  const Tokenizer tok = Tokenizer::from_dir(model_dir);
  const int64_t ctx = model->config().max_position_embeddings;
  std::mt19937 rng(20261123);
  const int vocab = int(std::min<size_t>(tok.vocab_size(), size_t(model->config().vocab_size)));
  std::vector<Job> jobs;
  for (int i = 0; i < num_requests; ++i) {
    Job j;
    const int in = std::min<int>(in_lo + int(rng() % uint32_t(in_hi - in_lo + 1)), int(ctx) - 100);
    j.max_tokens = out_lo + int(rng() % uint32_t(out_hi - out_lo + 1));
    for (int k = 0; k < in; ++k) {
      int32_t id;
      do id = int32_t(rng() % uint32_t(vocab));
      while (tok.is_special(id));
      j.prompt.push_back(id);
    }
    jobs.push_back(std::move(j));
  }
  engine::EngineOptions batched;
  batched.max_batch_tokens = max_batch_tokens;
  engine::EngineOptions serial = batched;
  serial.max_running = 1;
  std::printf(
      "# model %s%s, %d requests, prompts %d..%d, outputs %d..%d tokens, %d threads, "
      "max_batch_tokens %lld\n",
      model_dir.c_str(), synthetic.empty() ? "" : (" (synthetic " + synthetic + ")").c_str(),
      num_requests, in_lo, in_hi, out_lo, out_hi, ThreadPool::global().size(),
      static_cast<long long>(max_batch_tokens));
  std::fflush(stdout);
  // Each level's baseline and batched runs are measured back to back (a shared machine's slow
  // and fast phases last seconds to minutes, so far-apart phases would skew the ratio), `repeat`
  // times; the pair with the median ratio is printed, with the range of the ratios.
  for (int level : levels) {
    std::vector<std::pair<Summary, Summary>> pairs;  // (batched, baseline)
    for (int r = 0; r < repeat; ++r) {
      const Summary base = measure(*model, tok, serial, jobs, level);
      pairs.emplace_back(measure(*model, tok, batched, jobs, level), base);
    }
    const auto ratio = [](const std::pair<Summary, Summary>& p) {
      return p.first.out_tok_per_s / std::max(p.second.out_tok_per_s, 1e-9);
    };
    std::sort(pairs.begin(), pairs.end(),
              [&](const auto& a, const auto& b) { return ratio(a) < ratio(b); });
    const auto& mid = pairs[pairs.size() / 2];
    for (int k = 0; k < 2; ++k) {
      const Summary& s = k == 0 ? mid.first : mid.second;
      std::printf(
          "BENCH serve %s_c%d req_per_s=%.2f out_tok_per_s=%.1f ttft_p50_ms=%.1f ttft_p99_ms=%.1f "
          "tpot_p50_ms=%.2f tpot_p99_ms=%.2f itl_p50_ms=%.2f itl_p99_ms=%.2f failed=%d "
          "baseline=no_batching ratio=%.2f",
          k == 0 ? "batched" : "no_batching", level, s.req_per_s, s.out_tok_per_s, s.ttft_p50,
          s.ttft_p99, s.tpot_p50, s.tpot_p99, s.itl_p50, s.itl_p99, s.failed,
          k == 0 ? ratio(mid) : 1.0);
      if (k == 0 && repeat > 1)
        std::printf(" runs=%d ratio_min=%.2f ratio_max=%.2f", repeat, ratio(pairs.front()),
                    ratio(pairs.back()));
      std::printf("\n");
    }
    std::fflush(stdout);
  }
  model.reset();
  if (!temp_root.empty()) fs::remove_all(temp_root);
  return 0;
}

}  // namespace
}  // namespace ff

int main(int argc, char** argv) {
  try {
    return ff::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
