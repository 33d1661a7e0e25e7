// Reads (any serving replica; NOT_COMMITTED while a version is pending; checksums checked),
// queries, recovery of a syncing successor (docs/fs-design.md, "Recovery") and the repair of
// chunks that failed their checksum.
#include "core/core.h"
#include "fs/crc32c.h"
#include "fs/storage/storage_impl.h"

namespace ff::fs {
namespace {

constexpr uint32_t kWholeChunk = UINT32_MAX;

}  // namespace

grpc::Status StorageServer::Impl::BatchRead(grpc::ServerContext*, const wire::BatchReadReq* req,
                                            wire::BatchReadRsp* rsp) {
  const auto r = routing();
  const bool lease = lease_valid();
  if (req->ios_size() > 1)
    for (const wire::ReadIo& io : req->ios()) {
      ChunkId id;
      if (ChunkEngine* eng = engine(io.target_id()); eng && id_from(io.chunk_id(), &id))
        eng->prefetch(id);
    }
  for (const wire::ReadIo& io : req->ios()) {
    wire::ReadResult* out = rsp->add_results();
    const ChainRoute* c = r->chain(io.chain_id());
    const TargetRoute* t = c ? c->find(io.target_id()) : nullptr;
    ChunkEngine* eng = engine(io.target_id());
    ChunkId id;
    if (!id_from(io.chunk_id(), &id)) {
      set_status(out->mutable_status(), wire::BAD_REQUEST, "a chunk id is 16 bytes");
      continue;
    }
    if (!c || !t || !eng) {
      set_status(out->mutable_status(), wire::UNKNOWN_TARGET,
                 fmt::format("target {} of chain {} is not on node {}", io.target_id(),
                             io.chain_id(), opt.node_id));
      continue;
    }
    if (!lease || !serves_reads(t->state)) {
      set_status(out->mutable_status(), wire::NOT_SERVING,
                 fmt::format("target {} is {}{}", io.target_id(), state_name(t->state),
                             lease ? "" : " without a lease"));
      continue;
    }
    try {
      // One engine call: the bytes and the version they are come from the same moment.
      ChunkMeta m;
      std::string data;
      ChunkError e = eng->read(id, io.offset(), io.length(), &data, false, &m);
      bool pending = false;
      if (e == ChunkError::NotFound && m.update > 0 && io.uncommitted()) {
        e = eng->read(id, io.offset(), io.length(), &data, true, &m);
        pending = true;
      } else if (e == ChunkError::None && m.pending()) {
        if (!io.uncommitted()) {
          set_status(out->mutable_status(), wire::NOT_COMMITTED,
                     fmt::format("chunk {} has version {} pending", id.hex(), m.update));
          continue;
        }
        e = eng->read(id, io.offset(), io.length(), &data, true, &m);
        pending = true;
      }
      if (e == ChunkError::NotFound && m.update > 0) e = ChunkError::NotCommitted;
      if (e == ChunkError::ChecksumMismatch) {
        std::lock_guard lk(mu);
        bad_chunks.insert({io.target_id(), id, io.chain_id()});
        wake.notify_all();
      }
      if (e != ChunkError::None) {
        set_status(
            out->mutable_status(), to_code(e),
            fmt::format("target {} chunk {}: {}", io.target_id(), id.hex(), chunk_error_name(e)));
        continue;
      }
      out->set_data(std::move(data));
      out->set_version(pending ? m.update : m.committed);
      out->set_chunk_length(pending ? m.update_length : m.length);
    } catch (const std::exception& e) {
      set_status(out->mutable_status(), wire::IO_ERROR, e.what());
    }
  }
  return grpc::Status::OK;
}

grpc::Status StorageServer::Impl::QueryLastChunk(grpc::ServerContext*,
                                                 const wire::QueryLastReq* req,
                                                 wire::QueryLastRsp* rsp) {
  const auto r = routing();
  const ChainRoute* c = r->chain(req->chain_id());
  const TargetRoute* t = c ? c->find(req->target_id()) : nullptr;
  ChunkEngine* eng = engine(req->target_id());
  if (!t || !eng) {
    set_status(rsp->mutable_status(), wire::UNKNOWN_TARGET,
               fmt::format("target {} of chain {} is not on node {}", req->target_id(),
                           req->chain_id(), opt.node_id));
  } else if (!lease_valid() || !serves_reads(t->state)) {
    set_status(rsp->mutable_status(), wire::NOT_SERVING,
               fmt::format("target {} does not serve", req->target_id()));
  } else if (const auto m = eng->last_chunk(req->inode())) {
    rsp->set_found(true);
    *rsp->mutable_meta() = to_wire(*m);
  }
  return grpc::Status::OK;
}

grpc::Status StorageServer::Impl::SyncStart(grpc::ServerContext*, const wire::SyncStartReq* req,
                                            wire::SyncStartRsp* rsp) {
  ChainRoute c;
  *rsp->mutable_status() =
      check_chain(req->chain_id(), req->chain_version(), req->target_id(), false, &c);
  if (rsp->status().code() != wire::OK) return grpc::Status::OK;
  if (c.find(req->target_id())->state != PublicState::Syncing) {
    set_status(rsp->mutable_status(), wire::NOT_SERVING,
               fmt::format("target {} is not syncing", req->target_id()));
    return grpc::Status::OK;
  }
  for (const ChunkMeta& m : engine(req->target_id())->all_metas()) *rsp->add_metas() = to_wire(m);
  return grpc::Status::OK;
}

grpc::Status StorageServer::Impl::SyncDone(grpc::ServerContext*, const wire::SyncDoneReq* req,
                                           wire::SyncDoneRsp* rsp) {
  ChainRoute c;
  *rsp->mutable_status() =
      check_chain(req->chain_id(), req->chain_version(), req->target_id(), false, &c);
  if (rsp->status().code() != wire::OK) return grpc::Status::OK;
  {
    std::lock_guard lk(routing_mu);
    synced[req->target_id()] = req->chain_version();
  }
  return grpc::Status::OK;
}

grpc::Status StorageServer::Impl::ListChunks(grpc::ServerContext*, const wire::ListChunksReq* req,
                                             wire::ListChunksRsp* rsp) {
  ChunkEngine* eng = engine(req->target_id());
  if (!eng) {
    set_status(rsp->mutable_status(), wire::UNKNOWN_TARGET,
               fmt::format("target {} is not on node {}", req->target_id(), opt.node_id));
    return grpc::Status::OK;
  }
  for (const ChunkMeta& m : eng->all_metas()) *rsp->add_metas() = to_wire(m);
  return grpc::Status::OK;
}

void StorageServer::Impl::sync_loop() {
  std::set<std::pair<uint32_t, uint32_t>> done;  // (chain, version) synced from here
  while (sleep_ms(100)) {
    std::set<std::tuple<uint32_t, ChunkId, uint32_t>> bad;
    {
      std::lock_guard lk(mu);
      bad.swap(bad_chunks);
    }
    for (const auto& [target, id, chain] : bad) {
      try {
        ChunkLocks::Guard guard(locks, target, id);
        repair(target, id, chain);
      } catch (const std::exception&) {
      }
    }
    if (!lease_valid()) continue;
    const auto r = routing();
    for (const auto& [cid, c] : r->chains) {
      for (const TargetRoute& t : c.targets) {
        if (!engine(t.target_id) || t.state != PublicState::Serving) continue;
        const TargetRoute* next = c.successor(t.target_id);
        if (!next || next->state != PublicState::Syncing || done.count({cid, c.version})) continue;
        bool ok = false;
        try {
          ok = resync(t.target_id, c, next->target_id);
        } catch (const std::exception&) {
        }
        if (ok) done.insert({cid, c.version});
      }
    }
  }
}

bool StorageServer::Impl::resync(uint32_t target, const ChainRoute& chain, uint32_t successor) {
  {
    // Updates admitted under an older version may not forward to the syncing target: let them
    // finish; every later one checks against this version, so it does.
    std::unique_lock drain(chain_lock(chain.chain_id));
    const ChainRoute* now = routing()->chain(chain.chain_id);
    if (!now || now->version != chain.version) return false;
  }
  const auto r = routing();
  auto stub = stubs.storage(r->address_of(successor));
  wire::SyncStartReq sreq;
  sreq.set_chain_id(chain.chain_id);
  sreq.set_chain_version(chain.version);
  sreq.set_target_id(successor);
  wire::SyncStartRsp srsp;
  {
    grpc::ClientContext ctx;
    set_deadline(ctx, 10000);
    if (!stub->SyncStart(&ctx, sreq, &srsp).ok() || srsp.status().code() != wire::OK) return false;
  }
  std::vector<ChunkMeta> remote;
  for (const auto& m : srsp.metas()) remote.push_back(from_wire(m));
  ChunkEngine& eng = *engine(target);
  // Every chunk on either side, decided under its lock on what is here now (a write that ran
  // since the listing is in it, or was forwarded to the successor already).
  std::set<ChunkId> ids;
  for (const ChunkMeta& m : eng.all_metas()) ids.insert(m.id);
  std::map<ChunkId, ChunkMeta> there;
  for (const ChunkMeta& m : remote) {
    ids.insert(m.id);
    there[m.id] = m;
  }
  for (const ChunkId& id : ids) {
    if (routing()->chain(chain.chain_id)->version != chain.version) return false;
    ChunkLocks::Guard guard(locks, target, id);
    const auto m = eng.meta(id);
    std::vector<ChunkMeta> here_v, there_v;
    if (m && m->committed > 0) here_v.push_back(*m);
    if (const auto it = there.find(id); it != there.end()) there_v.push_back(it->second);
    std::vector<SyncStep> step = sync_plan(here_v, there_v);
    // The same version with other bytes (an unacknowledged write numbered again): send too.
    if (step.empty() && !here_v.empty() && !there_v.empty() &&
        here_v[0].crc32c != there_v[0].crc32c)
      step.push_back({id, SyncAction::Send});
    if (step.empty()) continue;
    wire::UpdateReq u;
    u.set_chain_id(chain.chain_id);
    u.set_chain_version(chain.version);
    u.set_chunk_id(id_bytes(id));
    u.set_forwarded(true);
    u.set_sync(true);
    u.set_target_id(successor);
    if (step[0].action == SyncAction::Send) {
      std::string data;
      const ChunkError e = eng.read(id, 0, kWholeChunk, &data, false);
      if (e != ChunkError::None) return false;
      u.set_kind(wire::REPLACE);
      u.set_data(std::move(data));
      u.set_update_version(m->committed);
    } else {
      u.set_kind(wire::REMOVE);
    }
    wire::UpdateRsp ursp;
    grpc::ClientContext ctx;
    set_deadline(ctx, opt.forward_timeout_ms);
    if (!stub->Update(&ctx, u, &ursp).ok() || ursp.status().code() != wire::OK) return false;
    // What was sent is what the successor has now.
    if (u.kind() == wire::REPLACE) there[id] = *m;
  }
  wire::SyncDoneReq dreq;
  dreq.set_chain_id(chain.chain_id);
  dreq.set_chain_version(chain.version);
  dreq.set_target_id(successor);
  wire::SyncDoneRsp drsp;
  grpc::ClientContext ctx;
  set_deadline(ctx, 5000);
  return stub->SyncDone(&ctx, dreq, &drsp).ok() && drsp.status().code() == wire::OK;
}

bool StorageServer::Impl::repair(uint32_t target, const ChunkId& id, uint32_t chain_id) {
  ChunkEngine& eng = *engine(target);
  const auto m = eng.meta(id);
  if (!m || m->committed == 0) return false;
  const auto r = routing();
  const ChainRoute* c = r->chain(chain_id);
  if (!c) return false;
  for (const TargetRoute* t : c->serving()) {
    if (t->target_id == target) continue;
    wire::BatchReadReq req;
    wire::ReadIo* io = req.add_ios();
    io->set_chain_id(chain_id);
    io->set_chunk_id(id_bytes(id));
    io->set_offset(0);
    io->set_length(kWholeChunk);
    io->set_target_id(t->target_id);
    wire::BatchReadRsp rsp;
    grpc::ClientContext ctx;
    set_deadline(ctx, 5000);
    if (!stubs.storage(r->address_of(t->target_id))->BatchRead(&ctx, req, &rsp).ok() ||
        rsp.results_size() != 1 || rsp.results(0).status().code() != wire::OK)
      continue;
    const std::string& data = rsp.results(0).data();
    // The copy must be the version this target committed: its checksum is in our metadata.
    if (rsp.results(0).version() != m->committed || crc32c(data.data(), data.size()) != m->crc32c)
      continue;
    const auto again = eng.meta(id);
    if (!again || again->committed != m->committed) return false;
    return eng.replace(id, data, again->chain_version, m->committed) == ChunkError::None;
  }
  return false;
}

}  // namespace ff::fs
