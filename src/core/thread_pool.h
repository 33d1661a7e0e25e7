// The process-wide thread pool. Kernels split work across it with parallel_for; no thread is
// created per call. Work is split statically (contiguous chunks, at most one per thread) so
// results are deterministic for a fixed thread count; which thread runs a chunk is not fixed.
// Size: FF_NUM_THREADS, else the number of CPUs this process may run on (its affinity mask).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ff {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // The shared pool (created on first use).
  static ThreadPool& global();

  int size() const { return num_threads_; }

  // Calls fn(thread_index) once on each of the pool's threads (the caller is thread 0) and
  // returns when all are done. A call from inside a pool task runs fn(0..size-1) serially.
  // If fn throws, run waits for the other threads and rethrows the first exception.
  void run(const std::function<void(int)>& fn);

  // Splits [0, n) into min(ceil(n / grain), size()) contiguous chunks (boundaries multiples of
  // `grain`, sizes within one grain of each other; the same for the same n, grain and size()) and
  // calls fn(begin, end) once for each. Chunks go to whichever pool thread is free first, the
  // caller included, so a descheduled worker does not hold the call up. Nested calls from inside
  // a task run serially; an exception from fn is rethrown after every chunk is done.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int index);
  // parallel_for's chunks: claims unclaimed ones until none is left (caller and workers alike).
  void run_chunks(uint64_t job);
  void record_error(std::exception_ptr e);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one job at a time

  // The current job, guarded by mu_ (generation_ is also read unlocked by spinning workers).
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};  // the current job's id; bumped per job and on stop
  bool stop_ = false;
  const std::function<void(int)>* task_ = nullptr;                // run(): every index
  const std::function<void(int64_t, int64_t)>* range_ = nullptr;  // parallel_for: chunks
  int64_t n_ = 0, grain_ = 1, units_ = 0, parts_ = 0, next_part_ = 0;
  std::atomic<int64_t> pending_{0};  // run(): workers not done; parallel_for: chunks not done
  std::exception_ptr error_;         // the first exception of the current job
};

inline void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                         int64_t grain = 1) {
  ThreadPool::global().parallel_for(n, fn, grain);
}

}  // namespace ff
