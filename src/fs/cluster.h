// The storage cluster's services and client over gRPC (docs/fs-design.md): mgmtd, the storage
// service (CRAQ chains of targets, recovery) and the client that writes through chain heads and
// reads from any serving replica. Each server runs its own threads; the destructors stop them.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fs/chunk_meta.h"
#include "fs/meta.h"
#include "fs/routing.h"

namespace ff::fs {

// What a call answers (the wire's codes, docs/fs-design.md).
enum class FsCode : uint8_t {
  Ok = 0,
  NotHead = 1,
  StaleChainVersion = 2,
  NotCommitted = 3,
  NotFound = 4,
  BadRange = 5,
  NoSpace = 6,
  ChecksumError = 7,
  ChecksumMismatch = 8,
  NeedFullChunk = 9,
  NotServing = 10,
  UnknownChain = 11,
  UnknownTarget = 12,
  BadRequest = 13,
  StaleRequest = 14,
  Busy = 15,
  Unavailable = 16,
  IoError = 17,
};
const char* code_name(FsCode c);

struct FsStatus {
  FsCode code = FsCode::Ok;
  std::string message;
  bool ok() const { return code == FsCode::Ok; }
  // "NO_SPACE: target 101 full" (messages, CLI).
  std::string str() const;
};

// ---- mgmtd ----

struct MgmtdOptions {
  std::string listen = "127.0.0.1:0";  // host:port (port 0: any free one)
  std::string db_dir;                  // RocksDB directory of the cluster state ("": in memory)
  int heartbeat_ms = 300;              // what storage services are told to use
  int lease_ms = 1500;                 // a node without a heartbeat this long is offline
  int update_ms = 100;                 // how often chains are recomputed
};

class MgmtdServer {
 public:
  explicit MgmtdServer(const MgmtdOptions& options);  // ff::Error when it cannot listen
  ~MgmtdServer();
  std::string address() const;  // host:port it listens on
  Routing routing() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- storage ----

struct StorageOptions {
  uint32_t node_id = 0;
  std::string listen = "127.0.0.1:0";
  std::string mgmtd;      // mgmtd's host:port
  std::string data_dir;   // targets in data_dir/target-<id>
  uint32_t targets = 1;   // target ids node_id * 100 + 1 ...
  uint64_t capacity = 0;  // bytes per target (0: the disk's)
  // Every update on the medium before it is acknowledged (fdatasync + synced metadata). false:
  // an acknowledged update survives killed processes and any failed machines but one per
  // chain (it is in every replica's page cache), not a power loss of all replicas at once.
  bool fsync = true;
  int forward_timeout_ms = 3000;
  int request_deadline_ms = 15000;  // a write's retries of its forward end here
};

class StorageServer {
 public:
  // Opens the targets, listens, registers with mgmtd (retrying until it answers or
  // request_deadline_ms passes) and starts heartbeats and recovery. ff::Error on failure.
  explicit StorageServer(const StorageOptions& options);
  ~StorageServer();
  std::string address() const;
  std::vector<uint32_t> target_ids() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- metadata service ----

struct MetaOptions {
  std::string listen = "127.0.0.1:0";
  std::string mgmtd;             // it heartbeats there; clients find it in the routing info
  std::string db_dir;            // the embedded RocksDB store (one service process over it)
  std::string etcd;              // or etcd's host:port: one store for any number of services
                                 // (neither: in memory, for tests)
  Layout layout;                 // new files' unless a create asks for another
  int session_lease_ms = 30000;  // a writer that stops renewing is closed for it after this
  int heartbeat_ms = 300;
  int gc_interval_ms = 500;  // expired sessions and removed files' chunks
};

// The metadata service (fs/meta.h over gRPC, with the storage work of lengths, truncation and
// garbage collection). Stateless: any number over one shared store.
class MetaServer {
 public:
  explicit MetaServer(const MetaOptions& options);  // ff::Error when it cannot start
  ~MetaServer();
  std::string address() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- client ----

struct ReadRequest {
  uint32_t chain_id = 0;
  ChunkId chunk;
  uint32_t offset = 0;
  uint32_t length = 0;
  uint32_t target_id = 0;  // 0: any serving replica; else that one (tests, tools)
};

struct ReadResult {
  FsStatus status;
  std::string data;
  uint64_t version = 0;
  uint32_t target_id = 0;  // the replica that answered
};

struct WriteResult {
  FsStatus status;
  uint64_t version = 0;  // the chunk's version after the update
  uint32_t length = 0;   // the chunk's length after it
  uint32_t crc = 0;      // its CRC32C
};

struct ClientOptions {
  std::string mgmtd;
  uint64_t client_id = 0;   // 0: a random one
  int deadline_ms = 30000;  // a call's retries end here
  int rpc_timeout_ms = 10000;
  uint32_t channels = 64;  // concurrent updates
};

class StorageClient {
 public:
  explicit StorageClient(const ClientOptions& options);
  ~StorageClient();

  // Fetches the routing info (a newer one than `known` if it comes within wait_ms).
  Routing refresh(uint64_t known = 0, int wait_ms = 0);
  Routing routing() const;

  // The chunk's bytes at offset become data (the chunk grows, zero-filled); acknowledged once
  // every replica of the chain holds it. Exactly once, however often the client retries.
  WriteResult write(uint32_t chain_id, const ChunkId& chunk, uint32_t offset, std::string_view data,
                    uint32_t chunk_size);
  WriteResult truncate(uint32_t chain_id, const ChunkId& chunk, uint32_t length,
                       uint32_t chunk_size);
  WriteResult remove(uint32_t chain_id, const ChunkId& chunk);
  ReadResult read(const ReadRequest& r);
  std::vector<ReadResult> batch_read(const std::vector<ReadRequest>& reads);
  // The highest chunk of `inode` on the chain (nullopt: none), or an error.
  FsStatus query_last_chunk(uint32_t chain_id, uint64_t inode, std::optional<ChunkMeta>* out);
  // Every chunk's metadata on one target (replicas compared by their checksums).
  FsStatus list_chunks(uint32_t target_id, std::vector<ChunkMeta>* out);

  // A raw update sent to one target, no retries (tests of the servers' refusals).
  WriteResult send_update_to(uint32_t target_id, uint32_t chain_id, uint32_t chain_version,
                             const ChunkId& chunk, uint32_t offset, std::string_view data,
                             uint32_t chunk_size);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Asks mgmtd for chain table `table_id` of chains of `replicas` targets on different nodes,
// made of every registered target not yet in a chain.
FsStatus create_chains(const std::string& mgmtd, uint32_t table_id, uint32_t replicas);

// Process-wide: buffers of up to 256 MiB from malloc's heap rather than fresh mappings (chunk
// buffers otherwise cost page faults on every request). The servers and the client call it.
void tune_allocator();

// Waits until every chain of the routing has all its targets serving (or timeout_ms passes).
bool wait_all_serving(StorageClient& client, int timeout_ms);

}  // namespace ff::fs
