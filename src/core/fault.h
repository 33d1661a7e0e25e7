// Named fault-injection points, off by default, for testing failure paths (as 3FS does).
//
// Code marks a point with fault::point("engine.step", key); tests arm it with fault::arm(), and
// the `fireflyer` command arms what FF_FAULTS names at start-up (arm_from_env()). An armed point
// throws ff::InternalError
// ("fault injected at <name> (<key>)") when it is hit with a matching key. Unarmed, a point costs
// one relaxed atomic load.
//
// FF_FAULTS: a comma-separated list of `name[=key][*count]`, e.g.
//   FF_FAULTS='model.forward=req-bad,kv.alloc*1'
// key: fire only for that key (a request id at the engine's points); none: any key.
// count: fire that many times, then disarm; none: every matching hit.
//
// The points (see docs/server.md, "Failure paths"):
//   engine.step     the engine's per-request work after a forward pass (key: request id)
//   model.forward   inside Model::forward, after the first layer (key: request id)
//   kv.alloc        KV page allocation for a request (key: request id)
//   server.stream   the server's streaming loop, after the SSE stream began (key: request id)
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace ff::fault {

struct Spec {
  std::string key;     // empty: any key
  int64_t count = -1;  // hits that fire; -1: unlimited
};

void arm(std::string_view name, Spec spec = {});
void disarm(std::string_view name);
void disarm_all();
// Times the point fired since it was last armed.
int64_t fired(std::string_view name);
// Parses an FF_FAULTS value and arms what it names; throws ff::Error naming a malformed entry.
void arm_from_string(std::string_view faults);
// arm_from_string(getenv("FF_FAULTS")) when it is set.
void arm_from_env();

namespace detail {
bool any_armed();
void hit(std::string_view name, std::string_view key);
}  // namespace detail

// The injection point `name`, hit with `key`.
inline void point(std::string_view name, std::string_view key = {}) {
  if (detail::any_armed()) detail::hit(name, key);
}

}  // namespace ff::fault
