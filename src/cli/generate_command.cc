#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "engine/engine.h"

namespace ff::cli {

void add_generate_command(CLI::App& app, GenerateArgs& a) {
  CLI::App* g = app.add_subcommand("generate", "Generate text from a prompt, streamed to stdout");
  g->add_option("--model,-m", a.model,
                "HF checkpoint directory (config.json, *.safetensors, "
                "tokenizer.json) or a GGUF file (llama.cpp's deepseek2)")
      ->required();
  g->add_option("--prompt,-p", a.prompt, "Prompt text")->required();
  g->add_flag("--chat", a.chat, "Wrap the prompt in the model's chat format (user turn)");
  g->add_option("--system", a.system, "System message (with --chat)");
  g->add_option("-n,--max-tokens", a.max_tokens, "Maximum tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  g->add_option("--temperature,-t", a.temperature, "Sampling temperature (0: greedy)")
      ->check(CLI::Range(0.0, 100.0));
  g->add_option("--top-k", a.top_k, "Keep the k most likely tokens (0: off)")
      ->check(CLI::NonNegativeNumber);
  g->add_option("--top-p", a.top_p, "Nucleus sampling mass (1: off)");
  g->add_option("--min-p", a.min_p, "Drop tokens below min_p * p_max (0: off)");
  g->add_option("--repetition-penalty", a.repetition_penalty, "Penalty on seen tokens (1: off)");
  g->add_option("--seed", a.seed, "Random seed");
  g->add_option("--stop", a.stop, "Stop string (repeatable)");
  g->add_option("--cache-dtype", a.cache_dtype, "KV cache type: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}));
  g->add_flag("--ignore-eos", a.ignore_eos, "Do not stop at the end-of-sequence token");
  g->add_flag("--no-stats", a.quiet_stats, "Do not print the tokens/s line");
  add_quantize_option(g, a.quantize);
  add_ep_options(g, a.ep);
}

int run_generate(const GenerateArgs& a) {
  std::unique_ptr<EpSession> ep;
  const auto model = load_model(a.model, a.quantize, a.ep, &ep);
  if (!model) return 0;  // a --ep rank other than 0: it served rank 0, which prints
  const Tokenizer tok = engine::load_tokenizer(a.model);
  std::vector<int32_t> prompt;
  if (a.chat) {
    std::vector<ChatMessage> msgs;
    if (!a.system.empty()) msgs.push_back({"system", a.system});
    msgs.push_back({"user", a.prompt});
    // The rendered text starts with BOS already (as apply_chat_template(tokenize=True) does).
    prompt = tok.encode(render_chat(tok, msgs, /*add_generation_prompt=*/true), false);
  } else {
    prompt = tok.encode(a.prompt, true);
  }
  engine::GenerateOptions opt;
  opt.sampling.temperature = a.temperature;
  opt.sampling.top_k = a.top_k;
  opt.sampling.top_p = a.top_p;
  opt.sampling.min_p = a.min_p;
  opt.sampling.repetition_penalty = a.repetition_penalty;
  opt.sampling.seed = a.seed;
  opt.stop.stop_strings = a.stop;
  opt.stop.max_tokens = a.max_tokens;
  opt.ignore_eos = a.ignore_eos;
  if (a.cache_dtype == "f32") opt.cache_dtype = DType::F32;
  if (a.cache_dtype == "bf16") opt.cache_dtype = DType::BF16;
  // Built (and so checked: -n past the context is refused here) before the prompt is echoed.
  Generation gen(tok, std::move(prompt), opt, engine::model_limits(*model));
  if (!a.chat) {
    std::fputs(a.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  const engine::GenerateResult r =
      engine::generate(*model, gen, opt.cache_dtype, [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!a.quiet_stats) {
    std::fprintf(stderr,
                 "[%lld prompt tokens, %zu generated (%s); prefill %.1f tok/s, decode %.1f tok/s, "
                 "%d threads]\n",
                 static_cast<long long>(r.prompt_tokens), r.tokens.size(),
                 finish_reason_name(r.finish), r.prefill_tokens_per_second(),
                 r.decode_tokens_per_second(), ThreadPool::global().size());
  }
  if (profile::enabled()) std::fprintf(stderr, "%s", profile::report().c_str());
  return 0;
}

}  // namespace ff::cli
