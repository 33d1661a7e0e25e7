#include "core/thread_pool.h"

#include <immintrin.h>
#include <sched.h>

#include <chrono>
#include <cstdlib>

namespace ff {

namespace {
thread_local bool t_in_pool_task = false;

int default_threads() {
  if (const char* env = std::getenv("FF_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : int(hc);
}

// Spins briefly, then yields (the thread we wait for may be descheduled: more threads than CPUs).
template <typename Pred>
void wait_until(Pred&& done) {
  for (int spins = 0; !done(); ++spins) {
    if (spins < 2048) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
}

struct InTask {
  InTask() { t_in_pool_task = true; }
  ~InTask() { t_in_pool_task = false; }
};
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(num_threads < 1 ? 1 : num_threads) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_threads());
  return pool;
}

void ThreadPool::record_error(std::exception_ptr e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_) error_ = std::move(e);
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin briefly (decode issues many small kernels back to back), then sleep. The clock is
    // read every 64 pauses only, and the spin is short, so idle workers leave the cores to others
    // (an HTTP thread, another process).
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (int i = 1; generation_.load(std::memory_order_acquire) == seen; ++i) {
      _mm_pause();
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
    // Jobs this worker slept through are finished (a run() job waits for every worker, a
    // parallel_for job for its chunks), so the current one is the only one to look at.
    seen = generation_.load(std::memory_order_relaxed);
    if (stop_) return;
    if (task_) {
      const auto* task = task_;
      lock.unlock();
      InTask in_task;
      try {
        (*task)(index);
      } catch (...) {
        record_error(std::current_exception());
      }
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    } else {
      lock.unlock();
      run_chunks(seen);
    }
  }
}

void ThreadPool::run_chunks(uint64_t job) {
  for (;;) {
    int64_t part;
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n, grain, units, parts;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // A later job (or none left to claim in this one): nothing to do.
      if (generation_.load(std::memory_order_relaxed) != job || !range_ || next_part_ >= parts_)
        return;
      part = next_part_++;
      fn = range_;
      n = n_, grain = grain_, units = units_, parts = parts_;
    }
    const int64_t b = units * part / parts * grain;
    const int64_t e = part + 1 == parts ? n : units * (part + 1) / parts * grain;
    {
      InTask in_task;
      try {
        (*fn)(b, e < n ? e : n);
      } catch (...) {
        record_error(std::current_exception());
      }
    }
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (num_threads_ == 1 || t_in_pool_task) {
    for (int i = 0; i < num_threads_; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    task_ = &fn;
    range_ = nullptr;
    error_ = nullptr;
    pending_.store(num_threads_ - 1, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  // The caller's share; an exception must not leave before the workers are done with `fn`.
  std::exception_ptr error;
  {
    InTask in_task;
    try {
      fn(0);
    } catch (...) {
      error = std::current_exception();
    }
  }
  wait_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
  std::lock_guard<std::mutex> lock(mu_);
  task_ = nullptr;
  if (!error) error = error_;
  error_ = nullptr;
  if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                              int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t units = n / grain + (n % grain != 0);
  const int64_t parts = units < num_threads_ ? units : num_threads_;
  if (parts <= 1 || t_in_pool_task) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  uint64_t job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    task_ = nullptr;
    range_ = &fn;
    n_ = n, grain_ = grain, units_ = units, parts_ = parts, next_part_ = 0;
    error_ = nullptr;
    pending_.store(parts, std::memory_order_release);
    job = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  cv_.notify_all();
  run_chunks(job);  // the caller takes chunks too, until none is left unclaimed
  wait_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
  std::lock_guard<std::mutex> lock(mu_);
  range_ = nullptr;
  std::exception_ptr error = error_;
  error_ = nullptr;
  if (error) std::rethrow_exception(error);
}

}  // namespace ff
