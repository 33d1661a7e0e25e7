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
  Sequence(std::string request_id, Generation g)
      : stream(std::make_shared<Stream>(std::move(request_id))), gen(std::move(g)) {}

  std::shared_ptr<Stream> stream;  // also holds the request id
  Generation gen;                  // tokens (prompt, then generated), sampler, stop rules
  KVSequence kv;                   // kv.length: tokens whose latents are in the cache
  bool done = false;               // finish() ran: pages released, final output pushed
  bool admitted_once = false;
  int64_t cached_prompt_tokens = 0;
  Clock::time_point arrival = Clock::now();
  Clock::time_point last_token;

  const std::vector<int32_t>& tokens() const { return gen.tokens(); }
  const std::string& id() const { return stream->id(); }
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

void Stream::on_output(std::function<void()> fn) {
  bool call_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_output_ = fn;
    call_now = has_pending_;
  }
  if (call_now && fn) fn();
}

void Stream::push(const StreamOutput& out) {
  std::function<void()> notify;
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
    notify = on_output_;
  }
  cv_.notify_all();
  if (notify) notify();
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
  stopped.finish = FinishReason::Error;
  stopped.error = "engine stopped";
  for (auto& s : inbox_) s->stream->push(stopped);
  for (auto& s : waiting_) s->stream->push(stopped);
  for (auto& s : running_) s->stream->push(stopped);
}

ModelLimits model_limits(const Model& model) {
  const ModelConfig& c = model.config();
  return {c.max_position_embeddings, c.vocab_size,
          std::vector<int32_t>(c.eos_token_ids.begin(), c.eos_token_ids.end())};
}

std::shared_ptr<Stream> Engine::submit(std::vector<int32_t> prompt, const GenerationParams& p,
                                       std::string id) {
  // Constructing the generation validates the request (ff::Error).
  Generation gen(tokenizer_, std::move(prompt), p, model_limits(model_));
  std::lock_guard<std::mutex> lock(mu_);
  FF_CHECK(!stop_, "the engine is stopping");
  if (id.empty()) id = "req-" + std::to_string(next_id_);
  ++next_id_;
  auto seq = std::make_unique<Sequence>(std::move(id), std::move(gen));
  std::shared_ptr<Stream> stream = seq->stream;
  inbox_.push_back(std::move(seq));
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
      // Failures of one request are confined to it inside step(); reaching here is a bug outside
      // any request's work. Fail what is in flight rather than take the process down.
      fail_all(std::string("engine error: ") + e.what());
    } catch (...) {
      fail_all("engine error: unknown exception");
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = int64_t(running_.size());
    stats_.waiting = int64_t(waiting_.size());
    stats_.pages_used = pages_->used();
    stats_.pages_free = pages_->available();
    stats_.pages_cached_idle = pages_->cached_idle();
    stats_.prefix_queried_tokens = pages_->queried_tokens();
    stats_.prefix_hit_tokens = pages_->hit_tokens();
    stats_.invariant_violations = pages_->invariant_violations();
    ++stats_.steps;
  }
}

void Engine::fail_all(const std::string& error) noexcept {
  for (auto& s : running_)
    if (!s->done) finish(*s, FinishReason::Error, error);
  for (auto& s : waiting_)
    if (!s->done) finish(*s, FinishReason::Error, error);
  running_.clear();
  waiting_.clear();
}

void Engine::preempt(Sequence& s) {
  pages_->release(s.kv);
  auto it = std::find_if(running_.begin(), running_.end(), [&](auto& p) { return p.get() == &s; });
  waiting_.push_front(std::move(*it));
  running_.erase(it);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.preemptions;
}

bool Engine::grow(Sequence& s, int64_t num_tokens) {
  fault::point("kv.alloc", s.id());
  return pages_->grow(s.kv, num_tokens);
}

// Throws when page allocation fails for the request (not when the cache is merely full); the
// caller fails the request, whose pages finish() releases.
bool Engine::try_admit(Sequence& s, int64_t budget, int64_t* scheduled_tokens) {
  if (options_.prefix_caching) {
    const int64_t max_pages = (int64_t(s.tokens().size()) - 1) / kPageSize;
    pages_->match_prefix(s.tokens(), max_pages, s.kv);
  }
  const int64_t n = std::min<int64_t>(int64_t(s.tokens().size()) - s.kv.length, budget);
  if (!grow(s, s.kv.length + n)) {
    pages_->release(s.kv);
    return false;
  }
  if (!s.admitted_once) {
    s.admitted_once = true;
    s.cached_prompt_tokens = std::min<int64_t>(s.kv.length, int64_t(s.gen.prompt_length()));
  }
  *scheduled_tokens = n;
  return true;
}

void Engine::schedule(std::vector<Sequence*>& scheduled, std::vector<int64_t>& counts) {
  int64_t budget = options_.max_batch_tokens;
  bool preempted = false;
  size_t i = 0;
  while (i < running_.size() && budget > 0) {
    Sequence& s = *running_[i];
    const int64_t n = std::min<int64_t>(int64_t(s.tokens().size()) - s.kv.length, budget);
    bool self_preempted = false, failed = false;
    for (;;) {
      try {
        if (grow(s, s.kv.length + n)) break;
      } catch (const std::exception& e) {
        finish(s, FinishReason::Error, e.what());
        failed = true;
        break;
      }
      Sequence& victim = *running_.back();
      preempt(victim);
      preempted = true;
      if (&victim == &s) {
        self_preempted = true;
        break;
      }
    }
    if (failed) {
      running_.erase(running_.begin() + std::ptrdiff_t(i));
      continue;
    }
    if (self_preempted) break;
    scheduled.push_back(&s);
    counts.push_back(n);
    budget -= n;
    ++i;
  }
  while (!preempted && budget > 0 && !waiting_.empty() &&
         int(running_.size()) < options_.max_running) {
    Sequence& s = *waiting_.front();
    int64_t n = 0;
    try {
      if (!try_admit(s, budget, &n)) break;
    } catch (const std::exception& e) {
      finish(s, FinishReason::Error, e.what());
      waiting_.pop_front();
      continue;
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    scheduled.push_back(&s);
    counts.push_back(n);
    budget -= n;
  }
}

// Runs the scheduled chunks as one batch. When the batch fails, each request is run alone, so a
// request whose forward pass fails again is failed by itself and the others carry on with the
// same tokens (a failed pass leaves kv.length unchanged; a rerun rewrites the latents it wrote).
void Engine::run_forward(std::span<Sequence* const> scheduled, std::span<const int64_t> counts) {
  std::vector<Model::Request> batch;
  batch.reserve(scheduled.size());
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    batch.push_back({&s.kv,
                     std::span<const int32_t>(s.tokens().data() + s.kv.length, size_t(counts[i])),
                     false, s.id()});
  }
  try {
    model_.forward(batch, *cache_, &logits_);
    return;
  } catch (const std::exception&) {
    // Rerun below, one request at a time (a lone request too: a transient fault is absorbed).
  }
  const size_t V = size_t(model_.config().vocab_size);
  logits_.assign(scheduled.size() * V, 0.f);
  for (size_t i = 0; i < scheduled.size(); ++i) {
    try {
      model_.forward(std::span<const Model::Request>(&batch[i], 1), *cache_, &logits_one_);
      std::copy(logits_one_.begin(), logits_one_.begin() + std::ptrdiff_t(V),
                logits_.begin() + std::ptrdiff_t(i * V));
    } catch (const std::exception& e) {
      finish(*scheduled[i], FinishReason::Error, e.what());
    }
  }
}

void Engine::step() {
  auto drop_cancelled = [&](auto& queue) {
    for (auto it = queue.begin(); it != queue.end();) {
      if ((*it)->stream->cancelled()) {
        finish(**it, FinishReason::Cancelled, "cancelled");
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

  run_forward(scheduled, counts);
  const int64_t V = model_.config().vocab_size;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    if (s.done) continue;
    try {
      fault::point("engine.step", s.id());
      const size_t prompt_len = s.gen.prompt_length();
      if (options_.prefix_caching && s.kv.length - counts[i] < int64_t(prompt_len))
        pages_->cache_full_pages(std::span<const int32_t>(s.tokens().data(), prompt_len), s.kv);
      if (s.kv.length != int64_t(s.tokens().size())) continue;  // a prefill chunk, not the last
      emit(s, std::span<float>(logits_.data() + int64_t(i) * V, size_t(V)));
    } catch (const std::exception& e) {
      finish(s, FinishReason::Error, e.what());
    }
  }
  // Finished and failed requests leave the batch (their pages were released in finish()); one
  // cancelled during this step leaves at the next.
  std::erase_if(running_, [](const auto& s) { return s->done; });
}

void Engine::emit(Sequence& s, std::span<float> logits) {
  Generation::Token tok = s.gen.next(logits);
  const auto now = Clock::now();
  if (s.gen.generated() == 1) {
    ttft_.observe(std::chrono::duration<double>(now - s.arrival).count());
  } else {
    itl_.observe(std::chrono::duration<double>(now - s.last_token).count());
  }
  s.last_token = now;
  StreamOutput out;
  out.new_tokens = 1;
  out.text = std::move(tok.text);
  if (tok.logprob) out.logprobs.push_back(std::move(*tok.logprob));
  s.stream->push(out);
  if (s.gen.finished()) finish(s, s.gen.finish_reason());
}

// Ends a request: releases its pages (which cannot throw) and pushes its final output. Runs on
// every failure path, so it must not throw either.
void Engine::finish(Sequence& s, FinishReason reason, const std::string& error) noexcept {
  if (s.done) return;
  s.done = true;
  pages_->release(s.kv);
  StreamOutput out;
  out.finished = true;
  out.finish = reason;
  out.error = error;
  out.prompt_tokens = int64_t(s.gen.prompt_length());
  out.completion_tokens = s.gen.generated();
  out.cached_prompt_tokens = s.cached_prompt_tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (reason == FinishReason::Cancelled)
      ++stats_.requests_cancelled;
    else if (reason == FinishReason::Error)
      ++stats_.requests_failed;
    else
      ++stats_.requests_finished;
    stats_.prompt_tokens += out.prompt_tokens;
    stats_.generation_tokens += out.completion_tokens;
    stats_.pages_used = pages_->used();
    stats_.pages_free = pages_->available();
    stats_.invariant_violations = pages_->invariant_violations();
  }
  if (reason == FinishReason::Stop || reason == FinishReason::Length)
    e2e_.observe(seconds_since(s.arrival));
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
