// End-to-end prefill and decode throughput of the model engine on a synthetic
// DeepSeek-V3-shaped checkpoint of about 1 GB (real MLA dims: q_lora 1536, kv_lora 512,
// rope 64, nope 128, v 128; noaux_tc MoE with shared experts; hidden 2048), in BF16 and FP8.
//
// Decode at batch 1 reads every active weight once per token, so its roofline is the memory
// read bandwidth, measured in the same run. Two baselines: `read_GBps`, a sweep over 1 GiB (DRAM),
// and `ws_GBps`, repeated sweeps over a buffer as large as one token's active weights -- on CPUs
// whose L3 holds a good part of those (this one has 260 MB) decode gets the same cache help, so
// the roofline fraction (`ratio`) is taken against ws_GBps.
//
// Usage: bench_model_decode [--quick] [--context N] [--keep DIR]  (FF_NUM_THREADS sets the thread
// count; FF_PROFILE=1 adds a per-stage profile of the decode steps)
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_util.h"
#include "model/model.h"
#include "synthetic_model.h"

namespace ff {
namespace {

void run_case(const std::string& dir, const char* label, double dram_bw, bool quick, int context) {
  auto model = Model::load(dir);
  const ModelConfig& c = model->config();
  const double bytes_tok = double(model->weights().bytes_per_token_decode(c));
  const double ws_bw = bench::measure_read_bandwidth_gbps(size_t(bytes_tok));
  const int prompt_len = context > 0 ? context : (quick ? 32 : 128), decode_steps = quick ? 8 : 32;
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (int i = 0; i < prompt_len; ++i) prompt[size_t(i)] = 2 + (i * 7919) % (c.vocab_size - 2);
  KVCache cache(c, (prompt_len + decode_steps) / kPageSize + 2, model->default_cache_dtype());
  std::vector<double> prefill_t, decode_t;
  // With FF_PROFILE set, the stage profile of the decode steps is printed after the case.
  const bool profiling = profile::enabled();
  profile::reset();
  for (int rep = 0; rep < (quick ? 1 : 3); ++rep) {
    KVSequence seq;
    std::vector<float> logits;
    Model::Request r{&seq, prompt, false};
    profile::set_enabled(false);
    double t0 = bench::now_seconds();
    model->forward({&r, 1}, cache, &logits);
    prefill_t.push_back(bench::now_seconds() - t0);
    profile::set_enabled(profiling);
    std::vector<double> steps;
    for (int i = 0; i < decode_steps; ++i) {
      const int32_t tok = 2 + (i * 31) % (c.vocab_size - 2);
      Model::Request d{&seq, std::span<const int32_t>(&tok, 1), false};
      t0 = bench::now_seconds();
      model->forward({&d, 1}, cache, &logits);
      steps.push_back(bench::now_seconds() - t0);
    }
    std::sort(steps.begin(), steps.end());
    decode_t.push_back(steps[steps.size() / 2]);
    cache.release(seq);
  }
  std::sort(prefill_t.begin(), prefill_t.end());
  std::sort(decode_t.begin(), decode_t.end());
  const double prefill_tps = prompt_len / prefill_t[prefill_t.size() / 2];
  const double decode_tps = 1.0 / decode_t[decode_t.size() / 2];
  const double gbps = bytes_tok * decode_tps / 1e9;
  std::printf(
      "BENCH model %s context=%d prefill_tok_s=%.1f decode_tok_s=%.2f active_weight_MB=%.1f "
      "decode_GBps=%.2f "
      "read_GBps=%.2f frac_dram=%.3f ws_GBps=%.2f threads=%d baseline=ws_read_bandwidth "
      "ratio=%.3f\n",
      label, prompt_len, prefill_tps, decode_tps, bytes_tok / 1e6, gbps, dram_bw, gbps / dram_bw,
      ws_bw, ThreadPool::global().size(), gbps / ws_bw);
  if (profiling) std::printf("# decode-step profile, %s:\n%s", label, profile::report().c_str());
  std::fflush(stdout);
}

}  // namespace
}  // namespace ff

int main(int argc, char** argv) {
  bool quick = false;
  int context = 0;  // prompt length before decoding; 0: 128 (32 with --quick)
  std::string keep;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick")
      quick = true;
    else if (std::string(argv[i]) == "--keep" && i + 1 < argc)
      keep = argv[++i];
    else if (std::string(argv[i]) == "--context" && i + 1 < argc)
      context = std::atoi(argv[++i]);
  }
  namespace fs = std::filesystem;
  const std::string root =
      keep.empty() ? (fs::temp_directory_path() / "ff_bench_model").string() : keep;
  ff::synth::SynthConfig s;
  const double bw = ff::bench::measure_read_bandwidth_gbps();
  for (bool fp8 : {false, true}) {
    const std::string dir = root + (fp8 ? "/fp8" : "/bf16");
    if (!fs::exists(dir + "/model.safetensors")) ff::synth::write_synthetic(dir, s, fp8);
    ff::run_case(dir, fp8 ? "v3shape_fp8" : "v3shape_bf16", bw, quick, context);
  }
  if (keep.empty()) fs::remove_all(root);
  return 0;
}
