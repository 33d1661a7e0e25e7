// ChunkEngine: keys in the target's store
//   "C" + the chunk id with every byte inverted -> the chunk's record (a forward scan of a file's
//                                                  chunks meets the highest index first)
//   "B" + size class + file (big-endian)        -> that file's allocation bitmap (256 bits)
// A block is marked used in the same batch as the record that first points to it and freed in
// the batch that drops the last pointer, so after a crash the bitmaps and the records agree; a
// block written but not yet committed to a batch is simply free again.
#include "fs/chunk_engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <tuple>

#include "core/core.h"
#include "fs/crc32c.h"

namespace ff::fs {
namespace {

uint32_t block_bytes(int size_class) {
  return kMinBlock << size_class;
}

// The smallest class whose blocks hold n bytes (-1 for none: n = 0).
int class_for(uint64_t n) {
  if (n == 0) return -1;
  for (int c = 0; c < kSizeClasses; ++c)
    if (n <= block_bytes(c)) return c;
  return kSizeClasses;  // too large
}

struct Record {
  uint32_t chain_version = 0;
  uint64_t committed = 0, update = 0;
  uint32_t length = 0, crc = 0;
  BlockPos pos;
  uint32_t p_length = 0, p_crc = 0;  // the pending version (update != committed)
  BlockPos p_pos;
};

template <class T>
void put_raw(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
T get_raw(const std::string& s, size_t& at) {
  FF_CHECK(at + sizeof(T) <= s.size(), "fs: chunk record truncated");
  T v;
  std::memcpy(&v, s.data() + at, sizeof v);
  at += sizeof v;
  return v;
}

std::string encode(const Record& r) {
  std::string s;
  put_raw(s, r.chain_version);
  put_raw(s, r.committed);
  put_raw(s, r.update);
  for (const auto& [len, crc, pos] :
       {std::tuple(r.length, r.crc, r.pos), std::tuple(r.p_length, r.p_crc, r.p_pos)}) {
    put_raw(s, len);
    put_raw(s, crc);
    put_raw(s, pos.size_class);
    put_raw(s, pos.file);
    put_raw(s, pos.block);
  }
  return s;
}

Record decode(const std::string& s) {
  Record r;
  size_t at = 0;
  r.chain_version = get_raw<uint32_t>(s, at);
  r.committed = get_raw<uint64_t>(s, at);
  r.update = get_raw<uint64_t>(s, at);
  for (int v = 0; v < 2; ++v) {
    uint32_t& len = v ? r.p_length : r.length;
    uint32_t& crc = v ? r.p_crc : r.crc;
    BlockPos& pos = v ? r.p_pos : r.pos;
    len = get_raw<uint32_t>(s, at);
    crc = get_raw<uint32_t>(s, at);
    pos.size_class = get_raw<int8_t>(s, at);
    pos.file = get_raw<uint32_t>(s, at);
    pos.block = get_raw<uint32_t>(s, at);
  }
  return r;
}

ChunkMeta to_meta(const ChunkId& id, const Record& r) {
  const bool p = r.update != r.committed;
  return ChunkMeta{id,       r.chain_version,          r.committed,           r.update, r.length,
                   r.crc,    p ? r.p_length : r.length, p ? r.p_crc : r.crc};
}

std::string chunk_key(const ChunkId& id) {
  std::string k = "C";
  for (const uint8_t b : id.bytes) k += char(~b);
  return k;
}

ChunkId id_of_key(const std::string& k) {
  ChunkId id;
  for (size_t i = 0; i < 16; ++i) id.bytes[i] = uint8_t(~uint8_t(k[1 + i]));
  return id;
}

std::string bitmap_key(int size_class, uint32_t file) {
  std::string k = "B";
  k += char(size_class);
  for (int i = 3; i >= 0; --i) k += char(file >> (8 * i));
  return k;
}

}  // namespace

const char* chunk_error_name(ChunkError e) {
  switch (e) {
    case ChunkError::None:
      return "ok";
    case ChunkError::NotFound:
      return "chunk not found";
    case ChunkError::NotCommitted:
      return "chunk has no such pending version";
    case ChunkError::BadRange:
      return "offset or length out of range";
    case ChunkError::NoSpace:
      return "target full";
    case ChunkError::ChecksumMismatch:
      return "checksum mismatch";
    case ChunkError::BadVersion:
      return "unexpected chunk version";
  }
  return "unknown";
}

struct ChunkEngine::Impl {
  std::string dir;
  uint64_t capacity = 0, used = 0;
  std::unique_ptr<KvEngine> kv;
  mutable std::mutex mu;
  std::map<std::pair<int, uint32_t>, std::array<uint64_t, kBlocksPerFile / 64>> bitmaps;
  mutable std::map<std::pair<int, uint32_t>, int> fds;

  int fd(int size_class, uint32_t file) const {
    const auto it = fds.find({size_class, file});
    if (it != fds.end()) return it->second;
    const std::string path =
        fmt::format("{}/data/{}K.{}", dir, block_bytes(size_class) >> 10, file);
    const int f = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    FF_CHECK(f >= 0, "{}: cannot open: {}", path, std::strerror(errno));
    fds[{size_class, file}] = f;
    return f;
  }

  bool used_bit(const BlockPos& p) const {
    const auto it = bitmaps.find({p.size_class, p.file});
    return it != bitmaps.end() && (it->second[p.block / 64] >> (p.block % 64) & 1);
  }
  void set_bit(const BlockPos& p, bool on) {
    auto& words = bitmaps[{p.size_class, p.file}];
    const uint64_t bit = uint64_t(1) << (p.block % 64);
    if (on) {
      words[p.block / 64] |= bit;
      used += block_bytes(p.size_class);
    } else {
      words[p.block / 64] &= ~bit;
      used -= block_bytes(p.size_class);
    }
  }
  void stage_bitmap(KvBatch& b, const BlockPos& p) const {
    const auto& words = bitmaps.at({p.size_class, p.file});
    b.put(bitmap_key(p.size_class, p.file),
          std::string(reinterpret_cast<const char*>(words.data()), sizeof words));
  }

  // A free block of class c, marked used in memory (the caller stages its bitmap).
  std::optional<BlockPos> allocate(int c) {
    if (capacity && used + block_bytes(c) > capacity) return std::nullopt;
    for (uint32_t file = 0;; ++file) {
      for (uint32_t blk = 0; blk < kBlocksPerFile; ++blk) {
        const BlockPos p{int8_t(c), file, blk};
        if (!used_bit(p)) {
          set_bit(p, true);
          return p;
        }
      }
    }
  }

  void write_block(const BlockPos& p, std::string_view data) const {
    const int f = fd(p.size_class, p.file);
    const off_t at = off_t(p.block) * off_t(block_bytes(p.size_class));
    for (size_t done = 0; done < data.size();) {
      const ssize_t n = ::pwrite(f, data.data() + done, data.size() - done, at + off_t(done));
      FF_CHECK(n > 0, "{}: write failed: {}", dir, std::strerror(errno));
      done += size_t(n);
    }
    FF_CHECK(::fdatasync(f) == 0, "{}: fdatasync failed: {}", dir, std::strerror(errno));
  }

  std::string read_block(const BlockPos& p, uint32_t length) const {
    std::string out(length, '\0');
    if (length == 0) return out;
    const int f = fd(p.size_class, p.file);
    const off_t at = off_t(p.block) * off_t(block_bytes(p.size_class));
    for (size_t done = 0; done < length;) {
      const ssize_t n = ::pread(f, out.data() + done, length - done, at + off_t(done));
      FF_CHECK(n > 0, "{}: read failed (short block file): {}", dir,
               n == 0 ? "end of file" : std::strerror(errno));
      done += size_t(n);
    }
    return out;
  }

  std::optional<Record> load(const ChunkId& id) const {
    const auto v = kv->get(chunk_key(id));
    if (!v) return std::nullopt;
    return decode(*v);
  }

  // The new bytes into a fresh block; the batch gets its bitmap. nullopt: no space.
  std::optional<BlockPos> store(const std::string& bytes, KvBatch& batch) {
    const int c = class_for(bytes.size());
    if (c < 0) return BlockPos{};
    const auto p = allocate(c);
    if (!p) return std::nullopt;
    try {
      write_block(*p, bytes);
    } catch (...) {
      set_bit(*p, false);
      throw;
    }
    stage_bitmap(batch, *p);
    return p;
  }
  void release(const BlockPos& p, KvBatch& batch) {
    if (p.size_class < 0) return;
    set_bit(p, false);
    stage_bitmap(batch, p);
  }
};

ChunkEngine::ChunkEngine(const std::string& dir, uint64_t capacity_bytes)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = dir;
  m.capacity = capacity_bytes;
  std::error_code ec;
  std::filesystem::create_directories(dir + "/data", ec);
  FF_CHECK(!ec, "{}: cannot create the target directory: {}", dir, ec.message());
  m.kv = open_rocksdb_kv(dir + "/meta");
  for (const auto& [k, v] : m.kv->scan("B", prefix_end("B"))) {
    FF_CHECK(k.size() == 6 && v.size() == kBlocksPerFile / 8, "{}: bad bitmap record", dir);
    const int c = int8_t(k[1]);
    const uint32_t file = uint32_t(uint8_t(k[2])) << 24 | uint32_t(uint8_t(k[3])) << 16 |
                          uint32_t(uint8_t(k[4])) << 8 | uint8_t(k[5]);
    auto& words = m.bitmaps[{c, file}];
    std::memcpy(words.data(), v.data(), v.size());
    for (const uint64_t w : words) m.used += uint64_t(__builtin_popcountll(w)) * block_bytes(c);
  }
}

ChunkEngine::~ChunkEngine() {
  for (const auto& [key, f] : impl_->fds) ::close(f);
}

std::optional<ChunkMeta> ChunkEngine::meta(const ChunkId& id) const {
  std::lock_guard lk(impl_->mu);
  const auto r = impl_->load(id);
  if (!r) return std::nullopt;
  return to_meta(id, *r);
}

std::vector<ChunkMeta> ChunkEngine::all_metas() const {
  std::lock_guard lk(impl_->mu);
  std::vector<ChunkMeta> out;
  for (const auto& [k, v] : impl_->kv->scan("C", prefix_end("C"))) {
    const Record r = decode(v);
    out.push_back(to_meta(id_of_key(k), r));
  }
  std::reverse(out.begin(), out.end());  // keys are inverted ids: descending
  return out;
}

std::optional<ChunkMeta> ChunkEngine::last_chunk(uint64_t inode) const {
  std::lock_guard lk(impl_->mu);
  const ChunkId first = ChunkId::of(inode, ~uint64_t(0));
  const std::string begin = chunk_key(first);
  const std::string end = chunk_key(ChunkId::of(inode, 0));
  const auto hits = impl_->kv->scan(begin, end + '\0', 1);
  if (hits.empty()) return std::nullopt;
  const Record r = decode(hits[0].second);
  return to_meta(id_of_key(hits[0].first), r);
}

ChunkError ChunkEngine::read(const ChunkId& id, uint32_t offset, uint32_t length, std::string* out,
                             bool pending, ChunkMeta* meta) const {
  std::lock_guard lk(impl_->mu);
  const auto r = impl_->load(id);
  if (r && meta) *meta = to_meta(id, *r);
  if (!r || (!pending && r->committed == 0)) return ChunkError::NotFound;
  if (pending && r->update == r->committed) return ChunkError::NotCommitted;
  const uint32_t len = pending ? r->p_length : r->length;
  const std::string all = impl_->read_block(pending ? r->p_pos : r->pos, len);
  if (crc32c(all.data(), all.size()) != (pending ? r->p_crc : r->crc))
    return ChunkError::ChecksumMismatch;
  if (offset > len) return ChunkError::BadRange;
  *out = all.substr(offset, std::min<uint64_t>(length, len - offset));
  return ChunkError::None;
}

ChunkError ChunkEngine::write(const ChunkId& id, uint32_t offset, std::string_view data,
                              uint32_t chunk_size, uint32_t chain_version, uint64_t update_version,
                              uint32_t crc) {
  if (chunk_size == 0 || chunk_size > block_bytes(kSizeClasses - 1) ||
      uint64_t(offset) + data.size() > chunk_size)
    return ChunkError::BadRange;
  return stage(id, chain_version, update_version, crc, [&](std::string& bytes) {
    if (bytes.size() < offset + data.size()) bytes.resize(offset + data.size(), '\0');
    std::memcpy(bytes.data() + offset, data.data(), data.size());
  });
}

ChunkError ChunkEngine::truncate(const ChunkId& id, uint32_t length, uint32_t chunk_size,
                                 uint32_t chain_version, uint64_t update_version, uint32_t crc) {
  if (chunk_size == 0 || chunk_size > block_bytes(kSizeClasses - 1) || length > chunk_size)
    return ChunkError::BadRange;
  return stage(id, chain_version, update_version, crc,
                      [&](std::string& bytes) { bytes.resize(length, '\0'); });
}

ChunkError ChunkEngine::stage(const ChunkId& id, uint32_t chain_version, uint64_t update_version,
                              uint32_t crc, const std::function<void(std::string&)>& edit) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  Record r = m.load(id).value_or(Record{});
  if (update_version != r.committed + 1) return ChunkError::BadVersion;
  std::string bytes;
  if (r.committed > 0) {
    bytes = m.read_block(r.pos, r.length);
    if (crc32c(bytes.data(), bytes.size()) != r.crc) return ChunkError::ChecksumMismatch;
  }
  edit(bytes);
  const uint32_t new_crc = crc32c(bytes.data(), bytes.size());
  if (crc && crc != new_crc) return ChunkError::ChecksumMismatch;
  KvBatch batch;
  const auto pos = m.store(bytes, batch);
  if (!pos) return ChunkError::NoSpace;
  if (r.update != r.committed) m.release(r.p_pos, batch);  // a retried forward replaces it
  r.chain_version = chain_version;
  r.update = update_version;
  r.p_length = uint32_t(bytes.size());
  r.p_crc = new_crc;
  r.p_pos = *pos;
  batch.put(chunk_key(id), encode(r));
  m.kv->write(batch);
  return ChunkError::None;
}

ChunkError ChunkEngine::commit(const ChunkId& id, uint64_t update_version) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  auto r = m.load(id);
  if (!r) return ChunkError::NotFound;
  if (r->committed == update_version) return ChunkError::None;  // committed already (a retry)
  if (r->update != update_version || r->update == r->committed) return ChunkError::NotCommitted;
  KvBatch batch;
  m.release(r->pos, batch);
  r->committed = update_version;
  r->length = r->p_length;
  r->crc = r->p_crc;
  r->pos = r->p_pos;
  r->p_pos = BlockPos{};
  batch.put(chunk_key(id), encode(*r));
  m.kv->write(batch);
  return ChunkError::None;
}

ChunkError ChunkEngine::abort(const ChunkId& id, uint64_t update_version) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  auto r = m.load(id);
  if (!r || r->update == r->committed || r->update != update_version) return ChunkError::None;
  KvBatch batch;
  m.release(r->p_pos, batch);
  r->update = r->committed;
  r->p_pos = BlockPos{};
  r->p_length = r->p_crc = 0;
  if (r->committed == 0)
    batch.erase(chunk_key(id));  // a chunk whose first write failed does not exist
  else
    batch.put(chunk_key(id), encode(*r));
  m.kv->write(batch);
  return ChunkError::None;
}

ChunkError ChunkEngine::replace(const ChunkId& id, std::string_view data, uint32_t chain_version,
                                uint64_t version) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  if (data.size() > block_bytes(kSizeClasses - 1) || version == 0) return ChunkError::BadRange;
  Record r = m.load(id).value_or(Record{});
  KvBatch batch;
  const auto pos = m.store(std::string(data), batch);
  if (!pos) return ChunkError::NoSpace;
  if (r.committed > 0) m.release(r.pos, batch);
  if (r.update != r.committed) m.release(r.p_pos, batch);
  r = Record{};
  r.chain_version = chain_version;
  r.committed = r.update = version;
  r.length = uint32_t(data.size());
  r.crc = crc32c(data.data(), data.size());
  r.pos = *pos;
  batch.put(chunk_key(id), encode(r));
  m.kv->write(batch);
  return ChunkError::None;
}

ChunkError ChunkEngine::remove(const ChunkId& id) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  const auto r = m.load(id);
  if (!r) return ChunkError::NotFound;
  KvBatch batch;
  if (r->committed > 0) m.release(r->pos, batch);
  if (r->update != r->committed) m.release(r->p_pos, batch);
  batch.erase(chunk_key(id));
  m.kv->write(batch);
  return ChunkError::None;
}

uint64_t ChunkEngine::used_bytes() const {
  std::lock_guard lk(impl_->mu);
  return impl_->used;
}

}  // namespace ff::fs
