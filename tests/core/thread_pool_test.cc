// The shared thread pool: coverage of parallel_for, nesting, determinism, many tiny calls,
// exceptions, run().
#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "core/core.h"

namespace ff {
namespace {

using Chunks = std::vector<std::pair<int64_t, int64_t>>;

Chunks chunks_of(ThreadPool& pool, int64_t n, int64_t grain) {
  std::mutex mu;
  Chunks c;
  pool.parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        std::lock_guard<std::mutex> lock(mu);
        c.emplace_back(b, e);
      },
      grain);
  std::sort(c.begin(), c.end());
  return c;
}

TEST(ThreadPool, ParallelForCoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 7, 1000}) {
      for (int64_t grain : {-3, 0, 1, 2, 3, 5, 64, 1000, 5000}) {
        std::vector<std::atomic<int>> hits(size_t(n > 0 ? n : 1));
        for (auto& h : hits) h = 0;
        std::atomic<int> calls{0};
        pool.parallel_for(
            n,
            [&](int64_t b, int64_t e) {
              ++calls;
              ASSERT_LT(b, e);
              ASSERT_GE(b, 0);
              ASSERT_LE(e, n);
              for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
            },
            grain);
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[size_t(i)], 1)
              << "threads " << threads << " n " << n << " grain " << grain << " index " << i;
        if (n == 0) {
          EXPECT_EQ(calls, 0);
        }
        EXPECT_LE(calls, threads);
      }
    }
  }
}

TEST(ThreadPool, GlobalPoolAndFreeFunction) {
  ThreadPool& g = ThreadPool::global();
  EXPECT_EQ(&g, &ThreadPool::global());
  EXPECT_GE(g.size(), 1);
  if (const char* env = std::getenv("FF_NUM_THREADS"); env && std::atoi(env) > 0) {
    EXPECT_EQ(g.size(), std::atoi(env));
  } else {
    cpu_set_t set;
    ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    EXPECT_EQ(g.size(), CPU_COUNT(&set)) << "the CPUs this process may run on";
  }
  std::vector<int> out(12345, 0);
  parallel_for(int64_t(out.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[size_t(i)] += int(i);
  });
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], int(i));
}

// Chunks are contiguous, grain-aligned, min(ceil(n/grain), size) of them, and the same every time.
TEST(ThreadPool, ChunkingIsDeterministic) {
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 3, 7, 100, 1000, 1001}) {
      for (int64_t grain : {1, 3, 16, 64}) {
        const Chunks first = chunks_of(pool, n, grain);
        for (int rep = 0; rep < 5; ++rep) ASSERT_EQ(chunks_of(pool, n, grain), first);
        const int64_t units = (n + grain - 1) / grain;
        ASSERT_EQ(int64_t(first.size()), std::min<int64_t>(units, threads));
        int64_t expect_begin = 0;
        for (const auto& [b, e] : first) {
          ASSERT_EQ(b, expect_begin);
          ASSERT_EQ(b % grain, 0);
          if (e != n) {
            ASSERT_EQ(e % grain, 0);
          }
          expect_begin = e;
        }
        ASSERT_EQ(expect_begin, n);
        // Balanced: chunk sizes (in grains) differ by at most one.
        int64_t lo = INT64_MAX, hi = 0;
        for (size_t k = 0; k + 1 < first.size(); ++k) {
          const int64_t g = (first[k].second - first[k].first) / grain;
          lo = std::min(lo, g);
          hi = std::max(hi, g);
        }
        if (first.size() > 2) {
          ASSERT_LE(hi - lo, 1);
        }
      }
    }
  }
}

TEST(ThreadPool, NestedCallsRunWithoutDeadlock) {
  ThreadPool pool(4);
  const int64_t outer = 16, inner = 100;
  std::vector<std::atomic<int>> hits(size_t(outer * inner));
  for (auto& h : hits) h = 0;
  pool.parallel_for(outer, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      // Same pool, the global pool, and run() from inside a task.
      pool.parallel_for(inner, [&](int64_t ib, int64_t ie) {
        for (int64_t j = ib; j < ie; ++j) hits[size_t(i * inner + j)]++;
      });
      parallel_for(3, [](int64_t, int64_t) {});
      std::atomic<int> ran{0};
      pool.run([&](int) { ++ran; });
      ASSERT_EQ(ran, pool.size());
    }
  });
  for (auto& h : hits) ASSERT_EQ(h, 1);
}

TEST(ThreadPool, RunCallsEveryThreadIndexOnce) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(threads));
      for (auto& s : seen) s = 0;
      std::mutex mu;
      std::set<std::thread::id> ids;
      std::thread::id caller_as_0;
      pool.run([&](int t) {
        ASSERT_GE(t, 0);
        ASSERT_LT(t, threads);
        seen[size_t(t)]++;
        std::lock_guard<std::mutex> lock(mu);
        ids.insert(std::this_thread::get_id());
        if (t == 0) caller_as_0 = std::this_thread::get_id();
      });
      for (auto& s : seen) ASSERT_EQ(s, 1);
      ASSERT_EQ(int(ids.size()), threads) << "each index on its own thread";
      ASSERT_EQ(caller_as_0, std::this_thread::get_id()) << "the caller is thread 0";
    }
  }
}

TEST(ThreadPool, ManyTinyCallsCompleteQuickly) {
  ThreadPool pool(std::max(2, std::min(4, int(std::thread::hardware_concurrency()))));
  std::atomic<int64_t> sum{0};
  const int calls = 100000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < calls; ++c) {
    pool.parallel_for(2, [&](int64_t b, int64_t e) { sum += e - b; });
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(sum, int64_t(calls) * 2);
  std::printf("%d parallel_for calls on %d threads: %.2f us each\n", calls, pool.size(),
              s * 1e6 / calls);
  // Generous (loaded CI machines, sanitizers); a thread start or a sleep per call would be far
  // slower than this.
  EXPECT_LT(s, 30.0);
}

TEST(ThreadPool, ExceptionsPropagateAndThePoolStaysUsable) {
  ThreadPool pool(4);
  // Thrown by the caller's own chunk (begin 0) and by a worker's chunk.
  for (int64_t bad : {int64_t(0), int64_t(999)}) {
    std::atomic<int> done{0};
    try {
      pool.parallel_for(1000, [&](int64_t b, int64_t e) {
        if (b <= bad && bad < e) throw Error("chunk " + std::to_string(b));
        ++done;
      });
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("chunk"), std::string::npos);
    }
    EXPECT_EQ(done, 3) << "the other chunks still ran to completion";
    std::atomic<int64_t> n{0};
    pool.parallel_for(1000, [&](int64_t b, int64_t e) { n += e - b; });
    EXPECT_EQ(n, 1000);
  }
  // Every thread throws: one exception comes out.
  EXPECT_THROW(pool.run([](int t) { throw Error("t" + std::to_string(t)); }), Error);
  std::atomic<int> ran{0};
  pool.run([&](int) { ++ran; });
  EXPECT_EQ(ran, 4);
}

TEST(ThreadPool, ConcurrentCallersAreSerialised) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int k = 0; k < 200; ++k)
        pool.parallel_for(100, [&](int64_t b, int64_t e) { total += e - b; });
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(total, 4 * 200 * 100);
}

TEST(ThreadPool, CreateAndDestroyRepeatedly) {
  for (int k = 0; k < 30; ++k) {
    ThreadPool pool(1 + k % 6);
    if (k % 2) {
      std::atomic<int> n{0};
      pool.run([&](int) { ++n; });
      EXPECT_EQ(n, pool.size());
    }
  }
  ThreadPool zero(0);
  EXPECT_EQ(zero.size(), 1);
  ThreadPool negative(-5);
  EXPECT_EQ(negative.size(), 1);
}

}  // namespace
}  // namespace ff
