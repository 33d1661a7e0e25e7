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
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"
#include "text/text.h"

namespace ff::engine {

struct EngineOptions {
  int64_t num_pages = 0;  // KV cache pages of 64 tokens; 0: from max_cache_bytes
  int64_t max_cache_bytes = int64_t(2) << 30;
  int64_t max_batch_tokens = 512;  // tokens per step (decode tokens + prefill chunks)
  int max_running = 64;            // requests in the running batch
  bool prefix_caching = true;
  std::optional<DType> cache_dtype;  // default: Model::default_cache_dtype()
};

// What a request has produced since the last take(): text safe to show, one logprob entry per
// new token (when asked for), and at the end the finish reason and token counts.
struct StreamOutput {
  std::string text;
  std::vector<LogprobEntry> logprobs;
  int new_tokens = 0;
  bool finished = false;
  // Stop / Length: completed; Cancelled: cancel() was called; Error: the engine failed the
  // request (`error` says why).
  FinishReason finish = FinishReason::None;
  std::string error;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens found in the prefix cache
};

// The engine's side of one request, shared with the client that consumes it.
class Stream {
 public:
  explicit Stream(std::string id) : id_(std::move(id)) {}
  // The request id (Engine::submit's, or one the engine made up).
  const std::string& id() const { return id_; }
  // Waits up to `timeout` for output (0: does not wait); returns what arrived since the last
  // call (possibly nothing). After an output with finished = true nothing more arrives.
  StreamOutput take(std::chrono::milliseconds timeout);
  // Asks the engine to stop the request and free its pages (at its next step). Harmless after
  // the request finished.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  // Calls `fn` (on the engine's thread, without locks held: it must be quick) each time output
  // arrives; if output is already waiting, calls it once now. For an event-driven consumer,
  // which then take()s with a zero timeout.
  void on_output(std::function<void()> fn);

 private:
  friend class Engine;
  void push(const StreamOutput& out);

  const std::string id_;
  std::mutex mu_;
  std::condition_variable cv_;
  StreamOutput pending_;
  bool has_pending_ = false;
  std::function<void()> on_output_;
  std::atomic<bool> cancelled_{false};
};

// Cancels a stream when it goes out of scope, whatever path a request's consumer leaves by
// (return, exception, client gone), so an abandoned request never keeps generating or holding
// KV pages. Cancelling a finished request does nothing.
class CancelOnExit {
 public:
  explicit CancelOnExit(std::shared_ptr<Stream> stream) : stream_(std::move(stream)) {}
  ~CancelOnExit() {
    if (stream_) stream_->cancel();
  }
  CancelOnExit(const CancelOnExit&) = delete;
  CancelOnExit& operator=(const CancelOnExit&) = delete;
  Stream* operator->() const { return stream_.get(); }

 private:
  std::shared_ptr<Stream> stream_;
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
  int64_t requests_failed = 0;       // FinishReason::Error
  int64_t invariant_violations = 0;  // internal consistency checks that failed (bugs)
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
  ~Engine();  // stops the engine thread; unfinished requests end with FinishReason::Error
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates the request (ff::Error naming the field: the rules of text/generation.h) and
  // queues it. `id` names the request in errors and is the key of its fault-injection points;
  // empty: the engine numbers it ("req-<n>").
  std::shared_ptr<Stream> submit(std::vector<int32_t> prompt, const GenerationParams& params,
                                 std::string id = {});

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
  bool grow(Sequence& s, int64_t num_tokens);
  void preempt(Sequence& s);
  void run_forward(std::span<Sequence* const> scheduled, std::span<const int64_t> counts);
  void finish(Sequence& s, FinishReason reason, const std::string& error = {}) noexcept;
  void fail_all(const std::string& error) noexcept;
  void emit(Sequence& s, std::span<float> logits);

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
  uint64_t next_id_ = 1;
  EngineStats stats_;

  // Engine thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<float> logits_, logits_one_;
  Histogram ttft_, itl_, e2e_;
  std::thread thread_;
};

// The limits a generation on `model` is checked against: its context, vocabulary and EOS ids.
ModelLimits model_limits(const Model& model);

// The tokenizer that goes with a model path Model::load accepts: DIR's tokenizer.json (+
// tokenizer_config.json), or the vocabulary a GGUF file carries (tokenizer.ggml.*,
// tokenizer.chat_template; see Tokenizer::from_gguf_vocab).
Tokenizer load_tokenizer(const std::string& model_path);
// The GgufVocab of a GGUF file's metadata; ff::Error naming the key when one is missing or has
// the wrong type.
GgufVocab gguf_vocab(const GgufFile& file);

// ---- One sequence without the serving engine (the `fireflyer generate` path) ----

struct GenerateOptions : GenerationParams {
  std::optional<DType> cache_dtype;  // default: Model::default_cache_dtype()
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (including a final EOS if one was sampled)
  std::string text;             // emitted text (stop string removed)
  FinishReason finish = FinishReason::None;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;  // prompt forward pass, up to the first sampled token
  double decode_seconds = 0;   // every later token
  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// Generates from `prompt` with a KV cache of its own, by the rules of text/generation.h (the
// same checks and messages as Engine::submit); calls on_text with each piece of text that is
// safe to show (no partial stop string, no broken UTF-8).
GenerateResult generate(Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text = {});
// The same over a Generation the caller built (and so already checked), on its next tokens.
GenerateResult generate(Model& model, Generation& gen, std::optional<DType> cache_dtype,
                        const std::function<void(std::string_view)>& on_text = {});

}  // namespace ff::engine
