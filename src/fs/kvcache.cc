// KvCache: blocks as files (a 16-byte header: "FFKV", CRC32C and length of the data, then the
// data), an in-memory index of the blocks (inode and size) in recency order, eviction from its
// front. Blocks are published by a rename that refuses to replace, so two stores putting the
// same key keep one block.
#include "fs/kvcache.h"

#include <algorithm>
#include <cstring>
#include <future>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include "core/core.h"
#include "fs/crc32c.h"

namespace ff::fs {
namespace {

constexpr size_t kHeader = 16;
constexpr char kMagic[4] = {'F', 'F', 'K', 'V'};
constexpr const char* kTempPrefix = ".tmp-";

bool valid_name(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max || s[0] == '.') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 33);
}

}  // namespace

struct KvCache::Impl {
  struct Block {
    Inode inode;  // length: header + data
    std::list<std::string>::iterator lru;
  };

  FsClient& fs;
  KvCacheOptions opt;
  uint64_t root = 0;
  mutable std::mutex mu;
  std::map<std::string, uint64_t> dirs;           // namespace -> its directory
  std::unordered_map<std::string, Block> blocks;  // "ns/key"
  std::list<std::string> lru;                     // least recently used first
  KvCacheStats st;
  std::mt19937_64 rng{std::random_device{}()};

  Impl(FsClient& f, const KvCacheOptions& o) : fs(f), opt(o) {}

  // The directory at `path`, made when missing.
  int make_dirs(const std::string& path, uint64_t* id) {
    uint64_t cur = kRootInode;
    size_t i = 0;
    while (i < path.size()) {
      const size_t j = std::min(path.find('/', i), path.size());
      const std::string name = path.substr(i, j - i);
      i = j + 1;
      if (name.empty()) continue;
      MetaResult r = fs.mkdir(cur, name, 0755);
      if (r.err == EEXIST) r = fs.lookup(cur, name);
      if (!r.ok()) return r.err;
      if (r.inode.type != FileType::Directory) return ENOTDIR;
      cur = r.inode.id;
    }
    *id = cur;
    return 0;
  }

  // The namespace's directory; `make`: created when missing.
  int dir_of(const std::string& ns, bool make, uint64_t* id) {
    {
      std::lock_guard lk(mu);
      const auto it = dirs.find(ns);
      if (it != dirs.end()) {
        *id = it->second;
        return 0;
      }
    }
    MetaResult r = make ? fs.mkdir(root, ns, 0755) : fs.lookup(root, ns);
    if (make && r.err == EEXIST) r = fs.lookup(root, ns);
    if (!r.ok()) return r.err;
    if (r.inode.type != FileType::Directory) return ENOTDIR;
    std::lock_guard lk(mu);
    dirs[ns] = *id = r.inode.id;
    return 0;
  }

  int list(uint64_t dir, std::vector<DirEntry>* out) {
    out->clear();
    std::string after;
    for (;;) {
      std::vector<DirEntry> page;
      if (const int e = fs.readdir(dir, after, 1024, &page)) return e;
      out->insert(out->end(), page.begin(), page.end());
      if (page.size() < 1024) return 0;
      after = page.back().name;
    }
  }

  void load() {
    std::vector<DirEntry> nss;
    FF_CHECK(list(root, &nss) == 0, "kvcache: cannot list {}", opt.root);
    std::vector<std::pair<int64_t, std::pair<std::string, Inode>>> found;
    for (const DirEntry& n : nss) {
      if (n.type != FileType::Directory || !valid_name(n.name, 64)) continue;
      dirs[n.name] = n.id;
      std::vector<DirEntry> es;
      if (list(n.id, &es) != 0) continue;
      for (const DirEntry& e : es) {
        if (e.type != FileType::File || !valid_name(e.name, 128)) continue;
        const MetaResult r = fs.stat(e.id);
        if (r.ok()) found.push_back({r.inode.mtime_ns, {n.name + "/" + e.name, r.inode}});
      }
    }
    std::sort(found.begin(), found.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [t, kv] : found) insert_locked(kv.first, kv.second);
  }

  void insert_locked(const std::string& id, const Inode& n) {
    if (blocks.count(id)) return;
    lru.push_back(id);
    blocks[id] = Block{n, std::prev(lru.end())};
    ++st.blocks;
    st.bytes += n.length;
  }
  void erase_locked(const std::string& id) {
    const auto it = blocks.find(id);
    if (it == blocks.end()) return;
    st.bytes -= it->second.inode.length;
    --st.blocks;
    lru.erase(it->second.lru);
    blocks.erase(it);
  }

  // Removes least recently used blocks until the bytes fit the capacity.
  void evict() {
    std::vector<std::string> victims;
    {
      std::lock_guard lk(mu);
      while (opt.capacity && st.bytes > opt.capacity && !lru.empty()) {
        victims.push_back(lru.front());
        erase_locked(lru.front());
        ++st.evictions;
      }
    }
    for (const std::string& v : victims) unlink_block(v);
  }

  void unlink_block(const std::string& id) {
    const size_t slash = id.find('/');
    uint64_t dir = 0;
    if (dir_of(id.substr(0, slash), false, &dir) == 0) fs.unlink(dir, id.substr(slash + 1));
  }

  int get(const std::string& ns, const std::string& key, std::string* out) {
    if (!valid_name(ns, 64) || !valid_name(key, 128)) return EINVAL;
    const std::string id = ns + "/" + key;
    Inode n;
    bool known = false;
    {
      std::lock_guard lk(mu);
      const auto it = blocks.find(id);
      if (it != blocks.end()) {
        n = it->second.inode;
        lru.splice(lru.end(), lru, it->second.lru);
        known = true;
      }
    }
    if (!known) {  // another store may have put it
      uint64_t dir = 0;
      MetaResult r{ENOENT, {}};
      if (dir_of(ns, false, &dir) == 0) r = fs.lookup(dir, key);
      if (!r.ok() || r.inode.type != FileType::File) {
        std::lock_guard lk(mu);
        ++st.misses;
        return ENOENT;
      }
      n = r.inode;
    }
    std::string buf(n.length, '\0');
    const int64_t got = n.length < kHeader ? -EIO : fs.pread_inode(n, buf.data(), buf.size(), 0);
    uint32_t crc = 0;
    uint64_t len = 0;
    if (got == int64_t(buf.size())) {
      std::memcpy(&crc, buf.data() + 4, 4);
      std::memcpy(&len, buf.data() + 8, 8);
    }
    const bool whole = got == int64_t(buf.size()) && std::memcmp(buf.data(), kMagic, 4) == 0 &&
                       len == n.length - kHeader &&
                       crc == crc32c(buf.data() + kHeader, buf.size() - kHeader);
    if (!whole) {
      // Gone under us (evicted or removed elsewhere: ENOENT), or damaged: forget it, drop it.
      std::lock_guard lk(mu);
      erase_locked(id);
      ++st.misses;
      if (got != -ENOENT) ++st.corrupt;
    } else {
      std::lock_guard lk(mu);
      if (!known) insert_locked(id, n);
      ++st.hits;
    }
    if (!whole) {
      if (got != -ENOENT) unlink_block(id);
      return ENOENT;
    }
    buf.erase(0, kHeader);
    *out = std::move(buf);
    if (!known) evict();
    return 0;
  }

  int put(const std::string& ns, const std::string& key, std::string_view data) {
    if (!valid_name(ns, 64) || !valid_name(key, 128)) return EINVAL;
    if (opt.capacity && data.size() + kHeader > opt.capacity) return EFBIG;
    const std::string id = ns + "/" + key;
    {
      std::lock_guard lk(mu);
      const auto it = blocks.find(id);
      if (it != blocks.end()) {
        lru.splice(lru.end(), lru, it->second.lru);
        return 0;
      }
    }
    uint64_t dir = 0;
    if (const int e = dir_of(ns, true, &dir)) return e;
    std::string tmp;
    {
      std::lock_guard lk(mu);
      tmp = fmt::format("{}{:016x}", kTempPrefix, rng());
    }
    uint64_t fh = 0;
    Inode n;
    if (const int e = fs.create(dir, tmp, 0644, {}, &fh, &n)) return e;
    char header[kHeader];
    std::memcpy(header, kMagic, 4);
    const uint32_t crc = crc32c(data.data(), data.size());
    const uint64_t len = data.size();
    std::memcpy(header + 4, &crc, 4);
    std::memcpy(header + 8, &len, 8);
    int64_t w = fs.pwrite(fh, header, kHeader, 0);
    if (w == int64_t(kHeader) && !data.empty())
      w = fs.pwrite(fh, data.data(), data.size(), kHeader);
    const int closed = fs.close(fh);
    int e = w < 0 ? int(-w) : w != int64_t(data.empty() ? kHeader : data.size()) ? EIO : closed;
    if (e == 0) {
      e = fs.rename(dir, tmp, dir, key, /*noreplace=*/true);
      if (e == EEXIST) {  // another store put it first: theirs stays
        fs.unlink(dir, tmp);
        const MetaResult r = fs.lookup(dir, key);
        if (!r.ok()) return r.err;
        n = r.inode;
        e = 0;
      }
    }
    if (e) {
      fs.unlink(dir, tmp);
      return e;
    }
    n.length = kHeader + data.size();
    {
      std::lock_guard lk(mu);
      insert_locked(id, n);
      ++st.puts;
    }
    evict();
    return 0;
  }
};

KvCache::KvCache(FsClient& fs, const KvCacheOptions& options)
    : impl_(std::make_shared<Impl>(fs, options)) {
  const int e = impl_->make_dirs(options.root, &impl_->root);
  FF_CHECK(e == 0, "kvcache: cannot use {}: {}", options.root, std::strerror(e));
  impl_->load();
  impl_->evict();
}

std::string KvCache::content_key(std::string_view data) {
  uint64_t a = 0x9e3779b97f4a7c15ull ^ data.size(), b = 0x243f6a8885a308d3ull + data.size();
  size_t i = 0;
  for (; i + 8 <= data.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, data.data() + i, 8);
    a = mix(a ^ w) * 0x100000001b3ull;
    b = mix(b + w * 0xc6a4a7935bd1e995ull) ^ (b >> 29);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, data.data() + i, data.size() - i);
  a = mix(a ^ tail ^ 0xa5);
  b = mix(b + tail + 0x5a);
  return fmt::format("{:016x}{:016x}", mix(a ^ (b >> 1)), mix(b ^ (a << 1)));
}

int KvCache::put(const std::string& ns, const std::string& key, std::string_view data) {
  return impl_->put(ns, key, data);
}

int KvCache::get(const std::string& ns, const std::string& key, std::string* out) {
  return impl_->get(ns, key, out);
}

std::vector<int> KvCache::batch_get(const std::string& ns, const std::vector<std::string>& keys,
                                    std::vector<std::string>* out) {
  out->assign(keys.size(), {});
  std::vector<int> codes(keys.size(), 0);
  const size_t par = std::max(1u, impl_->opt.parallel);
  for (size_t b = 0; b < keys.size(); b += par) {
    const size_t e = std::min(keys.size(), b + par);
    std::vector<std::future<int>> fut;
    for (size_t i = b; i < e; ++i)
      fut.push_back(std::async(
          std::launch::async, [this, &ns, &keys, out, i] { return get(ns, keys[i], &(*out)[i]); }));
    for (size_t i = b; i < e; ++i) codes[i] = fut[i - b].get();
  }
  return codes;
}

bool KvCache::contains(const std::string& ns, const std::string& key) {
  if (!valid_name(ns, 64) || !valid_name(key, 128)) return false;
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->blocks.count(ns + "/" + key)) return true;
  }
  uint64_t dir = 0;
  return impl_->dir_of(ns, false, &dir) == 0 && impl_->fs.lookup(dir, key).ok();
}

int KvCache::remove(const std::string& ns, const std::string& key) {
  if (!valid_name(ns, 64) || !valid_name(key, 128)) return EINVAL;
  {
    std::lock_guard lk(impl_->mu);
    impl_->erase_locked(ns + "/" + key);
  }
  uint64_t dir = 0;
  if (const int e = impl_->dir_of(ns, false, &dir)) return e;
  return impl_->fs.unlink(dir, key);
}

KvCacheStats KvCache::stats() const {
  std::lock_guard lk(impl_->mu);
  return impl_->st;
}

}  // namespace ff::fs
