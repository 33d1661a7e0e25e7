// Private to src/fs: the generated protobuf / gRPC types (build directory, gen/fs/) and the
// conversions between them and the module's own types. No public header includes this one.
#pragma once
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "fs/chunk_meta.h"
#include "fs/meta.h"
#include "fs/routing.h"
#include "wire.grpc.pb.h"
#include "wire.pb.h"

namespace ff::fs {

wire::RoutingInfo to_wire(const Routing& r);
Routing from_wire(const wire::RoutingInfo& w);
wire::ChunkMetaMsg to_wire(const ChunkMeta& m);
ChunkMeta from_wire(const wire::ChunkMetaMsg& w);
void to_wire(const Inode& n, wire::InodeMsg* w);
Inode from_wire(const wire::InodeMsg& w);

inline std::string id_bytes(const ChunkId& id) {
  return std::string(reinterpret_cast<const char*>(id.bytes.data()), id.bytes.size());
}
// false when the bytes are not a chunk id (16 bytes).
bool id_from(const std::string& bytes, ChunkId* id);

inline void set_status(wire::Status* s, wire::Code code, std::string message = {}) {
  s->set_code(code);
  s->set_message(std::move(message));
}

// A client context whose call ends after `ms` milliseconds.
inline void set_deadline(grpc::ClientContext& ctx, int ms) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

// One channel per address, reconnecting quickly after a peer restarts (gRPC's default backoff
// grows to two minutes).
std::shared_ptr<grpc::Channel> make_channel(const std::string& address);
// gRPC servers share a port by default (SO_REUSEPORT): a second server on a port would take
// half of the first one's connections. Ours own their ports; a taken port is an error.
void exclusive_port(grpc::ServerBuilder& b);

class StubCache;

// mgmtd's routing info, or a newer one than `known` if it comes within wait_ms; false when mgmtd
// did not answer. `ctx` (optional) is the call's context, for a caller that may cancel it.
bool get_routing(StubCache& stubs, const std::string& mgmtd, uint64_t known, int wait_ms,
                 wire::RoutingInfo* out, grpc::ClientContext* ctx = nullptr);

class StubCache {
 public:
  // Shared: a stub stays valid for its caller while the cache replaces it.
  std::shared_ptr<wire::Storage::Stub> storage(const std::string& address);
  std::shared_ptr<wire::Mgmtd::Stub> mgmtd(const std::string& address);
  std::shared_ptr<wire::Meta::Stub> meta(const std::string& address);

 private:
  template <class Stub>
  struct Entry {
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<Stub> stub;
    std::chrono::steady_clock::time_point made;
  };
  template <class Stub, class Make>
  std::shared_ptr<Stub> get(std::map<std::string, Entry<Stub>>& map, const std::string& address,
                            Make&& make);

  std::mutex mu_;
  std::map<std::string, Entry<wire::Storage::Stub>> storage_;
  std::map<std::string, Entry<wire::Mgmtd::Stub>> mgmtd_;
  std::map<std::string, Entry<wire::Meta::Stub>> meta_;
};

}  // namespace ff::fs
