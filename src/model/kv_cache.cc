#include "model/kv_cache.h"

namespace ff {

KVCache::KVCache(const ModelConfig& c, int64_t num_pages, DType dtype)
    : dtype_(dtype),
      num_layers_(c.num_hidden_layers),
      latent_dim_(c.latent_dim()),
      num_pages_(num_pages) {
  FF_CHECK(dtype == DType::F32 || dtype == DType::BF16,
           "kv cache: dtype {} not supported (F32 or BF16)", dtype_name(dtype));
  FF_CHECK(num_pages > 0, "kv cache: needs at least one page, got {}", num_pages);
  storage_.resize(size_t(num_layers_) * size_t(num_pages) * kPageSize * row_bytes());
  free_.reserve(size_t(num_pages));
  for (int64_t p = num_pages - 1; p >= 0; --p) free_.push_back(int32_t(p));
}

void KVCache::reserve(KVSequence& seq, int64_t new_length) {
  const int64_t need = (new_length + kPageSize - 1) / kPageSize - int64_t(seq.block_table.size());
  if (need <= 0) return;
  FF_CHECK(need <= free_pages(), "kv cache full: {} more pages of {} tokens needed, {} free of {}",
           need, kPageSize, free_pages(), num_pages_);
  for (int64_t i = 0; i < need; ++i) {
    seq.block_table.push_back(free_.back());
    free_.pop_back();
  }
}

void KVCache::release(KVSequence& seq) {
  for (int32_t p : seq.block_table) free_.push_back(p);
  seq.block_table.clear();
  seq.length = 0;
}

int32_t KVCache::allocate_page() {
  if (free_.empty()) return -1;
  const int32_t p = free_.back();
  free_.pop_back();
  return p;
}

void KVCache::free_page(int32_t page) {
  FF_CHECK(page >= 0 && page < num_pages_, "kv cache: page {} out of range [0, {})", page,
           num_pages_);
  FF_CHECK(int64_t(free_.size()) < num_pages_, "kv cache: page {} freed while every page is free",
           page);
  free_.push_back(page);
}

void* KVCache::layer_base(int layer) const {
  return const_cast<uint8_t*>(storage_.data()) +
         size_t(layer) * size_t(num_pages_) * kPageSize * row_bytes();
}

void* KVCache::row(int layer, const KVSequence& seq, int64_t pos) const {
  const int32_t page = seq.block_table[size_t(pos / kPageSize)];
  return static_cast<uint8_t*>(layer_base(layer)) +
         (size_t(page) * kPageSize + size_t(pos % kPageSize)) * row_bytes();
}

void KVCache::write_row(int layer, const KVSequence& seq, int64_t pos, const float* src) {
  void* dst = row(layer, seq, pos);
  if (dtype_ == DType::F32) {
    std::memcpy(dst, src, row_bytes());
  } else {
    convert_f32_to_bf16(src, static_cast<uint16_t*>(dst), size_t(latent_dim_));
  }
}

void KVCache::read_row(int layer, const KVSequence& seq, int64_t pos, float* dst) const {
  const void* src = row(layer, seq, pos);
  if (dtype_ == DType::F32) {
    std::memcpy(dst, src, row_bytes());
  } else {
    convert_bf16_to_f32(static_cast<const uint16_t*>(src), dst, size_t(latent_dim_));
  }
}

}  // namespace ff
