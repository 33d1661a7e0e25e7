#include <csignal>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "server/server.h"

namespace ff::cli {

void add_serve_command(CLI::App& app, ServeArgs& a) {
  CLI::App* s = app.add_subcommand("serve", "Serve the OpenAI-compatible HTTP API");
  s->add_option("--model,-m", a.model, "HF checkpoint directory or GGUF file")->required();
  add_quantize_option(s, a.quantize);
  s->add_option("--host", a.host, "Address to listen on")->capture_default_str();
  s->add_option("--port", a.port, "Port to listen on (0: any free one)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  s->add_option("--served-model-name", a.served_model_name,
                "Model name of the API (default: the model directory's name, or the GGUF file's "
                "without .gguf)");
  s->add_option("--kv-pages", a.kv_pages, "KV cache pages of 64 tokens (0: from --kv-cache-mb)")
      ->check(CLI::NonNegativeNumber);
  s->add_option("--kv-cache-mb", a.kv_cache_mb, "KV cache memory when --kv-pages is 0")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  s->add_option("--max-batch-tokens", a.max_batch_tokens,
                "Tokens per engine step (decode tokens + prefill chunks)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  s->add_option("--max-running", a.max_running, "Requests in the running batch (1: no batching)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  s->add_flag("--no-prefix-caching", a.no_prefix_caching, "Do not reuse cached prompt pages");
  s->add_option("--cache-dtype", a.cache_dtype, "KV cache type: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}));
  s->add_option("--max-connections", a.max_connections,
                "HTTP connections open at once; more get 503 (0: from the open-file limit)")
      ->check(CLI::NonNegativeNumber);
  s->add_option("--header-timeout", a.header_timeout,
                "Seconds a client has to send a request's headers")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  s->add_option("--keep-alive", a.keep_alive, "Seconds an idle kept connection stays open")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_ep_options(s, a.ep);
}

int run_serve(const ServeArgs& a) {
  // Every idle client costs a descriptor, not a thread: take all the descriptors we may.
  const int64_t fd_limit = server::raise_open_file_limit();
  std::unique_ptr<EpSession> ep;
  const auto model = load_model(a.model, a.quantize, a.ep, &ep);
  if (!model) return 0;  // a --ep rank other than 0: it served rank 0, which listens
  Tokenizer tok = engine::load_tokenizer(a.model);
  engine::EngineOptions eo;
  eo.num_pages = a.kv_pages;
  eo.max_cache_bytes = a.kv_cache_mb << 20;
  eo.max_batch_tokens = a.max_batch_tokens;
  eo.max_running = a.max_running;
  eo.prefix_caching = !a.no_prefix_caching;
  if (a.cache_dtype == "f32") eo.cache_dtype = DType::F32;
  if (a.cache_dtype == "bf16") eo.cache_dtype = DType::BF16;
  engine::Engine engine(*model, tok, eo);

  server::ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.model_name = a.served_model_name;
  so.max_connections = a.max_connections;
  so.header_timeout_s = a.header_timeout;
  so.keep_alive_s = a.keep_alive;
  if (so.model_name.empty())
    so.model_name = std::filesystem::path(a.model).lexically_normal().filename().string();
  if (so.model_name.empty())
    so.model_name = std::filesystem::path(a.model).parent_path().filename();
  if (std::filesystem::path(so.model_name).extension() == ".gguf")
    so.model_name = std::filesystem::path(so.model_name).stem().string();  // a GGUF file's name
  server::Server server(engine, so);

  // SIGINT / SIGTERM end the wait below; the server and engine then shut down in order.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // threads started below inherit the mask
  server.start();
  const std::string host = a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host;
  const std::string url = "http://" + host + ":" + std::to_string(server.port());
  const engine::EngineStats st = engine.stats();
  std::printf(
      "fireflyer: serving '%s' at %s (context %lld tokens, %lld KV pages, %d threads; "
      "open-file limit %lld, up to %d connections)\n"
      "  chat page: %s/\n"
      "  try: curl %s/v1/chat/completions -H 'Content-Type: application/json' \\\n"
      "         -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], "
      "\"max_tokens\": 64}'\n"
      "  or:  curl %s/v1/completions -H 'Content-Type: application/json' \\\n"
      "         -d '{\"prompt\": \"It is a truth universally acknowledged\", \"max_tokens\": 64, "
      "\"temperature\": 0}'\n",
      so.model_name.c_str(), url.c_str(), static_cast<long long>(engine.context_length()),
      static_cast<long long>(st.pages_total), ThreadPool::global().size(),
      static_cast<long long>(fd_limit), server.max_connections(), url.c_str(), url.c_str(),
      url.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "fireflyer: shutting down\n");
  server.stop();
  if (profile::enabled()) std::fprintf(stderr, "%s", profile::report().c_str());
  return 0;
}

}  // namespace ff::cli
