// Private to the storage service: its state, shared by storage_server.cc (start, routing,
// heartbeats), update.cc (CRAQ writes) and read_sync.cc (reads, recovery, repair of bad chunks).
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fs/chunk_engine.h"
#include "fs/cluster.h"
#include "fs/wire.h"

namespace ff::fs {

// One lock per (target, chunk), made on first use and dropped when nobody holds or waits.
class ChunkLocks {
 public:
  class Guard {
   public:
    Guard(ChunkLocks& l, uint32_t target, const ChunkId& id);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    ChunkLocks& locks_;
    std::pair<uint32_t, ChunkId> key_;
  };

 private:
  struct Entry {
    std::mutex m;
    int users = 0;
  };
  std::mutex mu_;
  std::map<std::pair<uint32_t, ChunkId>, std::unique_ptr<Entry>> map_;
};

// Threads that run forwards while the caller stores its own copy. A task is taken only by an
// idle thread (never queued), so a full pool cannot wait on another server's full pool: the
// caller then forwards itself, one step after the other.
class IdlePool {
 public:
  explicit IdlePool(int threads);
  ~IdlePool();
  // Runs fn on an idle thread; false (fn not taken) when none is idle.
  bool try_run(std::function<void()> fn);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::function<void()> task_;
  int idle_ = 0;
  bool stopping_ = false;
};

struct StorageServer::Impl final : wire::Storage::Service {
  StorageOptions opt;
  std::map<uint32_t, std::unique_ptr<ChunkEngine>> engines;  // target -> its chunks
  ChunkLocks locks;
  StubCache stubs;
  IdlePool forwarders{16};
  std::unique_ptr<grpc::Server> server;
  std::string address;

  // Routing, as last pushed by mgmtd (only ever newer versions).
  mutable std::mutex routing_mu;
  std::shared_ptr<const Routing> routing_ptr = std::make_shared<Routing>();
  std::map<uint32_t, uint32_t> synced;  // target -> chain version its recovery finished at

  // The lease: heartbeats answered recently, after registration.
  std::atomic<bool> registered{false};
  std::atomic<int64_t> last_heartbeat_ms{0};
  int heartbeat_ms = 300, lease_ms = 1500;

  // Per chain: every update holds it shared from its version check to its answer; a recovery
  // takes it once, exclusively, before listing the chunks, so that no update admitted under
  // an older chain version (which would not reach the syncing target) is still running.
  std::mutex chain_locks_mu;
  std::map<uint32_t, std::unique_ptr<std::shared_mutex>> chain_locks;
  std::shared_mutex& chain_lock(uint32_t chain_id) {
    std::lock_guard lk(chain_locks_mu);
    auto& l = chain_locks[chain_id];
    if (!l) l = std::make_unique<std::shared_mutex>();
    return *l;
  }

  // Exactly-once: per (client, channel) the last request and its answer.
  struct Seen {
    uint64_t seq = 0;
    bool done = false;
    wire::UpdateRsp rsp;
  };
  std::mutex seen_mu;
  std::map<std::pair<uint64_t, uint32_t>, Seen> seen;

  std::mutex mu;  // the threads' sleeps
  std::condition_variable wake;
  bool stopping = false;
  std::thread heartbeat_thread, sync_thread;
  std::set<std::tuple<uint32_t, ChunkId, uint32_t>> bad_chunks;  // (target, chunk, chain): repair

  // storage_server.cc
  std::shared_ptr<const Routing> routing() const;
  void set_routing(const wire::RoutingInfo& w);
  // Asks mgmtd for routing newer than `known` (waiting up to wait_ms); false when unreachable.
  bool refresh_routing(uint64_t known, int wait_ms);
  bool lease_valid() const;
  LocalState local_state(uint32_t target) const;
  void register_with_mgmtd(int deadline_ms);
  void heartbeat_loop();
  bool sleep_ms(int ms);  // false when stopping

  // update.cc
  grpc::Status Update(grpc::ServerContext* ctx, const wire::UpdateReq* req,
                      wire::UpdateRsp* rsp) override;
  // Both reuse `req` as the message they forward.
  void client_update(wire::UpdateReq& req, wire::UpdateRsp* rsp,
                     std::chrono::steady_clock::time_point deadline);
  void forwarded_update(wire::UpdateReq& req, wire::UpdateRsp* rsp,
                        std::chrono::steady_clock::time_point deadline);
  // Sends the update on down the chain from `target` until a successor accepts it, the chain
  // has none (a tail) or the deadline passes; re-reads the routing after each failure.
  // `whole`: the chunk after the update, for a successor that needs it whole (nullptr: read it).
  // Sends *fwd on (changing its chain version, target and, when needed, kind and data).
  wire::Status forward(wire::UpdateReq* fwd, uint32_t target,
                       std::chrono::steady_clock::time_point deadline, const std::string* whole);
  // The update's new chunk stored here as pending version u while forward() sends it on;
  // OK when both did (else the pending version is dropped).
  wire::Status store_and_forward(wire::UpdateReq* fwd, uint32_t target, const ChunkId& id,
                                 const std::string& bytes, uint32_t crc, uint32_t chain_version,
                                 uint64_t u, std::chrono::steady_clock::time_point deadline);
  wire::Status whole_chunk(uint32_t target, const ChunkId& id, const std::string* whole,
                           wire::UpdateReq* fwd);
  // Checks the request's chain and version against the routing (refreshing it when the
  // request's is newer); fills the chain. `head`: the target must be the chain's head.
  wire::Status check_chain(uint32_t chain_id, uint32_t chain_version, uint32_t target, bool head,
                           ChainRoute* chain);

  // read_sync.cc
  grpc::Status BatchRead(grpc::ServerContext*, const wire::BatchReadReq* req,
                         wire::BatchReadRsp* rsp) override;
  grpc::Status QueryLastChunk(grpc::ServerContext*, const wire::QueryLastReq* req,
                              wire::QueryLastRsp* rsp) override;
  grpc::Status SyncStart(grpc::ServerContext*, const wire::SyncStartReq* req,
                         wire::SyncStartRsp* rsp) override;
  grpc::Status SyncDone(grpc::ServerContext*, const wire::SyncDoneReq* req,
                        wire::SyncDoneRsp* rsp) override;
  grpc::Status ListChunks(grpc::ServerContext*, const wire::ListChunksReq* req,
                          wire::ListChunksRsp* rsp) override;
  void sync_loop();
  // Brings the syncing successor of `target` in `chain` up to date; false on failure.
  bool resync(uint32_t target, const ChainRoute& chain, uint32_t successor);
  // Replaces a chunk that failed its checksum by a good replica's copy; true when repaired.
  bool repair(uint32_t target, const ChunkId& id, uint32_t chain_id);

  ChunkEngine* engine(uint32_t target) {
    const auto it = engines.find(target);
    return it == engines.end() ? nullptr : it->second.get();
  }
};

wire::Code to_code(ChunkError e);
int64_t now_ms();

}  // namespace ff::fs
