// MetaStore: each operation is one body for run_txn. A body reads what it depends on through
// tracked reads (the parent directory's inode, the entries it checks, a directory's entries when
// it must be empty, the parents up to the root for a rename's loop check), so two operations
// that would together break an invariant cannot both commit. Creating in a directory writes only
// the new entry and inode: concurrent creates in one directory do not conflict.
#include "fs/meta.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>

#include "core/core.h"
#include "fs/kv.h"

namespace ff::fs {
namespace {

std::string be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char(v >> (56 - 8 * i));
  return s;
}
uint64_t from_be64(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) v = v << 8 | uint8_t(s[i]);
  return v;
}

std::string inode_key(uint64_t id) {
  return "I" + be64(id);
}
std::string dir_prefix(uint64_t dir) {
  return "D" + be64(dir);
}
std::string dentry_key(uint64_t dir, const std::string& name) {
  return dir_prefix(dir) + name;
}
std::string session_prefix(uint64_t inode) {
  return "S" + be64(inode);
}
std::string session_key(uint64_t inode, uint64_t session) {
  return session_prefix(inode) + be64(session);
}
std::string session_value(const WriteSession& s) {
  return be64(s.client) + be64(uint64_t(s.expires_ns));
}
WriteSession decode_session(std::string_view k, std::string_view v) {
  WriteSession s;
  s.inode = from_be64(k.substr(1, 8));
  s.session = from_be64(k.substr(9, 8));
  s.client = from_be64(v.substr(0, 8));
  s.expires_ns = int64_t(from_be64(v.substr(8, 8)));
  return s;
}
std::string garbage_key(uint64_t inode) {
  return "G" + be64(inode);
}

template <class T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
T take(std::string_view& s) {
  T v{};
  FF_INVARIANT(s.size() >= sizeof v, "fs meta: a stored inode is truncated");
  std::memcpy(&v, s.data(), sizeof v);
  s.remove_prefix(sizeof v);
  return v;
}

std::string encode(const Inode& n) {
  std::string s;
  put(s, uint8_t(n.type));
  put(s, n.mode);
  put(s, n.uid);
  put(s, n.gid);
  put(s, n.nlink);
  put(s, n.length);
  put(s, n.atime_ns);
  put(s, n.mtime_ns);
  put(s, n.ctime_ns);
  put(s, n.layout.table_id);
  put(s, n.layout.chunk_size);
  put(s, n.layout.stripe);
  put(s, n.layout.seed);
  put(s, n.parent);
  s += n.target;
  return s;
}
Inode decode(uint64_t id, std::string_view s) {
  Inode n;
  n.id = id;
  n.type = FileType(take<uint8_t>(s));
  n.mode = take<uint32_t>(s);
  n.uid = take<uint32_t>(s);
  n.gid = take<uint32_t>(s);
  n.nlink = take<uint32_t>(s);
  n.length = take<uint64_t>(s);
  n.atime_ns = take<int64_t>(s);
  n.mtime_ns = take<int64_t>(s);
  n.ctime_ns = take<int64_t>(s);
  n.layout.table_id = take<uint32_t>(s);
  n.layout.chunk_size = take<uint32_t>(s);
  n.layout.stripe = take<uint32_t>(s);
  n.layout.seed = take<uint64_t>(s);
  n.parent = take<uint64_t>(s);
  n.target = std::string(s);
  return n;
}

std::string encode_entry(uint64_t id, FileType t) {
  return be64(id) + char(t);
}
DirEntry decode_entry(const std::string& name, std::string_view v) {
  return {name, from_be64(v), FileType(uint8_t(v.size() > 8 ? v[8] : 0))};
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int check_name(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    return EINVAL;
  return name.size() > kMaxName ? ENAMETOOLONG : 0;
}

std::optional<Inode> read_inode(Txn& t, uint64_t id) {
  const auto v = t.get(inode_key(id));
  if (!v) return std::nullopt;
  return decode(id, *v);
}

std::optional<DirEntry> read_entry(Txn& t, uint64_t dir, const std::string& name) {
  const auto v = t.get(dentry_key(dir, name));
  if (!v) return std::nullopt;
  return decode_entry(name, *v);
}

// The directory `dir`, or the error a path through it gives.
int need_dir(Txn& t, uint64_t dir, Inode* out = nullptr) {
  const auto d = read_inode(t, dir);
  if (!d) return ENOENT;
  if (d->type != FileType::Directory) return ENOTDIR;
  if (out) *out = *d;
  return 0;
}

bool empty_dir(Txn& t, uint64_t dir) {
  const std::string p = dir_prefix(dir);
  return t.range(p, prefix_end(p), 1).empty();
}

uint64_t fresh_id(Txn& t) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  for (;;) {
    const uint64_t id = rng() >> 1;
    if (id > kRootInode && !t.get(inode_key(id))) return id;
  }
}

// Drops one link of `id` (an entry that named it is gone); the inode goes with the last.
void drop_link(Txn& t, const Inode& n) {
  if (n.type == FileType::Directory || n.nlink <= 1) {
    t.clear(inode_key(n.id));
    // A file's chunks (whatever its recorded length: a writer may not have settled it yet) are
    // removed later, once no write session lasts (deferred garbage collection).
    if (n.type == FileType::File) t.set(garbage_key(n.id), encode(n));
    return;
  }
  Inode m = n;
  --m.nlink;
  m.ctime_ns = now_ns();
  t.set(inode_key(n.id), encode(m));
}

// Runs one operation; its result, or EIO when the store could not commit it.
template <class Body>
MetaResult run(TxnStore& store, Body&& body) {
  MetaResult r;
  const TxnStatus s = run_txn(store, [&](Txn& t) {
    r = MetaResult{};
    r.err = body(t, r.inode);
  });
  if (s != TxnStatus::Committed) r.err = EIO;
  return r;
}

}  // namespace

MetaStore::MetaStore(TxnStore& store) : store_(store) {
  const MetaResult r = run(store_, [](Txn& t, Inode& out) {
    if (const auto root = read_inode(t, kRootInode)) {
      out = *root;
      return 0;
    }
    out.id = kRootInode;
    out.type = FileType::Directory;
    out.mode = 0755;
    out.nlink = 2;
    out.parent = kRootInode;
    out.mtime_ns = out.ctime_ns = now_ns();
    t.set(inode_key(kRootInode), encode(out));
    return 0;
  });
  FF_CHECK(r.ok(), "fs meta: cannot create the root directory: {}", std::strerror(r.err));
}

MetaResult MetaStore::lookup(uint64_t parent, const std::string& name) {
  return run(store_, [&](Txn& t, Inode& out) {
    if (const int e = need_dir(t, parent)) return e;
    const auto d = read_entry(t, parent, name);
    if (!d) return ENOENT;
    const auto n = read_inode(t, d->id);
    if (!n) return EIO;  // an entry without its inode: never written by these operations
    out = *n;
    return 0;
  });
}

MetaResult MetaStore::stat(uint64_t id) {
  return run(store_, [&](Txn& t, Inode& out) {
    const auto n = read_inode(t, id);
    if (!n) return ENOENT;
    out = *n;
    return 0;
  });
}

namespace {

MetaResult make(TxnStore& store, uint64_t parent, const std::string& name, Inode proto, Owner owner,
                WriteSession* session = nullptr) {
  if (const int e = check_name(name)) return MetaResult{e, {}};
  proto.uid = owner.uid;
  proto.gid = owner.gid;
  return run(store, [&](Txn& t, Inode& out) {
    if (const int e = need_dir(t, parent)) return e;
    if (read_entry(t, parent, name)) return EEXIST;
    out = proto;
    out.id = fresh_id(t);
    out.parent = proto.type == FileType::Directory ? parent : 0;
    out.atime_ns = out.mtime_ns = out.ctime_ns = now_ns();
    t.set(inode_key(out.id), encode(out));
    t.set(dentry_key(parent, name), encode_entry(out.id, out.type));
    if (session) {
      session->inode = out.id;
      t.set(session_key(out.id, session->session), session_value(*session));
    }
    return 0;
  });
}

}  // namespace

MetaResult MetaStore::mkdir(uint64_t parent, const std::string& name, uint32_t mode, Owner owner) {
  Inode n;
  n.type = FileType::Directory;
  n.mode = mode & 07777;
  n.nlink = 2;
  return make(store_, parent, name, n, owner);
}

MetaResult MetaStore::create(uint64_t parent, const std::string& name, uint32_t mode, Owner owner,
                             const Layout& layout, WriteSession* session) {
  if (!layout.check().empty()) return MetaResult{EINVAL, {}};
  Inode n;
  n.type = FileType::File;
  n.mode = mode & 07777;
  n.layout = layout;
  return make(store_, parent, name, n, owner, session);
}

MetaResult MetaStore::symlink(uint64_t parent, const std::string& name, const std::string& target,
                              Owner owner) {
  if (target.empty()) return MetaResult{ENOENT, {}};
  if (target.size() > 4095) return MetaResult{ENAMETOOLONG, {}};
  Inode n;
  n.type = FileType::Symlink;
  n.mode = 0777;
  n.target = target;
  n.length = target.size();
  return make(store_, parent, name, n, owner);
}

int MetaStore::readdir(uint64_t dir, const std::string& after, size_t limit,
                       std::vector<DirEntry>* out) {
  return run(store_,
             [&](Txn& t, Inode&) {
               out->clear();
               if (const int e = need_dir(t, dir)) return e;
               const std::string p = dir_prefix(dir);
               const std::string begin = after.empty() ? p : dentry_key(dir, after) + '\0';
               for (const auto& [k, v] : t.range(begin, prefix_end(p), limit))
                 out->push_back(decode_entry(k.substr(p.size()), v));
               return 0;
             })
      .err;
}

int MetaStore::unlink(uint64_t parent, const std::string& name) {
  if (const int e = check_name(name)) return e;
  return run(store_,
             [&](Txn& t, Inode&) {
               if (const int e = need_dir(t, parent)) return e;
               const auto d = read_entry(t, parent, name);
               if (!d) return ENOENT;
               if (d->type == FileType::Directory) return EISDIR;
               const auto n = read_inode(t, d->id);
               t.clear(dentry_key(parent, name));
               if (n) drop_link(t, *n);
               return 0;
             })
      .err;
}

int MetaStore::rmdir(uint64_t parent, const std::string& name) {
  if (const int e = check_name(name)) return e;
  return run(store_,
             [&](Txn& t, Inode&) {
               if (const int e = need_dir(t, parent)) return e;
               const auto d = read_entry(t, parent, name);
               if (!d) return ENOENT;
               if (d->type != FileType::Directory) return ENOTDIR;
               if (!empty_dir(t, d->id)) return ENOTEMPTY;
               t.clear(dentry_key(parent, name));
               t.clear(inode_key(d->id));
               return 0;
             })
      .err;
}

MetaResult MetaStore::link(uint64_t id, uint64_t parent, const std::string& name) {
  if (const int e = check_name(name)) return MetaResult{e, {}};
  return run(store_, [&](Txn& t, Inode& out) {
    auto n = read_inode(t, id);
    if (!n) return ENOENT;
    if (n->type == FileType::Directory) return EPERM;
    if (const int e = need_dir(t, parent)) return e;
    if (read_entry(t, parent, name)) return EEXIST;
    ++n->nlink;
    n->ctime_ns = now_ns();
    t.set(inode_key(id), encode(*n));
    t.set(dentry_key(parent, name), encode_entry(id, n->type));
    out = *n;
    return 0;
  });
}

MetaResult MetaStore::readlink(uint64_t id) {
  return run(store_, [&](Txn& t, Inode& out) {
    const auto n = read_inode(t, id);
    if (!n) return ENOENT;
    if (n->type != FileType::Symlink) return EINVAL;
    out = *n;
    return 0;
  });
}

MetaResult MetaStore::setattr(uint64_t id, const SetAttr& a) {
  return run(store_, [&](Txn& t, Inode& out) {
    auto n = read_inode(t, id);
    if (!n) return ENOENT;
    if (a.mode) n->mode = *a.mode & 07777;
    if (a.uid) n->uid = *a.uid;
    if (a.gid) n->gid = *a.gid;
    if (a.atime_ns) n->atime_ns = *a.atime_ns;
    if (a.mtime_ns) n->mtime_ns = *a.mtime_ns;
    n->ctime_ns = now_ns();
    t.set(inode_key(id), encode(*n));
    out = *n;
    return 0;
  });
}

MetaResult MetaStore::set_length(uint64_t id, uint64_t length) {
  if (length > max_length) return MetaResult{EFBIG, {}};
  return run(store_, [&](Txn& t, Inode& out) {
    auto n = read_inode(t, id);
    if (!n) return ENOENT;
    if (n->type == FileType::Directory) return EISDIR;
    if (n->type != FileType::File) return EINVAL;
    n->length = length;
    n->mtime_ns = n->ctime_ns = now_ns();
    t.set(inode_key(id), encode(*n));
    out = *n;
    return 0;
  });
}

int MetaStore::rename(uint64_t from_parent, const std::string& from, uint64_t to_parent,
                      const std::string& to, bool noreplace) {
  if (const int e = check_name(from)) return e;
  if (const int e = check_name(to)) return e;
  return run(store_,
             [&](Txn& t, Inode&) {
               if (const int e = need_dir(t, from_parent)) return e;
               if (const int e = need_dir(t, to_parent)) return e;
               const auto src = read_entry(t, from_parent, from);
               if (!src) return ENOENT;
               if (from_parent == to_parent && from == to) return 0;
               const bool is_dir = src->type == FileType::Directory;
               if (is_dir) {
                 // Not into itself: no directory on the way from the destination to the root may
                 // be the one that moves (each step a tracked read, so racing renames conflict).
                 uint64_t cur = to_parent;
                 for (int depth = 0; cur != kRootInode; ++depth) {
                   if (cur == src->id) return EINVAL;
                   const auto d = read_inode(t, cur);
                   if (!d || depth > 100000) return ENOENT;
                   cur = d->parent;
                 }
               }
               const auto dst = read_entry(t, to_parent, to);
               if (dst) {
                 if (noreplace) return EEXIST;
                 if (dst->id == src->id) return 0;  // two names of one file: nothing to do
                 const bool dst_dir = dst->type == FileType::Directory;
                 if (is_dir && !dst_dir) return ENOTDIR;
                 if (!is_dir && dst_dir) return EISDIR;
                 if (dst_dir && !empty_dir(t, dst->id)) return ENOTEMPTY;
                 if (const auto n = read_inode(t, dst->id)) drop_link(t, *n);
               }
               t.clear(dentry_key(from_parent, from));
               t.set(dentry_key(to_parent, to), encode_entry(src->id, src->type));
               if (auto n = read_inode(t, src->id)) {
                 n->ctime_ns = now_ns();
                 if (is_dir) n->parent = to_parent;
                 t.set(inode_key(n->id), encode(*n));
               }
               return 0;
             })
      .err;
}

MetaResult MetaStore::open_session(const WriteSession& s) {
  return run(store_, [&](Txn& t, Inode& out) {
    const auto n = read_inode(t, s.inode);
    if (!n) return ENOENT;
    if (n->type == FileType::Directory) return EISDIR;
    if (n->type != FileType::File) return EINVAL;
    t.set(session_key(s.inode, s.session), session_value(s));
    out = *n;
    return 0;
  });
}

size_t MetaStore::renew_sessions(const std::vector<WriteSession>& sessions, int64_t expires_ns) {
  size_t renewed = 0;
  run(store_, [&](Txn& t, Inode&) {
    renewed = 0;
    for (const WriteSession& s : sessions) {
      const std::string k = session_key(s.inode, s.session);
      const auto v = t.get(k);
      if (!v) continue;
      WriteSession cur = decode_session(k, *v);
      cur.expires_ns = expires_ns;
      t.set(k, session_value(cur));
      ++renewed;
    }
    return 0;
  });
  return renewed;
}

MetaResult MetaStore::settle_length(uint64_t id, uint64_t length) {
  return run(store_, [&](Txn& t, Inode& out) {
    auto n = read_inode(t, id);
    if (!n) return ENOENT;
    if (n->type != FileType::File) return EINVAL;
    n->length = std::max(n->length, std::min(length, max_length));
    n->mtime_ns = n->ctime_ns = now_ns();
    t.set(inode_key(id), encode(*n));
    out = *n;
    return 0;
  });
}

int MetaStore::close_session(uint64_t id, uint64_t session) {
  return run(store_,
             [&](Txn& t, Inode&) {
               t.clear(session_key(id, session));
               return 0;
             })
      .err;
}

std::vector<WriteSession> MetaStore::expired_sessions(int64_t now, size_t limit) {
  std::vector<WriteSession> out;
  run(store_, [&](Txn& t, Inode&) {
    out.clear();
    std::string from = "S";
    // Bounded: a scan of at most 64 pages of sessions per call.
    for (int page = 0; page < 64 && out.size() < limit; ++page) {
      const KeyValues kv = t.range(from, "T", 256);
      for (const auto& [k, v] : kv) {
        if (k.size() != 17 || v.size() != 16) continue;
        const WriteSession s = decode_session(k, v);
        if (s.expires_ns < now && out.size() < limit) out.push_back(s);
      }
      if (kv.size() < 256) break;
      from = kv.back().first + '\0';
    }
    return 0;
  });
  return out;
}

std::vector<Garbage> MetaStore::garbage(size_t limit) {
  std::vector<Garbage> out;
  run(store_, [&](Txn& t, Inode&) {
    out.clear();
    for (const auto& [k, v] : t.range("G", "H", limit)) {
      Garbage g;
      g.inode = decode(from_be64(std::string_view(k).substr(1)), v);
      const std::string sp = session_prefix(g.inode.id);
      g.busy = !t.range(sp, prefix_end(sp), 1).empty();
      out.push_back(std::move(g));
    }
    return 0;
  });
  return out;
}

int MetaStore::garbage_done(uint64_t id) {
  return run(store_,
             [&](Txn& t, Inode&) {
               t.clear(garbage_key(id));
               const std::string sp = session_prefix(id);
               for (const auto& [k, v] : t.range(sp, prefix_end(sp))) t.clear(k);
               return 0;
             })
      .err;
}

}  // namespace ff::fs
