#include "engine/engine.h"

#include <algorithm>

#include "engine/page_manager.h"

namespace ff::engine {

using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Latency buckets in seconds, as vLLM's (TTFT) and finer at the low end for a CPU engine.
std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,
          0.5,   0.75,   1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
}

}  // namespace

struct Engine::Pages : PageManager {
  using PageManager::PageManager;
};

struct Engine::Sequence {
  Sequence(const Tokenizer& tok, std::vector<int32_t> prompt, const GenerationParams& p,
           int64_t max_new_tokens)
      : params(p),
        tokens(std::move(prompt)),
        prompt_len(tokens.size()),
        sampler(p.sampling),
        checker(p.stop),
        decoder(tok, /*skip_special=*/true),
        max_new(max_new_tokens) {}

  std::shared_ptr<Stream> stream = std::make_shared<Stream>();
  GenerationParams params;
  std::vector<int32_t> tokens;  // prompt, then the generated ones
  size_t prompt_len;
  KVSequence kv;  // kv.length: tokens whose latents are in the cache
  Sampler sampler;
  StopChecker checker;
  StreamDecoder decoder;
  int64_t max_new;
  int64_t generated = 0;
  bool done = false;  // finish() ran: pages released, final output pushed
  bool admitted_once = false;
  int64_t cached_prompt_tokens = 0;
  Clock::time_point arrival = Clock::now();
  Clock::time_point last_token;
  std::vector<Sampler::TopLogprob> top_scratch;
};

// ---- Stream ----

StreamOutput Stream::take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return has_pending_; });
  StreamOutput out = std::move(pending_);
  pending_ = StreamOutput{};
  has_pending_ = false;
  return out;
}

void Stream::push(const StreamOutput& out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.text += out.text;
    pending_.logprobs.insert(pending_.logprobs.end(), out.logprobs.begin(), out.logprobs.end());
    pending_.new_tokens += out.new_tokens;
    if (out.finished) {
      pending_.finished = true;
      pending_.finish = out.finish;
      pending_.error = out.error;
      pending_.prompt_tokens = out.prompt_tokens;
      pending_.completion_tokens = out.completion_tokens;
      pending_.cached_prompt_tokens = out.cached_prompt_tokens;
    }
    has_pending_ = true;
  }
  cv_.notify_all();
}

// ---- Engine ----

Engine::Engine(Model& model, Tokenizer tokenizer, EngineOptions options)
    : model_(model),
      tokenizer_(std::move(tokenizer)),
      options_(options),
      ttft_(latency_buckets()),
      itl_(latency_buckets()),
      e2e_(latency_buckets()) {
  const ModelConfig& c = model.config();
  FF_CHECK(options_.max_batch_tokens >= 1, "engine: max_batch_tokens must be >= 1");
  FF_CHECK(options_.max_running >= 1, "engine: max_running must be >= 1");
  const DType dtype = options_.cache_dtype.value_or(model.default_cache_dtype());
  const int64_t context_pages = (c.max_position_embeddings + kPageSize - 1) / kPageSize;
  int64_t pages = options_.num_pages;
  if (pages == 0) {
    const int64_t page_bytes =
        int64_t(c.num_hidden_layers) * kPageSize * c.latent_dim() * int64_t(dtype_size(dtype));
    pages = std::min<int64_t>(options_.max_cache_bytes / page_bytes,
                              context_pages * options_.max_running);
  }
  // A request alone always fits, so preemption always makes progress.
  FF_CHECK(pages >= context_pages,
           "engine: a KV cache of {} pages cannot hold one request of the full context of {} "
           "tokens ({} pages)",
           pages, c.max_position_embeddings, context_pages);
  cache_ = std::make_unique<KVCache>(c, pages, dtype);
  pages_ = std::make_unique<Pages>(*cache_);
  stats_.pages_total = pages;
  stats_.pages_free = pages;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  StreamOutput stopped;
  stopped.finished = true;
  stopped.error = "engine stopped";
  for (auto& s : inbox_) s->stream->push(stopped);
  for (auto& s : waiting_) s->stream->push(stopped);
  for (auto& s : running_) s->stream->push(stopped);
}

std::shared_ptr<Stream> Engine::submit(std::vector<int32_t> prompt, const GenerationParams& p) {
  const ModelConfig& c = model_.config();
  const int64_t n = int64_t(prompt.size());
  const int64_t ctx = c.max_position_embeddings;
  FF_CHECK(n > 0, "the prompt is empty");
  for (int32_t t : prompt)
    FF_CHECK(t >= 0 && t < c.vocab_size, "prompt token id {} is outside the vocabulary [0, {})", t,
             c.vocab_size);
  FF_CHECK(n < ctx, "the prompt has {} tokens, which leaves no room in the context of {}", n, ctx);
  GenerationParams params = p;
  if (params.stop.max_tokens < 0) params.stop.max_tokens = int(ctx - n);
  FF_CHECK(params.stop.max_tokens >= 1, "max_tokens must be >= 1, got {}", params.stop.max_tokens);
  FF_CHECK(n + params.stop.max_tokens <= ctx,
           "the context is {} tokens, but {} were requested ({} in the prompt, {} max_tokens)", ctx,
           n + params.stop.max_tokens, n, params.stop.max_tokens);
  FF_CHECK(params.top_logprobs >= 0 && params.top_logprobs <= 20,
           "top_logprobs must be in [0, 20], got {}", params.top_logprobs);
  if (params.ignore_eos) {
    params.stop.eos_ids.clear();
  } else if (params.stop.eos_ids.empty()) {
    params.stop.eos_ids.assign(c.eos_token_ids.begin(), c.eos_token_ids.end());
    if (std::find(params.stop.eos_ids.begin(), params.stop.eos_ids.end(), tokenizer_.eos_id()) ==
        params.stop.eos_ids.end())
      params.stop.eos_ids.push_back(tokenizer_.eos_id());
  }
  // Constructing the sequence validates sampling and stop parameters (ff::Error).
  auto seq =
      std::make_unique<Sequence>(tokenizer_, std::move(prompt), params, params.stop.max_tokens);
  std::shared_ptr<Stream> stream = seq->stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    FF_CHECK(!stop_, "the engine is stopping");
    inbox_.push_back(std::move(seq));
  }
  cv_.notify_all();
  return stream;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock,
               [&] { return stop_ || !inbox_.empty() || !waiting_.empty() || !running_.empty(); });
      if (stop_) return;
      for (auto& s : inbox_) waiting_.push_back(std::move(s));
      inbox_.clear();
    }
    try {
      step();
    } catch (const std::exception& e) {
      // A bug, not bad input (that is refused in submit()): fail what is in flight rather than
      // take the process down, and keep serving.
      for (auto& s : running_)
        if (!s->done) finish(*s, FinishReason::None, std::string("engine error: ") + e.what());
      for (auto& s : waiting_)
        finish(*s, FinishReason::None, std::string("engine error: ") + e.what());
      running_.clear();
      waiting_.clear();
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = int64_t(running_.size());
    stats_.waiting = int64_t(waiting_.size());
    stats_.pages_used = pages_->used();
    stats_.pages_free = pages_->available();
    stats_.pages_cached_idle = pages_->cached_idle();
    stats_.prefix_queried_tokens = pages_->queried_tokens();
    stats_.prefix_hit_tokens = pages_->hit_tokens();
    ++stats_.steps;
  }
}

void Engine::preempt(Sequence& s) {
  pages_->release(s.kv);
  auto it = std::find_if(running_.begin(), running_.end(), [&](auto& p) { return p.get() == &s; });
  waiting_.push_front(std::move(*it));
  running_.erase(it);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.preemptions;
}

bool Engine::try_admit(Sequence& s, int64_t budget, int64_t* scheduled_tokens) {
  if (options_.prefix_caching) {
    const int64_t max_pages = (int64_t(s.tokens.size()) - 1) / kPageSize;
    pages_->match_prefix(s.tokens, max_pages, s.kv);
  }
  const int64_t n = std::min<int64_t>(int64_t(s.tokens.size()) - s.kv.length, budget);
  if (!pages_->grow(s.kv, s.kv.length + n)) {
    pages_->release(s.kv);
    return false;
  }
  if (!s.admitted_once) {
    s.admitted_once = true;
    s.cached_prompt_tokens = std::min<int64_t>(s.kv.length, int64_t(s.prompt_len));
  }
  *scheduled_tokens = n;
  return true;
}

void Engine::schedule(std::vector<Sequence*>& scheduled, std::vector<int64_t>& counts) {
  int64_t budget = options_.max_batch_tokens;
  bool preempted = false;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence& s = *running_[i];
    const int64_t n = std::min<int64_t>(int64_t(s.tokens.size()) - s.kv.length, budget);
    bool self_preempted = false;
    while (!pages_->grow(s.kv, s.kv.length + n)) {
      Sequence& victim = *running_.back();
      preempt(victim);
      preempted = true;
      if (&victim == &s) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;
    scheduled.push_back(&s);
    counts.push_back(n);
    budget -= n;
  }
  while (!preempted && budget > 0 && !waiting_.empty() &&
         int(running_.size()) < options_.max_running) {
    Sequence& s = *waiting_.front();
    int64_t n = 0;
    if (!try_admit(s, budget, &n)) break;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    scheduled.push_back(&s);
    counts.push_back(n);
    budget -= n;
  }
}

void Engine::step() {
  auto drop_cancelled = [&](auto& queue) {
    for (auto it = queue.begin(); it != queue.end();) {
      if ((*it)->stream->cancelled()) {
        finish(**it, FinishReason::None, "cancelled");
        it = queue.erase(it);
      } else {
        ++it;
      }
    }
  };
  drop_cancelled(running_);
  drop_cancelled(waiting_);

  std::vector<Sequence*> scheduled;
  std::vector<int64_t> counts;
  schedule(scheduled, counts);
  if (scheduled.empty()) return;
  profile::Scope prof("engine.step");

  std::vector<Model::Request> batch;
  batch.reserve(scheduled.size());
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    batch.push_back(
        {&s.kv, std::span<const int32_t>(s.tokens.data() + s.kv.length, size_t(counts[i])), false});
  }
  try {
    model_.forward(batch, *cache_, &logits_);
  } catch (const std::exception& e) {
    for (Sequence* s : scheduled) finish(*s, FinishReason::None, e.what());
  }
  const int64_t V = model_.config().vocab_size;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    if (s.done) continue;
    if (options_.prefix_caching && s.kv.length - counts[i] < int64_t(s.prompt_len))
      pages_->cache_full_pages(std::span<const int32_t>(s.tokens.data(), s.prompt_len), s.kv);
    if (s.kv.length != int64_t(s.tokens.size())) continue;  // a prefill chunk, not the last
    std::span<float> row(logits_.data() + int64_t(i) * V, size_t(V));
    int32_t tok = 0;
    try {
      tok = s.sampler.sample(row, s.tokens, s.prompt_len);
    } catch (const std::exception& e) {
      finish(s, FinishReason::None, e.what());
      continue;
    }
    emit(s, tok, row);
  }
  // Finished and failed requests leave the batch (their pages were released in finish()); one
  // cancelled during this step leaves at the next.
  std::erase_if(running_, [](const auto& s) { return s->done; });
}

void Engine::emit(Sequence& s, int32_t tok, std::span<float> logits) {
  const auto now = Clock::now();
  StreamOutput out;
  out.new_tokens = 1;
  if (s.params.logprobs) {
    float lse = 0;
    Sampler::top_logprobs(logits, s.params.top_logprobs, &s.top_scratch, &lse);
    LogprobEntry e{tok, logits[size_t(tok)] - lse, {}};
    for (const auto& t : s.top_scratch) e.top.push_back({t.id, t.logprob});
    out.logprobs.push_back(std::move(e));
  }
  if (s.generated == 0) {
    ttft_.observe(std::chrono::duration<double>(now - s.arrival).count());
  } else {
    itl_.observe(std::chrono::duration<double>(now - s.last_token).count());
  }
  s.last_token = now;
  ++s.generated;
  s.tokens.push_back(tok);
  const std::string piece = s.checker.finished() == FinishReason::None ? s.decoder.push(tok) : "";
  out.text = s.checker.push(tok, piece);
  const bool done = s.checker.finished() != FinishReason::None || s.generated >= s.max_new;
  if (!done) {
    s.stream->push(out);
    return;
  }
  // Held-back text, then an incomplete UTF-8 tail, unless a stop string ended the text (as
  // model/generate.cc does, so the server's text equals `fireflyer generate`'s).
  out.text += s.checker.flush();
  if (s.checker.finished() != FinishReason::Stop) out.text += s.decoder.flush();
  s.stream->push(out);
  finish(s,
         s.checker.finished() == FinishReason::None ? FinishReason::Length : s.checker.finished());
}

void Engine::finish(Sequence& s, FinishReason reason, const std::string& error) {
  s.done = true;
  pages_->release(s.kv);
  StreamOutput out;
  out.finished = true;
  out.finish = reason;
  out.error = error;
  out.prompt_tokens = int64_t(s.prompt_len);
  out.completion_tokens = s.generated;
  out.cached_prompt_tokens = s.cached_prompt_tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error.empty()) {
      if (s.stream->cancelled() || error == "cancelled")
        ++stats_.requests_cancelled;
      else
        ++stats_.requests_failed;
    } else {
      ++stats_.requests_finished;
    }
    stats_.prompt_tokens += int64_t(s.prompt_len);
    stats_.generation_tokens += s.generated;
    stats_.pages_used = pages_->used();
    stats_.pages_free = pages_->available();
  }
  if (error.empty()) e2e_.observe(seconds_since(s.arrival));
  s.stream->push(out);
}

// ---- Histogram ----

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t b = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  ++counts_[b];
  sum_ += v;
  ++count_;
}

std::vector<uint64_t> Histogram::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

double Histogram::sum() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sum_;
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

}  // namespace ff::engine
