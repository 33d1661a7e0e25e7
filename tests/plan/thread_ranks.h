// Test helper: in-process pipeline ranks, one thread each over a ThreadHub.
#pragma once
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "plan/plan.h"

namespace ff::plan {

// Runs fn(rank, transport) on `ranks` threads; an exception on one aborts the hub so the others
// cannot wait forever, and is returned (what()) per rank, "" where none was thrown.
inline std::vector<std::string> run_ranks(int ranks,
                                          const std::function<void(int, Transport&)>& fn) {
  ThreadHub hub(ranks, /*timeout_s=*/60);
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      auto t = hub.transport(r);
      try {
        fn(r, *t);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
        hub.abort();
      }
    });
  for (std::thread& th : threads) th.join();
  return errors;
}

}  // namespace ff::plan
