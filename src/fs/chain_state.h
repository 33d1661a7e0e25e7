// Chain and target states of the storage cluster, and the rule mgmtd applies to each chain on
// every update (docs/fs-design.md, "Target state machine"; after 3FS's design notes and its
// generateNewChain).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ff::fs {

// Public state of a target in its chain (stored in the chain table, seen by clients). The values
// are 3FS's.
enum class PublicState : uint8_t {
  Serving = 1,      // reads and writes
  LastServing = 2,  // down, and the last serving target: the chain waits for it
  Syncing = 4,      // alive, recovering: writes only
  Waiting = 8,      // alive, recovery not started
  Offline = 16,     // down, or its medium failed
};

// Local state of a target, reported by its storage process in heartbeats (offline: no
// heartbeat within the lease).
enum class LocalState : uint8_t {
  UpToDate = 1,  // holds every committed write of its chain
  Online = 2,    // alive, may be behind
  Offline = 4,
};

const char* state_name(PublicState s);
const char* state_name(LocalState s);
bool serves_reads(PublicState s);
bool takes_writes(PublicState s);

struct ChainTarget {
  uint32_t target_id = 0;
  PublicState state = PublicState::Serving;
  LocalState local = LocalState::UpToDate;
  bool operator==(const ChainTarget&) const = default;
};

// The chain after one update: public states from the old ones and the local states, in the
// order serving, last-serving, syncing, waiting, offline (a failed target moves to the end; the
// head is the first target). At most one target syncs; when every serving target failed, the
// first of them stays last-serving and the others go offline.
std::vector<ChainTarget> next_chain(std::span<const ChainTarget> chain);

// "t1:serving/up-to-date, t2:offline/offline" (messages, tests).
std::string describe(std::span<const ChainTarget> chain);

}  // namespace ff::fs
