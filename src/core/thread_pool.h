// The process-wide thread pool. Kernels split work across it with parallel_for; no thread is
// created per call. Work is split statically (contiguous chunks, one per thread) so results are
// deterministic for a fixed thread count. Size: FF_NUM_THREADS, else the hardware concurrency.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
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
  void run(const std::function<void(int)>& fn);

  // Splits [0, n) into size() contiguous chunks (rounded to `grain`) and calls
  // fn(begin, end) for each non-empty chunk.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex run_mu_;
};

inline void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                         int64_t grain = 1) {
  ThreadPool::global().parallel_for(n, fn, grain);
}

}  // namespace ff
