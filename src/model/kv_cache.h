// The latent KV cache of MLA, in FlashMLA's paged layout.
//
// Per layer: kcache [num_pages, kPageSize = 64, h_kv = 1, latent_dim] where a token's row is
// [ kv_a_layernorm(c_kv) (kv_lora_rank values) | RoPE(k_pe) (qk_rope_head_dim values) ]
// (576 = 512 + 64 for DeepSeek-V3). Pages are shared by all layers: a sequence's block table maps
// its logical page j (tokens [64j, 64j+64)) to a physical page id used in every layer.
// Element type: F32 (exact, for tests) or BF16 (FlashMLA's, half the memory traffic).
#pragma once
#include <cstdint>
#include <vector>

#include "core/core.h"
#include "model/config.h"

namespace ff {

constexpr int64_t kPageSize = 64;

// One sequence's view of the cache.
struct KVSequence {
  std::vector<int32_t> block_table;  // physical page of each logical page
  int64_t length = 0;                // tokens whose latents are in the cache
};

class KVCache {
 public:
  KVCache(const ModelConfig& c, int64_t num_pages, DType dtype);

  DType dtype() const { return dtype_; }
  int latent_dim() const { return latent_dim_; }
  int num_layers() const { return num_layers_; }
  int64_t num_pages() const { return num_pages_; }
  int64_t free_pages() const { return int64_t(free_.size()); }

  // Makes room for `new_length` tokens, allocating pages; throws ff::Error when the cache is
  // full (the sequence is left unchanged).
  void reserve(KVSequence& seq, int64_t new_length);
  // Returns the sequence's pages to the free list and resets it.
  void release(KVSequence& seq);

  // Page-level allocation for a caller that manages block tables itself (the serving engine's
  // page manager, which shares pages between sequences). allocate_page() returns a free page id,
  // or -1 when none is free; free_page() returns one (it must not be in any sequence's table any
  // more, and never be freed twice).
  int32_t allocate_page();
  void free_page(int32_t page);

  // Row of token `pos` of a sequence in `layer` (the page must be reserved).
  void* row(int layer, const KVSequence& seq, int64_t pos) const;
  // Base of a layer's kcache tensor [num_pages, 64, 1, latent_dim].
  void* layer_base(int layer) const;
  size_t row_bytes() const { return size_t(latent_dim_) * dtype_size(dtype_); }

  // Writes / reads one token row as fp32.
  void write_row(int layer, const KVSequence& seq, int64_t pos, const float* src);
  void read_row(int layer, const KVSequence& seq, int64_t pos, float* dst) const;

 private:
  DType dtype_;
  int num_layers_;
  int latent_dim_;
  int64_t num_pages_;
  std::vector<uint8_t> storage_;
  std::vector<int32_t> free_;
};

}  // namespace ff
