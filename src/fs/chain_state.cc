// next_chain: the table of docs/fs-design.md, "Target state machine". The old targets are taken
// in groups of their public state (serving, last-serving, syncing, waiting, offline), each in
// chain order, and every decision sees the new states given so far in this pass.
#include "fs/chain_state.h"

#include <array>

#include "core/core.h"

namespace ff::fs {
namespace {

constexpr std::array<PublicState, 5> kOrder = {PublicState::Serving, PublicState::LastServing,
                                               PublicState::Syncing, PublicState::Waiting,
                                               PublicState::Offline};

size_t group(PublicState s) {
  for (size_t i = 0; i < kOrder.size(); ++i)
    if (kOrder[i] == s) return i;
  fail_invariant("fs: public state {} is not valid", int(s));
}

bool alive(LocalState s) {
  return s == LocalState::UpToDate || s == LocalState::Online;
}

}  // namespace

const char* state_name(PublicState s) {
  switch (s) {
    case PublicState::Serving:
      return "serving";
    case PublicState::LastServing:
      return "lastsrv";
    case PublicState::Syncing:
      return "syncing";
    case PublicState::Waiting:
      return "waiting";
    case PublicState::Offline:
      return "offline";
  }
  return "invalid";
}

const char* state_name(LocalState s) {
  switch (s) {
    case LocalState::UpToDate:
      return "up-to-date";
    case LocalState::Online:
      return "online";
    case LocalState::Offline:
      return "offline";
  }
  return "invalid";
}

bool serves_reads(PublicState s) {
  return s == PublicState::Serving;
}

bool takes_writes(PublicState s) {
  return s == PublicState::Serving || s == PublicState::Syncing;
}

std::vector<ChainTarget> next_chain(std::span<const ChainTarget> chain) {
  std::array<std::vector<ChainTarget>, 5> old_groups, out;
  for (const ChainTarget& t : chain) old_groups[group(t.state)].push_back(t);
  const auto put = [&](ChainTarget t, PublicState s) {
    t.state = s;
    out[group(s)].push_back(t);
  };
  const auto any = [&](PublicState s) { return !out[group(s)].empty(); };
  for (const ChainTarget& t : old_groups[group(PublicState::Serving)]) {
    if (alive(t.local))
      put(t, PublicState::Serving);
    else  // the first serving target to fail keeps the chain's last state; the others drop out
      put(t, any(PublicState::LastServing) ? PublicState::Offline : PublicState::LastServing);
  }
  for (const ChainTarget& t : old_groups[group(PublicState::LastServing)]) {
    if (any(PublicState::Serving))
      put(t, PublicState::Offline);
    else
      put(t, alive(t.local) ? PublicState::Serving : PublicState::LastServing);
  }
  for (const ChainTarget& t : old_groups[group(PublicState::Syncing)]) {
    if (t.local == LocalState::UpToDate)
      put(t, PublicState::Serving);
    else if (t.local == LocalState::Online)
      put(t, any(PublicState::Serving) ? PublicState::Syncing : PublicState::Waiting);
    else
      put(t, PublicState::Offline);
  }
  for (const ChainTarget& t : old_groups[group(PublicState::Waiting)]) {
    if (t.local == LocalState::Online && any(PublicState::Serving) && !any(PublicState::Syncing))
      put(t, PublicState::Syncing);
    else
      put(t, alive(t.local) ? PublicState::Waiting : PublicState::Offline);
  }
  // A returning target waits one update before it may sync (the design notes' table; 3FS's code
  // lets it sync at once).
  for (const ChainTarget& t : old_groups[group(PublicState::Offline)])
    put(t, alive(t.local) ? PublicState::Waiting : PublicState::Offline);
  if (any(PublicState::Serving)) {
    for (const ChainTarget& t : out[group(PublicState::LastServing)]) put(t, PublicState::Offline);
    out[group(PublicState::LastServing)].clear();
  }
  std::vector<ChainTarget> next;
  for (const auto& g : out) next.insert(next.end(), g.begin(), g.end());
  FF_INVARIANT(next.size() == chain.size(), "fs: next_chain lost a target");
  return next;
}

std::string describe(std::span<const ChainTarget> chain) {
  std::string s;
  for (const ChainTarget& t : chain)
    s += fmt::format("{}t{}:{}/{}", s.empty() ? "" : ", ", t.target_id, state_name(t.state),
                     state_name(t.local));
  return s;
}

}  // namespace ff::fs
