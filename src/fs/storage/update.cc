// CRAQ updates (docs/fs-design.md, "Writes"). The head numbers the update (committed + 1),
// stores it pending, forwards it; each target checks the chain version, stores it pending and
// forwards it; the tail commits and each target commits when its successor answers. A successor
// that cannot apply an update (a gap in versions, a different result) answers NEED_FULL_CHUNK
// and gets the whole chunk instead; a syncing successor always gets whole chunks.
#include <future>
#include <random>

#include "core/core.h"
#include "fs/storage/storage_impl.h"

namespace ff::fs {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

wire::Status status_of(wire::Code c, std::string m = {}) {
  wire::Status s;
  set_status(&s, c, std::move(m));
  return s;
}

bool retryable(wire::Code c) {
  return c == wire::STALE_CHAIN_VERSION || c == wire::NOT_SERVING || c == wire::UNAVAILABLE ||
         c == wire::BUSY || c == wire::NOT_HEAD || c == wire::UNKNOWN_TARGET;
}

// Validates what every update needs; an empty message when it is well formed.
std::string malformed(const wire::UpdateReq& r) {
  constexpr uint64_t kMaxChunk = uint64_t(kMinBlock) << (kSizeClasses - 1);
  if (r.chunk_id().size() != 16)
    return fmt::format("chunk id of {} bytes, not 16", r.chunk_id().size());
  switch (r.kind()) {
    case wire::WRITE:
      if (r.chunk_size() == 0 || r.chunk_size() > kMaxChunk)
        return fmt::format("chunk size {} is not in 1..{}", r.chunk_size(), kMaxChunk);
      if (uint64_t(r.offset()) + r.data().size() > r.chunk_size())
        return fmt::format("write of {} bytes at offset {} passes the chunk size {}",
                           r.data().size(), r.offset(), r.chunk_size());
      return "";
    case wire::TRUNCATE:
      if (r.chunk_size() == 0 || r.chunk_size() > kMaxChunk)
        return fmt::format("chunk size {} is not in 1..{}", r.chunk_size(), kMaxChunk);
      if (r.length() > r.chunk_size())
        return fmt::format("truncate to {} bytes passes the chunk size {}", r.length(),
                           r.chunk_size());
      return "";
    case wire::REMOVE:
      return "";
    case wire::REPLACE:
      if (!r.forwarded()) return "a full-chunk replace comes only from a chain predecessor";
      if (r.data().size() > kMaxChunk) return "a chunk of more than 64 MiB";
      if (r.update_version() == 0) return "a full-chunk replace without a version";
      return "";
    default:
      return fmt::format("unknown update kind {}", int(r.kind()));
  }
}

bool trace_on() {
  static const bool on = std::getenv("FF_FS_TRACE") != nullptr;
  return on;
}

// The request without its data (FF_FS_TRACE's line).
wire::UpdateReq trace_header(const wire::UpdateReq& r) {
  wire::UpdateReq h;
  if (!trace_on()) return h;
  h.set_target_id(r.target_id());
  h.set_chain_id(r.chain_id());
  h.set_chain_version(r.chain_version());
  h.set_chunk_id(r.chunk_id());
  h.set_kind(r.kind());
  h.set_forwarded(r.forwarded());
  h.set_sync(r.sync());
  h.set_update_version(r.update_version());
  return h;
}

}  // namespace

// The update becomes a full-chunk replace: `whole` (the chunk after it), or else this target's
// newest version of the chunk.
wire::Status StorageServer::Impl::whole_chunk(uint32_t target, const ChunkId& id,
                                              const std::string* whole, wire::UpdateReq* fwd) {
  if (fwd->kind() == wire::REPLACE) return status_of(wire::OK);
  if (whole == &fwd->data()) {  // a whole-chunk write at offset 0: its data is the chunk
    fwd->set_kind(wire::REPLACE);
    return status_of(wire::OK);
  }
  std::string all;
  if (whole) {
    all = *whole;
  } else {
    ChunkError e = engine(target)->read(id, 0, UINT32_MAX, &all, true);
    if (e == ChunkError::NotCommitted) e = engine(target)->read(id, 0, UINT32_MAX, &all, false);
    if (e != ChunkError::None)
      return status_of(to_code(e), fmt::format("target {}: reading {} whole: {}", target, id.hex(),
                                               chunk_error_name(e)));
  }
  fwd->set_kind(wire::REPLACE);
  fwd->set_data(std::move(all));
  fwd->set_offset(0);
  return status_of(wire::OK);
}

wire::Status StorageServer::Impl::check_chain(uint32_t chain_id, uint32_t chain_version,
                                              uint32_t target, bool head, ChainRoute* chain) {
  auto r = routing();
  const ChainRoute* c = r->chain(chain_id);
  if ((!c || chain_version > c->version) && refresh_routing(r->version, 0)) {
    r = routing();
    c = r->chain(chain_id);
  }
  if (!c) return status_of(wire::UNKNOWN_CHAIN, fmt::format("no chain {}", chain_id));
  if (chain_version != c->version)
    return status_of(wire::STALE_CHAIN_VERSION,
                     fmt::format("chain {} is at version {}, the request has {}", chain_id,
                                 c->version, chain_version));
  const TargetRoute* t = c->find(target);
  if (!t || !engine(target))
    return status_of(wire::UNKNOWN_TARGET, fmt::format("target {} of chain {} is not on node {}",
                                                       target, chain_id, opt.node_id));
  if (!lease_valid())
    return status_of(wire::NOT_SERVING, fmt::format("node {} has no lease", opt.node_id));
  if (head) {
    const TargetRoute* h = c->head();
    if (!h || h->target_id != target)
      return status_of(wire::NOT_HEAD,
                       fmt::format("target {} is not the head of chain {}", target, chain_id));
  } else if (!takes_writes(t->state)) {
    return status_of(wire::NOT_SERVING, fmt::format("target {} is {} in chain {}", target,
                                                    state_name(t->state), chain_id));
  }
  *chain = *c;
  return status_of(wire::OK);
}

grpc::Status StorageServer::Impl::Update(grpc::ServerContext* ctx, const wire::UpdateReq* req,
                                         wire::UpdateRsp* rsp) {
  const auto now = std::chrono::steady_clock::now();
  SteadyTime deadline = now + std::chrono::milliseconds(opt.request_deadline_ms);
  const auto client_deadline = ctx->deadline();
  if (client_deadline != std::chrono::system_clock::time_point::max())
    deadline = std::min(deadline, now + (client_deadline - std::chrono::system_clock::now()) -
                                      std::chrono::milliseconds(200));
  if (const std::string m = malformed(*req); !m.empty()) {
    set_status(rsp->mutable_status(), wire::BAD_REQUEST, m);
    return grpc::Status::OK;
  }
  // The handlers reuse the request as the message they forward (no copy of its data); gRPC
  // made it and does not look at it again. What the trace line prints is read first.
  auto& mreq = const_cast<wire::UpdateReq&>(*req);
  const wire::UpdateReq head = trace_header(*req);
  try {
    std::shared_lock chain_guard(chain_lock(req->chain_id()), std::defer_lock);
    if (!req->sync()) chain_guard.lock();
    if (req->forwarded())
      forwarded_update(mreq, rsp, deadline);
    else
      client_update(mreq, rsp, deadline);
  } catch (const std::exception& e) {
    set_status(rsp->mutable_status(), wire::IO_ERROR, e.what());
  }
  if (trace_on()) {
    const wire::UpdateReq* req = &head;
    ChunkId id;
    id_from(req->chunk_id(), &id);
    fprintf(stderr, "TRACE %lld t%u c%u v%u %s kind %d fwd %d sync %d u%llu -> %d v%llu %s\n",
            (long long)now_ms(), req->target_id(), req->chain_id(), req->chain_version(),
            id.hex().c_str(), int(req->kind()), int(req->forwarded()), int(req->sync()),
            (unsigned long long)req->update_version(), int(rsp->status().code()),
            (unsigned long long)rsp->version(), rsp->status().message().c_str());
  }
  return grpc::Status::OK;
}

void StorageServer::Impl::client_update(wire::UpdateReq& req, wire::UpdateRsp* rsp,
                                        SteadyTime deadline) {
  ChainRoute chain;
  *rsp->mutable_status() =
      check_chain(req.chain_id(), req.chain_version(), req.target_id(), true, &chain);
  if (rsp->status().code() != wire::OK) return;
  // Exactly once per (client, channel, seq).
  const std::pair<uint64_t, uint32_t> who{req.client_id(), req.channel()};
  if (req.client_id() != 0) {
    std::lock_guard lk(seen_mu);
    Seen& s = seen[who];
    if (req.seq() == s.seq && s.seq != 0) {
      if (s.done)
        *rsp = s.rsp;
      else
        set_status(rsp->mutable_status(), wire::BUSY, "the same request is still running");
      return;
    }
    if (req.seq() < s.seq) {
      set_status(rsp->mutable_status(), wire::STALE_REQUEST,
                 fmt::format("request {} of channel {} is older than {}", req.seq(), req.channel(),
                             s.seq));
      return;
    }
    s = Seen{req.seq(), false, {}};
  }
  const auto finish = [&] {
    if (req.client_id() == 0) return;
    std::lock_guard lk(seen_mu);
    Seen& s = seen[who];
    if (s.seq != req.seq()) return;
    if (retryable(rsp->status().code()) || rsp->status().code() == wire::IO_ERROR)
      s = Seen{};  // not applied: a retry runs it again
    else
      s = Seen{req.seq(), true, *rsp};
  };

  const uint32_t target = req.target_id();
  ChunkEngine& eng = *engine(target);
  ChunkId id;
  id_from(req.chunk_id(), &id);
  ChunkLocks::Guard guard(locks, target, id);
  wire::UpdateReq& fwd = req;  // forwarded as it is, once read here
  uint64_t u = 0;
  wire::Status s;
  if (req.kind() != wire::REMOVE) {
    const auto edit =
        req.kind() == wire::WRITE ? ChunkEngine::Edit::Write : ChunkEngine::Edit::Truncate;
    std::string bytes;
    uint32_t crc = 0;
    bool is_data = false;
    ChunkError e = ChunkError::None;
    for (int attempt = 0; attempt < 2; ++attempt) {
      const auto m = eng.meta(id);
      u = (m ? m->committed : 0) + 1;
      e = eng.prepare(id, edit, req.offset(), req.data(), req.length(), req.chunk_size(), u, &bytes,
                      &crc, &is_data);
      // A committed copy that fails its checksum is fetched again from a replica first.
      if (e != ChunkError::ChecksumMismatch || !repair(target, id, chain.chain_id)) break;
    }
    if (e != ChunkError::None) {
      set_status(rsp->mutable_status(), to_code(e),
                 fmt::format("target {}: {}", target, chunk_error_name(e)));
      finish();
      return;
    }
    fwd.set_update_version(u);
    fwd.set_crc(crc);
    rsp->set_crc(crc);
    // A whole-chunk write is stored from the request itself, which forward() then sends as
    // it is (it reads it only).
    const std::string& content = is_data ? req.data() : bytes;
    rsp->set_length(uint32_t(content.size()));
    fwd.set_forwarded(true);
    s = store_and_forward(&fwd, target, id, content, crc, chain.version, u, deadline);
  } else {
    fwd.set_forwarded(true);
    s = forward(&fwd, target, deadline, nullptr);
  }
  if (s.code() != wire::OK) {
    *rsp->mutable_status() = s;
    finish();
    return;
  }
  if (u) {
    const ChunkError e = eng.commit(id, u);
    FF_INVARIANT(e == ChunkError::None, "target {}: commit of {} v{} failed: {}", target, id.hex(),
                 u, chunk_error_name(e));
  } else {
    eng.remove(id);
  }
  rsp->set_version(u);
  finish();
}

void StorageServer::Impl::forwarded_update(wire::UpdateReq& req, wire::UpdateRsp* rsp,
                                           SteadyTime deadline) {
  ChainRoute chain;
  *rsp->mutable_status() =
      check_chain(req.chain_id(), req.chain_version(), req.target_id(), false, &chain);
  if (rsp->status().code() != wire::OK) return;
  const uint32_t target = req.target_id();
  ChunkEngine& eng = *engine(target);
  ChunkId id;
  id_from(req.chunk_id(), &id);
  ChunkLocks::Guard guard(locks, target, id);
  const uint64_t u = req.update_version();
  rsp->set_version(u);
  if (req.kind() == wire::REMOVE || req.kind() == wire::REPLACE) {
    // Down the chain first: a predecessor never lacks what a successor has committed.
    if (!req.sync()) {
      const wire::Status s =
          forward(&req, target, deadline, req.kind() == wire::REPLACE ? &req.data() : nullptr);
      if (s.code() != wire::OK) {
        *rsp->mutable_status() = s;
        return;
      }
    }
    const ChunkError e = req.kind() == wire::REMOVE
                             ? eng.remove(id)
                             : eng.replace(id, req.data(), req.chain_version(), u);
    if (e != ChunkError::None && e != ChunkError::NotFound)
      set_status(rsp->mutable_status(), to_code(e),
                 fmt::format("target {}: {}", target, chunk_error_name(e)));
    return;
  }
  // WRITE / TRUNCATE: apply as version u on top of u - 1, or ask for the whole chunk.
  const auto m = eng.meta(id);
  const uint64_t committed = m ? m->committed : 0;
  if (committed >= u) {
    if (committed != u || m->crc32c != req.crc()) {
      set_status(rsp->mutable_status(), wire::NEED_FULL_CHUNK, "the chunk differs");
      return;
    }
    // Applied already (a retried forward): the successors may still need it.
    *rsp->mutable_status() = forward(&req, target, deadline, nullptr);
    if (rsp->status().code() == wire::OK) rsp->set_crc(req.crc());
    return;
  }
  if (committed + 1 != u) {
    set_status(rsp->mutable_status(), wire::NEED_FULL_CHUNK,
               fmt::format("target {} holds v{}, the update makes v{}", target, committed, u));
    return;
  }
  std::string bytes;
  uint32_t crc = 0;
  bool is_data = false;
  const ChunkError e = eng.prepare(
      id, req.kind() == wire::WRITE ? ChunkEngine::Edit::Write : ChunkEngine::Edit::Truncate,
      req.offset(), req.data(), req.length(), req.chunk_size(), u, &bytes, &crc, &is_data);
  if (e == ChunkError::ChecksumMismatch || e == ChunkError::BadVersion ||
      (e == ChunkError::None && crc != req.crc())) {
    set_status(rsp->mutable_status(), wire::NEED_FULL_CHUNK,
               fmt::format("target {}: {}", target,
                           e == ChunkError::None ? "the result differs" : chunk_error_name(e)));
    return;
  }
  if (e != ChunkError::None) {
    set_status(rsp->mutable_status(), to_code(e),
               fmt::format("target {}: {}", target, chunk_error_name(e)));
    return;
  }
  *rsp->mutable_status() = store_and_forward(&req, target, id, is_data ? req.data() : bytes, crc,
                                             req.chain_version(), u, deadline);
  if (rsp->status().code() != wire::OK) return;
  eng.commit(id, u);
  rsp->set_crc(req.crc());
}

wire::Status StorageServer::Impl::store_and_forward(wire::UpdateReq* fwd, uint32_t target,
                                                    const ChunkId& id, const std::string& bytes,
                                                    uint32_t crc, uint32_t chain_version,
                                                    uint64_t u, SteadyTime deadline) {
  // The successors work while this target writes: the update waits for the slower, not for
  // the sum. Nothing commits before both are done.
  std::promise<wire::Status> result;
  auto down = result.get_future();
  const auto send = [&] {
    try {
      result.set_value(forward(fwd, target, deadline, &bytes));
    } catch (const std::exception& x) {
      result.set_value(status_of(wire::IO_ERROR, x.what()));
    }
  };
  const bool parallel = forwarders.try_run(send);
  ChunkError e = ChunkError::None;
  std::string failure;
  try {
    e = engine(target)->put_pending(id, bytes, crc, chain_version, u);
  } catch (const std::exception& x) {
    failure = x.what();
  }
  if (!parallel) send();
  const wire::Status s = down.get();
  if (failure.empty() && e == ChunkError::None) {
    if (s.code() != wire::OK) engine(target)->abort(id, u);
    return s;
  }
  // Not stored here (a successor may hold it: an unacknowledged update, replaced by the next).
  return status_of(
      failure.empty() ? to_code(e) : wire::IO_ERROR,
      failure.empty() ? fmt::format("target {}: {}", target, chunk_error_name(e)) : failure);
}

IdlePool::IdlePool(int threads) {
  for (int i = 0; i < threads; ++i)
    threads_.emplace_back([this] {
      std::unique_lock lk(mu_);
      for (;;) {
        ++idle_;
        cv_.wait(lk, [&] { return stopping_ || task_; });
        --idle_;
        if (stopping_) return;
        std::function<void()> fn = std::move(task_);
        task_ = nullptr;
        cv_.notify_all();  // the slot is free for the next try_run
        lk.unlock();
        fn();
        lk.lock();
      }
    });
}

IdlePool::~IdlePool() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  for (auto& t : threads_) t.join();
}

bool IdlePool::try_run(std::function<void()> fn) {
  std::unique_lock lk(mu_);
  // One hand-over at a time: wait (briefly) until the previous task has been picked up.
  cv_.wait(lk, [&] { return stopping_ || !task_; });
  if (stopping_ || idle_ == 0) return false;
  task_ = std::move(fn);
  cv_.notify_all();
  return true;
}

wire::Status StorageServer::Impl::forward(wire::UpdateReq* msg, uint32_t target,
                                          SteadyTime deadline, const std::string* whole) {
  wire::UpdateReq& fwd = *msg;
  ChunkId id;
  id_from(fwd.chunk_id(), &id);
  std::string last = "no attempt";
  std::minstd_rand rng(uint32_t(now_ms()) ^ target);
  for (int attempt = 0;; ++attempt) {
    const auto r = routing();
    const ChainRoute* c = r->chain(fwd.chain_id());
    const TargetRoute* me = c ? c->find(target) : nullptr;
    if (!me || !takes_writes(me->state))
      return status_of(wire::NOT_SERVING, fmt::format("target {} left chain {} while forwarding",
                                                      target, fwd.chain_id()));
    const TargetRoute* next = c->successor(target);
    if (!next) return status_of(wire::OK);  // the tail
    fwd.set_chain_version(c->version);
    fwd.set_target_id(next->target_id);
    fwd.set_sync(false);
    // A syncing successor gets whole chunks (its old versions may be anything).
    if (next->state == PublicState::Syncing &&
        (fwd.kind() == wire::WRITE || fwd.kind() == wire::TRUNCATE)) {
      if (const wire::Status s = whole_chunk(target, id, whole, &fwd); s.code() != wire::OK)
        return s;
    }
    wire::UpdateRsp rsp;
    grpc::ClientContext ctx;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0)
      return status_of(wire::UNAVAILABLE,
                       fmt::format("chain {}: forwarding from target {} timed out: {}",
                                   fwd.chain_id(), target, last));
    set_deadline(ctx, int(std::min<int64_t>(left, opt.forward_timeout_ms)));
    const grpc::Status g = stubs.storage(r->address_of(next->target_id))->Update(&ctx, fwd, &rsp);
    wire::Code code = g.ok() ? rsp.status().code() : wire::UNAVAILABLE;
    if (code == wire::OK) return status_of(wire::OK);
    last = g.ok() ? rsp.status().message() : g.error_message();
    if (code == wire::NEED_FULL_CHUNK && fwd.kind() != wire::REPLACE) {
      if (const wire::Status s = whole_chunk(target, id, whole, &fwd); s.code() != wire::OK)
        return s;
      continue;
    }
    if (!retryable(code)) return status_of(code, last);
    // The successor is down or the chain moved on: wait for mgmtd's next routing.
    refresh_routing(r->version, std::min(200 << std::min(attempt, 3), 1000));
    if (!sleep_ms(int(rng() % 20))) return status_of(wire::UNAVAILABLE, "stopping");
  }
}

}  // namespace ff::fs
