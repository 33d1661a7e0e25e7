// FsClient: metadata calls to a metadata service (another one from the routing info when one
// cannot be reached), file data through StorageClient, one chunk piece per chain update or read.
// A lease thread renews the write sessions of open handles.
#include <fcntl.h>

#include <condition_variable>
#include <cstring>
#include <future>
#include <map>
#include <random>
#include <thread>

#include "core/core.h"
#include "fs/cluster.h"
#include "fs/file.h"
#include "fs/wire.h"

namespace ff::fs {
namespace {

using Steady = std::chrono::steady_clock;

struct Handle {
  std::mutex mu;  // pos
  Inode inode;
  std::vector<uint32_t> chains;
  bool readable = false, writable = false, append = false;
  uint64_t session = 0;
  uint64_t pos = 0;
  std::atomic<bool> wrote{false};
};

// What this client knows of a file it has open: the end of what it wrote, and the session that
// keeps the chunks of a file removed while this client reads it (POSIX: an open file's data
// stays until it is closed).
struct OpenInode {
  int handles = 0;
  uint64_t written_end = 0;
  uint64_t hold = 0;
};

int errno_of(const FsStatus& s) {
  return s.code == FsCode::NoSpace ? ENOSPC : s.code == FsCode::BadRange ? EFBIG : EIO;
}

}  // namespace

struct FsClient::Impl {
  FsClientOptions opt;
  std::unique_ptr<StorageClient> storage;
  StubCache stubs;
  std::mutex mu;
  std::string meta_addr;
  std::map<uint64_t, std::shared_ptr<Handle>> handles;
  std::map<uint64_t, OpenInode> open_inodes;
  uint64_t next_fh = 1;
  std::mt19937_64 rng{std::random_device{}()};
  uint64_t client_id = 0;
  int lease_ms = 30000;
  bool stopping = false;
  std::condition_variable cv;
  std::thread renewer;

  uint64_t random_id() {
    std::lock_guard lk(mu);
    return rng() | 1;
  }

  std::string pick_meta(const std::string& failed) {
    {
      std::lock_guard lk(mu);
      if (!meta_addr.empty() && meta_addr != failed) return meta_addr;
    }
    const Routing r = storage->refresh();
    std::vector<std::string> alive;
    for (const std::string& m : r.meta)
      if (m != failed) alive.push_back(m);
    if (alive.empty()) alive = r.meta;  // the failed one may be back
    std::lock_guard lk(mu);
    meta_addr = alive.empty() ? "" : alive[rng() % alive.size()];
    return meta_addr;
  }

  // One metadata call; the service's answer, or EIO when no service answered in time. A call
  // is sent again (to another service) only when gRPC says it did not reach the first.
  int call(const wire::MetaReq& q, wire::MetaRsp* rsp) {
    const auto until = Steady::now() + std::chrono::milliseconds(opt.deadline_ms);
    std::string failed;
    while (Steady::now() < until) {
      const std::string addr = pick_meta(failed);
      if (addr.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      grpc::ClientContext ctx;
      set_deadline(ctx, opt.deadline_ms);
      rsp->Clear();
      const grpc::Status g = stubs.meta(addr)->Call(&ctx, q, rsp);
      if (g.ok()) return rsp->err();
      if (g.error_code() != grpc::StatusCode::UNAVAILABLE) return EIO;
      failed = addr;
      std::lock_guard lk(mu);
      if (meta_addr == addr) meta_addr.clear();
    }
    return EIO;
  }

  MetaResult result(int err, const wire::MetaRsp& rsp) {
    MetaResult r;
    r.err = err;
    if (err == 0 && rsp.has_inode()) r.inode = from_wire(rsp.inode());
    if (r.ok() && r.inode.type == FileType::File) {
      std::lock_guard lk(mu);
      const auto it = open_inodes.find(r.inode.id);
      if (it != open_inodes.end())
        r.inode.length = std::max(r.inode.length, it->second.written_end);
    }
    return r;
  }

  MetaResult meta_op(const wire::MetaReq& q) {
    wire::MetaRsp rsp;
    const int e = call(q, &rsp);
    return result(e, rsp);
  }

  static wire::MetaReq req(wire::MetaOp op) {
    wire::MetaReq q;
    q.set_op(op);
    return q;
  }

  std::shared_ptr<Handle> handle(uint64_t fh) {
    std::lock_guard lk(mu);
    const auto it = handles.find(fh);
    return it == handles.end() ? nullptr : it->second;
  }

  // A handle for an opened inode (the metadata service's answer); EIO without its chains.
  int add_handle(const Inode& n, int flags, uint64_t session, uint64_t* fh) {
    auto h = std::make_shared<Handle>();
    h->inode = n;
    const int acc = flags & O_ACCMODE;
    h->readable = acc == O_RDONLY || acc == O_RDWR;
    h->writable = acc == O_WRONLY || acc == O_RDWR;
    h->append = flags & O_APPEND;
    h->session = session;
    if (n.type == FileType::File) {
      h->chains = file_chains(storage->routing(), n.layout);
      if (h->chains.empty()) h->chains = file_chains(storage->refresh(), n.layout);
      if (h->chains.empty()) return EIO;
    }
    std::lock_guard lk(mu);
    *fh = next_fh++;
    handles[*fh] = h;
    ++open_inodes[n.id].handles;
    return 0;
  }

  uint64_t known_length(const Handle& h) {
    std::lock_guard lk(mu);
    const auto it = open_inodes.find(h.inode.id);
    return std::max(h.inode.length, it == open_inodes.end() ? 0 : it->second.written_end);
  }

  void wrote_to(uint64_t id, uint64_t end) {
    std::lock_guard lk(mu);
    auto& o = open_inodes[id];
    o.written_end = std::max(o.written_end, end);
  }

  // One read of a batch: the bytes of [off, off + n) of h's file into buf.
  struct ReadJob {
    Handle* h;
    char* buf;
    size_t n;
    uint64_t off;
    bool fixed = false;     // h's length is the file's (no metadata call)
    bool no_holes = false;  // a missing chunk is ENOENT
    int64_t result = 0;
  };

  // Every job's chunk pieces in one batch of storage reads (one call per storage node).
  void read_batch(std::vector<ReadJob>& jobs) {
    std::vector<ReadRequest> reads;
    struct Piece {
      size_t job, at;
    };
    std::vector<Piece> pieces;
    for (size_t j = 0; j < jobs.size(); ++j) {
      ReadJob& job = jobs[j];
      Handle& h = *job.h;
      job.result = 0;
      if (!h.readable) {
        job.result = -EBADF;
        continue;
      }
      uint64_t len = job.fixed ? h.inode.length : known_length(h);
      if (!job.fixed && job.off + job.n > len) {  // another client may have written more: ask
        auto q = req(wire::STAT);
        q.set_id(h.inode.id);
        const MetaResult r = meta_op(q);
        if (r.ok()) {
          std::lock_guard lk(h.mu);
          h.inode.length = std::max(h.inode.length, r.inode.length);
        }
        len = known_length(h);
      }
      if (job.off >= len || job.n == 0) continue;
      job.n = size_t(std::min<uint64_t>(job.n, len - job.off));
      job.result = int64_t(job.n);
      const uint64_t cs = h.inode.layout.chunk_size, end = job.off + job.n;
      for (uint64_t p = job.off; p < end;) {
        const uint64_t idx = p / cs, in = p % cs;
        const uint32_t take = uint32_t(std::min<uint64_t>(cs - in, end - p));
        ReadRequest r;
        r.chain_id = h.chains[idx % h.chains.size()];
        r.chunk = ChunkId::of(h.inode.id, idx);
        r.offset = uint32_t(in);
        r.length = take;
        reads.push_back(r);
        pieces.push_back({j, size_t(p - job.off)});
        p += take;
      }
    }
    if (reads.empty()) return;
    const std::vector<ReadResult> got = storage->batch_read(reads);
    for (size_t i = 0; i < reads.size(); ++i) {
      ReadJob& job = jobs[pieces[i].job];
      char* dst = job.buf + pieces[i].at;
      const ReadResult& r = got[i];
      size_t have = 0;
      if (r.status.ok()) {
        have = std::min<size_t>(r.data.size(), reads[i].length);
        std::memcpy(dst, r.data.data(), have);
      } else if (job.no_holes && r.status.code == FsCode::NotFound) {
        job.result = -ENOENT;  // a chunk of the file is gone
      } else if (r.status.code != FsCode::NotFound && r.status.code != FsCode::BadRange) {
        if (job.result >= 0) job.result = -EIO;
      }
      std::memset(dst + have, 0, reads[i].length - have);  // a hole, or past a chunk's end
    }
  }

  int64_t pread(Handle& h, char* buf, size_t n, uint64_t off, bool fixed = false,
                bool no_holes = false) {
    std::vector<ReadJob> jobs{ReadJob{&h, buf, n, off, fixed, no_holes}};
    read_batch(jobs);
    return jobs[0].result;
  }

  int64_t pwrite(Handle& h, const char* buf, size_t n, uint64_t off) {
    if (!h.writable) return -EBADF;
    if (n == 0) return 0;
    if (off >= MetaStore::max_length || n > MetaStore::max_length - off) return -EFBIG;
    const uint64_t cs = h.inode.layout.chunk_size;
    struct Piece {
      uint32_t chain;
      uint64_t idx;
      uint32_t in, len;
      size_t at;
    };
    std::vector<Piece> pieces;
    for (uint64_t p = off; p < off + n;) {
      const uint64_t idx = p / cs, in = p % cs;
      const uint32_t take = uint32_t(std::min<uint64_t>(cs - in, off + n - p));
      pieces.push_back({h.chains[idx % h.chains.size()], idx, uint32_t(in), take, size_t(p - off)});
      p += take;
    }
    h.wrote = true;
    const auto one = [&](const Piece& pc) {
      return storage
          ->write(pc.chain, ChunkId::of(h.inode.id, pc.idx), pc.in,
                  std::string_view(buf + pc.at, pc.len), uint32_t(cs))
          .status;
    };
    std::vector<FsStatus> st(pieces.size());
    const size_t par = std::max<uint32_t>(opt.write_parallelism, 1);
    for (size_t b = 0; b < pieces.size(); b += par) {
      const size_t e = std::min(pieces.size(), b + par);
      std::vector<std::future<FsStatus>> fut;
      for (size_t i = b + 1; i < e; ++i)
        fut.push_back(std::async(std::launch::async, one, pieces[i]));
      st[b] = one(pieces[b]);
      for (size_t i = b + 1; i < e; ++i) st[i] = fut[i - b - 1].get();
    }
    // What was written without a gap from `off` counts; the first failure ends it.
    size_t done = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (!st[i].ok()) {
        if (done > 0) break;
        return -errno_of(st[i]);
      }
      done += pieces[i].len;
    }
    wrote_to(h.inode.id, off + done);
    return int64_t(done);
  }

  int settle(Handle& h, wire::MetaOp op) {
    auto q = req(op);
    q.set_id(h.inode.id);
    q.set_session(h.session);
    q.set_wrote(h.wrote);
    wire::MetaRsp rsp;
    const int e = call(q, &rsp);
    if (e == 0 && rsp.has_inode()) {
      std::lock_guard lk(h.mu);
      h.inode.length = std::max(h.inode.length, rsp.inode().length());
    }
    return e;
  }

  // Before a name goes (unlink, rename over it): when it names a file this client has open
  // and writes to no handle of, a session of its own keeps the file's chunks until the last
  // handle closes. (Another client's open handles are not known here: like NFS, a file removed
  // elsewhere may lose its data under a reader.)
  void hold_if_open(uint64_t parent, const std::string& name) {
    {
      std::lock_guard lk(mu);
      if (open_inodes.empty()) return;
    }
    auto q = req(wire::LOOKUP);
    q.set_parent(parent);
    q.set_name(name);
    wire::MetaRsp rsp;
    if (call(q, &rsp) != 0 || rsp.inode().type() != uint32_t(FileType::File)) return;
    const uint64_t id = rsp.inode().id();
    uint64_t session = 0;
    {
      std::lock_guard lk(mu);
      const auto it = open_inodes.find(id);
      if (it == open_inodes.end() || it->second.hold) return;
      for (const auto& [fh, h] : handles)
        if (h->inode.id == id && h->writable) return;  // its write session keeps the chunks
      session = rng() | 1;
      it->second.hold = session;
    }
    auto o = req(wire::OPEN);
    o.set_id(id);
    o.set_write(true);
    o.set_client_id(client_id);
    o.set_session(session);
    if (call(o, &rsp) != 0) {
      std::lock_guard lk(mu);
      const auto it = open_inodes.find(id);
      if (it != open_inodes.end() && it->second.hold == session) it->second.hold = 0;
    }
  }

  void renew_loop() {
    std::unique_lock lk(mu);
    while (!stopping) {
      cv.wait_for(lk, std::chrono::milliseconds(std::max(lease_ms / 3, 50)));
      if (stopping) break;
      auto q = req(wire::RENEW);
      for (const auto& [fh, h] : handles)
        if (h->writable && h->session) {
          auto* s = q.add_sessions();
          s->set_inode(h->inode.id);
          s->set_session(h->session);
        }
      for (const auto& [id, o] : open_inodes)
        if (o.hold) {
          auto* s = q.add_sessions();
          s->set_inode(id);
          s->set_session(o.hold);
        }
      if (q.sessions_size() == 0) continue;
      lk.unlock();
      wire::MetaRsp rsp;
      call(q, &rsp);
      lk.lock();
    }
  }

  void note_lease(const wire::MetaRsp& rsp) {
    if (rsp.lease_ms() == 0) return;
    std::lock_guard lk(mu);
    if (int(rsp.lease_ms()) < lease_ms) {
      lease_ms = int(rsp.lease_ms());
      cv.notify_all();
    }
  }
};

FsClient::FsClient(const FsClientOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  FF_CHECK(!options.mgmtd.empty(), "fs client: no mgmtd address");
  m.opt = options;
  ClientOptions co;
  co.mgmtd = options.mgmtd;
  co.deadline_ms = options.deadline_ms;
  m.storage = std::make_unique<StorageClient>(co);
  m.client_id = m.rng();
  m.renewer = std::thread([&m] { m.renew_loop(); });
}

FsClient::~FsClient() {
  std::vector<uint64_t> open;
  {
    std::lock_guard lk(impl_->mu);
    for (const auto& [fh, h] : impl_->handles) open.push_back(fh);
  }
  for (const uint64_t fh : open) close(fh);
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    impl_->cv.notify_all();
  }
  impl_->renewer.join();
}

MetaResult FsClient::lookup(uint64_t parent, const std::string& name) {
  auto q = Impl::req(wire::LOOKUP);
  q.set_parent(parent);
  q.set_name(name);
  return impl_->meta_op(q);
}

MetaResult FsClient::stat(uint64_t id) {
  auto q = Impl::req(wire::STAT);
  q.set_id(id);
  MetaResult r = impl_->meta_op(q);
  if (r.err == ENOENT) {  // removed, but open here: what the handle knows, with no links
    std::lock_guard lk(impl_->mu);
    for (const auto& [fh, h] : impl_->handles)
      if (h->inode.id == id) {
        r = MetaResult{0, h->inode};
        r.inode.nlink = 0;
        const auto it = impl_->open_inodes.find(id);
        if (it != impl_->open_inodes.end())
          r.inode.length = std::max(r.inode.length, it->second.written_end);
        break;
      }
  }
  return r;
}

MetaResult FsClient::mkdir(uint64_t parent, const std::string& name, uint32_t mode, Owner owner) {
  auto q = Impl::req(wire::MKDIR);
  q.set_parent(parent);
  q.set_name(name);
  q.set_mode(mode);
  q.set_uid(owner.uid);
  q.set_gid(owner.gid);
  return impl_->meta_op(q);
}

MetaResult FsClient::symlink(uint64_t parent, const std::string& name, const std::string& target,
                             Owner owner) {
  auto q = Impl::req(wire::SYMLINK);
  q.set_parent(parent);
  q.set_name(name);
  q.set_target(target);
  q.set_uid(owner.uid);
  q.set_gid(owner.gid);
  return impl_->meta_op(q);
}

int FsClient::readdir(uint64_t dir, const std::string& after, size_t limit,
                      std::vector<DirEntry>* out) {
  auto q = Impl::req(wire::READDIR);
  q.set_id(dir);
  q.set_after(after);
  q.set_limit(uint32_t(std::min<size_t>(limit, 4096)));
  wire::MetaRsp rsp;
  out->clear();
  const int e = impl_->call(q, &rsp);
  if (e) return e;
  for (const auto& d : rsp.entries()) out->push_back({d.name(), d.id(), FileType(d.type())});
  return 0;
}

int FsClient::unlink(uint64_t parent, const std::string& name) {
  impl_->hold_if_open(parent, name);
  auto q = Impl::req(wire::UNLINK);
  q.set_parent(parent);
  q.set_name(name);
  return impl_->meta_op(q).err;
}

int FsClient::rmdir(uint64_t parent, const std::string& name) {
  auto q = Impl::req(wire::RMDIR);
  q.set_parent(parent);
  q.set_name(name);
  return impl_->meta_op(q).err;
}

MetaResult FsClient::link(uint64_t id, uint64_t parent, const std::string& name) {
  auto q = Impl::req(wire::LINK);
  q.set_id(id);
  q.set_parent(parent);
  q.set_name(name);
  return impl_->meta_op(q);
}

MetaResult FsClient::readlink(uint64_t id) {
  auto q = Impl::req(wire::READLINK);
  q.set_id(id);
  return impl_->meta_op(q);
}

MetaResult FsClient::setattr(uint64_t id, const SetAttr& a, std::optional<uint64_t> length) {
  auto q = Impl::req(wire::SETATTR);
  q.set_id(id);
  if (a.mode) q.set_set_mode(*a.mode);
  if (a.uid) q.set_set_uid(*a.uid);
  if (a.gid) q.set_set_gid(*a.gid);
  if (a.atime_ns) q.set_set_atime_ns(*a.atime_ns);
  if (a.mtime_ns) q.set_set_mtime_ns(*a.mtime_ns);
  if (length) {
    if (*length > MetaStore::max_length) return MetaResult{EFBIG, {}};
    q.set_set_length(*length);
  }
  MetaResult r = impl_->meta_op(q);
  if (r.ok() && length) {
    std::lock_guard lk(impl_->mu);
    const auto it = impl_->open_inodes.find(id);
    if (it != impl_->open_inodes.end()) it->second.written_end = *length;
    for (auto& [fh, h] : impl_->handles)
      if (h->inode.id == id) h->inode.length = *length;
    r.inode.length = *length;
  }
  return r;
}

int FsClient::rename(uint64_t from_parent, const std::string& from, uint64_t to_parent,
                     const std::string& to, bool noreplace) {
  if (!noreplace) impl_->hold_if_open(to_parent, to);
  auto q = Impl::req(wire::RENAME);
  q.set_parent(from_parent);
  q.set_name(from);
  q.set_new_parent(to_parent);
  q.set_new_name(to);
  q.set_noreplace(noreplace);
  return impl_->meta_op(q).err;
}

MetaResult FsClient::resolve(const std::string& path) {
  MetaResult cur = stat(kRootInode);
  size_t i = 0;
  while (cur.ok() && i < path.size()) {
    const size_t j = std::min(path.find('/', i), path.size());
    const std::string name = path.substr(i, j - i);
    i = j + 1;
    if (name.empty()) continue;
    if (cur.inode.type != FileType::Directory) return MetaResult{ENOTDIR, {}};
    cur = lookup(cur.inode.id, name);
  }
  return cur;
}

int FsClient::create(uint64_t parent, const std::string& name, uint32_t mode, Owner owner,
                     uint64_t* fh, Inode* inode) {
  Impl& m = *impl_;
  auto q = Impl::req(wire::CREATE);
  q.set_parent(parent);
  q.set_name(name);
  q.set_mode(mode);
  q.set_uid(owner.uid);
  q.set_gid(owner.gid);
  q.set_table_id(m.opt.table_id);
  q.set_chunk_size(m.opt.chunk_size);
  q.set_stripe(m.opt.stripe);
  q.set_write(true);
  q.set_client_id(m.client_id);
  const uint64_t session = m.random_id();
  q.set_session(session);
  wire::MetaRsp rsp;
  if (const int e = m.call(q, &rsp)) return e;
  m.note_lease(rsp);
  const Inode n = from_wire(rsp.inode());
  if (inode) *inode = n;
  return m.add_handle(n, O_RDWR, session, fh);
}

int FsClient::open(uint64_t id, int flags, uint64_t* fh, Inode* inode) {
  Impl& m = *impl_;
  const int acc = flags & O_ACCMODE;
  const bool write = acc == O_WRONLY || acc == O_RDWR;
  if (acc != O_RDONLY && !write) return EINVAL;
  auto q = Impl::req(wire::OPEN);
  q.set_id(id);
  q.set_write(write);
  q.set_truncate(write && (flags & O_TRUNC));
  q.set_client_id(m.client_id);
  const uint64_t session = write ? m.random_id() : 0;
  q.set_session(session);
  wire::MetaRsp rsp;
  if (const int e = m.call(q, &rsp)) return e;
  m.note_lease(rsp);
  const Inode n = from_wire(rsp.inode());
  if (inode) *inode = n;
  if (q.truncate()) {
    std::lock_guard lk(m.mu);
    const auto it = m.open_inodes.find(id);
    if (it != m.open_inodes.end()) it->second.written_end = 0;
  }
  return m.add_handle(n, flags, session, fh);
}

int FsClient::open(const std::string& path, int flags, uint32_t mode, uint64_t* fh) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const MetaResult parent = resolve(dir);
  if (!parent.ok()) return parent.err;
  if (parent.inode.type != FileType::Directory) return ENOTDIR;
  if (name.empty()) return EISDIR;
  MetaResult n = lookup(parent.inode.id, name);
  if (n.ok() && (flags & O_CREAT) && (flags & O_EXCL)) return EEXIST;
  if (n.err == ENOENT && (flags & O_CREAT)) {
    const int e = create(parent.inode.id, name, mode, {}, fh);
    if (e != EEXIST || (flags & O_EXCL)) return e;
    n = lookup(parent.inode.id, name);  // made by another client meanwhile: open that one
  }
  if (!n.ok()) return n.err;
  if (n.inode.type == FileType::Directory) return EISDIR;
  if (n.inode.type == FileType::Symlink) return ELOOP;
  return open(n.inode.id, flags, fh);
}

int64_t FsClient::pread(uint64_t fh, void* buf, size_t n, uint64_t offset) {
  const auto h = impl_->handle(fh);
  if (!h) return -EBADF;
  return impl_->pread(*h, static_cast<char*>(buf), n, offset);
}

std::vector<int64_t> FsClient::batch_pread(const std::vector<ReadIo>& ios) {
  Impl& m = *impl_;
  std::vector<std::shared_ptr<Handle>> hs;
  std::vector<Impl::ReadJob> jobs;
  std::vector<int64_t> out(ios.size(), -EBADF);
  std::vector<size_t> where;
  for (size_t i = 0; i < ios.size(); ++i) {
    auto h = m.handle(ios[i].fh);
    if (!h) continue;
    jobs.push_back(Impl::ReadJob{h.get(), static_cast<char*>(ios[i].buf), ios[i].n, ios[i].offset});
    hs.push_back(std::move(h));
    where.push_back(i);
  }
  m.read_batch(jobs);
  for (size_t j = 0; j < jobs.size(); ++j) out[where[j]] = jobs[j].result;
  return out;
}

int64_t FsClient::pread_inode(const Inode& inode, void* buf, size_t n, uint64_t offset,
                              bool forbid_holes) {
  if (inode.type != FileType::File) return -EISDIR;
  Handle h;
  h.inode = inode;
  h.readable = true;
  h.chains = file_chains(impl_->storage->routing(), inode.layout);
  if (h.chains.empty()) h.chains = file_chains(impl_->storage->refresh(), inode.layout);
  if (h.chains.empty()) return -EIO;
  return impl_->pread(h, static_cast<char*>(buf), n, offset, true, forbid_holes);
}

int64_t FsClient::pwrite(uint64_t fh, const void* buf, size_t n, uint64_t offset) {
  const auto h = impl_->handle(fh);
  if (!h) return -EBADF;
  return impl_->pwrite(*h, static_cast<const char*>(buf), n, offset);
}

int64_t FsClient::read(uint64_t fh, void* buf, size_t n) {
  const auto h = impl_->handle(fh);
  if (!h) return -EBADF;
  std::lock_guard lk(h->mu);
  const int64_t got = impl_->pread(*h, static_cast<char*>(buf), n, h->pos);
  if (got > 0) h->pos += uint64_t(got);
  return got;
}

int64_t FsClient::write(uint64_t fh, const void* buf, size_t n) {
  const auto h = impl_->handle(fh);
  if (!h) return -EBADF;
  std::lock_guard lk(h->mu);
  if (h->append) h->pos = impl_->known_length(*h);
  const int64_t put = impl_->pwrite(*h, static_cast<const char*>(buf), n, h->pos);
  if (put > 0) h->pos += uint64_t(put);
  return put;
}

int FsClient::fsync(uint64_t fh) {
  const auto h = impl_->handle(fh);
  if (!h) return EBADF;
  if (!h->writable || !h->wrote) return 0;
  return impl_->settle(*h, wire::SYNC);
}

int FsClient::close(uint64_t fh) {
  Impl& m = *impl_;
  const auto h = m.handle(fh);
  if (!h) return EBADF;
  const int e = h->writable ? m.settle(*h, wire::CLOSE) : 0;
  uint64_t hold = 0;
  {
    std::lock_guard lk(m.mu);
    m.handles.erase(fh);
    auto it = m.open_inodes.find(h->inode.id);
    if (it != m.open_inodes.end() && --it->second.handles <= 0) {
      hold = it->second.hold;
      m.open_inodes.erase(it);
    }
  }
  if (hold) {  // the last handle of a removed file: its chunks may go now
    auto q = Impl::req(wire::CLOSE);
    q.set_id(h->inode.id);
    q.set_session(hold);
    wire::MetaRsp rsp;
    m.call(q, &rsp);
  }
  return e;
}

}  // namespace ff::fs
