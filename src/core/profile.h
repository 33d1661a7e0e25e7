// Opt-in wall-clock profile of named stages, for finding where a forward pass or a serving step
// spends its time: FF_PROFILE=1 turns it on, code marks stages with a Scope, and report()
// tabulates calls and time per stage. Off (the default) a Scope costs one relaxed atomic load.
//
// Stages may nest (the inner one's time is also in the outer one's); names are string
// literals, and entries are keyed by their text, so the same stage named in two files is one
// entry. Recording is thread-safe; stages are meant for the caller's thread (work a stage hands
// to the thread pool is inside it, since the pool call returns when the work is done).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace ff::profile {

// On when FF_PROFILE is set to anything but "" or "0" (read at start-up), or after
// set_enabled(true).
bool enabled();
void set_enabled(bool on);

struct Entry {
  std::string name;
  int64_t calls = 0;
  double seconds = 0.0;
};

// Adds one call taking `seconds` to stage `name` (whether or not profiling is on).
void add(const char* name, double seconds);
// The stages recorded since the last reset(), in the order they were first recorded.
std::vector<Entry> entries();
void reset();
// A table of the entries, largest total first (calls, total ms, ms per call, share of the
// largest total, which is the outermost stage when stages nest); "" when nothing was recorded.
std::string report();

// Times its own lifetime as one call of stage `name` when profiling is on.
class Scope {
 public:
  explicit Scope(const char* name) : name_(enabled() ? name : nullptr) {
    if (name_) t0_ = Clock::now();
  }
  ~Scope() { stop(); }
  // Ends the call now (for a stage that ends before the enclosing block); later calls do nothing.
  void stop() {
    if (name_) add(name_, std::chrono::duration<double>(Clock::now() - t0_).count());
    name_ = nullptr;
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  using Clock = std::chrono::steady_clock;
  const char* name_;
  Clock::time_point t0_;
};

}  // namespace ff::profile
