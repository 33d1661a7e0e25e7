// fireflyer engine: serves many generation requests at once over one Model and one paged KV
// cache (the module's public header).
//
// One engine thread owns the Model and the cache and runs steps. Each step:
//   1. drops cancelled requests (their pages go back at once);
//   2. schedules the running requests in arrival order: one token each when decoding, the next
//      chunk of the prompt when prefilling, within a per-step token budget (chunked prefill, so a
//      long prompt never stalls the decoding ones for more than one budget's worth of work). When
//      the cache cannot give a request the pages it needs, the most recently admitted running
//      request is preempted: its pages are released and it goes back to the front of the waiting
//      queue, keeping its generated tokens and sampler state; on resumption it re-prefills
//      prompt + generated tokens (mostly from the prefix cache) and continues exactly where it was;
//   3. admits waiting requests first come first served while budget, pages and the running limit
//      allow, each starting after the longest prefix of its prompt found in the prefix cache;
//   4. runs all scheduled tokens in one Model::forward, samples a token for each request whose
//      scheduled tokens reached its end, and hands out text through each request's Stream.
// Continuous batching: a request joins at the next step after it arrives and leaves the step it
// finishes. With max_running = 1 the engine serves one request at a time (the batching-off
// baseline of bench/serve).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"

namespace ff::engine {

struct EngineOptions {
  int64_t num_pages = 0;  // KV cache pages of 64 tokens; 0: from max_cache_bytes
  int64_t max_cache_bytes = int64_t(2) << 30;
  int64_t max_batch_tokens = 512;  // tokens per step (decode tokens + prefill chunks)
  int max_running = 64;            // requests in the running batch
  bool prefix_caching = true;
  std::optional<DType> cache_dtype;  // default: Model::default_cache_dtype()
};

struct TokenLogprob {
  int32_t id;
  float logprob;
};

// One generated token's logprob and, when asked for, the most likely alternatives.
struct LogprobEntry {
  int32_t id;
  float logprob;
  std::vector<TokenLogprob> top;
};

struct GenerationParams {
  SamplingParams sampling;
  StopConditions stop;  // eos_ids empty: the model's and tokenizer's EOS ids; max_tokens >= 1
  bool ignore_eos = false;
  bool logprobs = false;
  int top_logprobs = 0;  // alternatives per token (with logprobs), <= 20
};

// What a request has produced since the last take(): text safe to show, one logprob entry per
// new token (when asked for), and at the end the finish reason and token counts.
struct StreamOutput {
  std::string text;
  std::vector<LogprobEntry> logprobs;
  int new_tokens = 0;
  bool finished = false;
  FinishReason finish = FinishReason::None;
  std::string error;  // set when the engine failed the request
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens found in the prefix cache
};

// The engine's side of one request, shared with the client thread that waits on it.
class Stream {
 public:
  // Waits up to `timeout` for output; returns what arrived since the last call (possibly
  // nothing). After an output with finished = true nothing more arrives.
  StreamOutput take(std::chrono::milliseconds timeout);
  // Asks the engine to stop the request and free its pages (at its next step).
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class Engine;
  void push(const StreamOutput& out);

  std::mutex mu_;
  std::condition_variable cv_;
  StreamOutput pending_;
  bool has_pending_ = false;
  std::atomic<bool> cancelled_{false};
};

// Fixed bucket bounds, cumulative counts as Prometheus wants them.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  std::vector<uint64_t> counts() const;  // per bucket (not cumulative), plus +Inf last
  double sum() const;
  uint64_t count() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct EngineStats {
  int64_t requests_finished = 0;  // completed (stop or length)
  int64_t requests_cancelled = 0;
  int64_t requests_failed = 0;
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  int64_t prefix_queried_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t pages_total = 0;
  int64_t pages_used = 0;  // referenced by some request
  int64_t pages_free = 0;  // free or cached-idle (evictable)
  int64_t pages_cached_idle = 0;
};

class Engine {
 public:
  Engine(Model& model, Tokenizer tokenizer, EngineOptions options = {});
  ~Engine();  // stops the engine thread; unfinished requests end with an error
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates the request (ff::Error naming the field: empty prompt, a prompt plus max_tokens
  // beyond the context, bad sampling or stop parameters) and queues it.
  std::shared_ptr<Stream> submit(std::vector<int32_t> prompt, const GenerationParams& params);

  const Model& model() const { return model_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  int64_t context_length() const { return model_.config().max_position_embeddings; }
  EngineStats stats() const;
  const Histogram& ttft_seconds() const { return ttft_; }
  const Histogram& itl_seconds() const { return itl_; }
  const Histogram& e2e_seconds() const { return e2e_; }

 private:
  struct Sequence;
  void loop();
  void step();
  void schedule(std::vector<Sequence*>& scheduled, std::vector<int64_t>& counts);
  bool try_admit(Sequence& s, int64_t budget, int64_t* scheduled_tokens);
  void preempt(Sequence& s);
  void finish(Sequence& s, FinishReason reason, const std::string& error = {});
  void emit(Sequence& s, int32_t token, std::span<float> logits);

  Model& model_;
  Tokenizer tokenizer_;
  EngineOptions options_;
  std::unique_ptr<KVCache> cache_;
  struct Pages;
  std::unique_ptr<Pages> pages_;

  mutable std::mutex mu_;  // guards inbox_, stats_, stop_
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  bool stop_ = false;
  EngineStats stats_;

  // Engine thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<float> logits_;
  Histogram ttft_, itl_, e2e_;
  std::thread thread_;
};

}  // namespace ff::engine
