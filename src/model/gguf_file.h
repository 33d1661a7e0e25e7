// GGUF files (llama.cpp's single-file format), memory-mapped. The container only: metadata and
// tensor directory; the block formats of the tensor data are gemm's (gemm/gguf_quant.h).
//
// File layout, all little-endian (gguf-py's GGUFWriter / GGUFReader, ggml's gguf.cpp):
//   u32 magic "GGUF" | u32 version (2 or 3) | u64 tensor count | u64 metadata count
//   metadata count x { string key | u32 value type | value }
//   tensor count x { string name | u32 n_dims | u64 dims[n_dims] | u32 type | u64 offset }
//   zero padding up to a multiple of `general.alignment` (a u32, default 32): the data section
//   tensor data, each at data section + offset (offset a multiple of the alignment)
// A string is u64 byte length + UTF-8 bytes (no terminator). A value is one of the scalar types
// below, a string, or an array: u32 element type | u64 count | count elements (arrays of arrays
// are not accepted here). dims[0] is the innermost, contiguous dimension: a tensor stored with dims
// [K, N] is N rows of K elements, i.e. numpy / HF shape [N, K] (the reverse of dims).
// Tensors point into the mapping; nothing is copied.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "core/core.h"
#include "gemm/gemm.h"

namespace ff {

// The value type ids GGUF files store (gguf-py's GGUFValueType).
enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// "u32", "string", "array", ...; "unknown(<id>)" for any other id.
std::string gguf_value_type_name(GgufValueType t);

// One metadata value. Integers are widened to int64 (signed types) or uint64 (unsigned types),
// floats to double; `type` keeps the type the file stored. A scalar has one item, an array
// `count` items of `elem_type`.
struct GgufValue {
  using Item = std::variant<int64_t, uint64_t, double, bool, std::string>;
  GgufValueType type = GgufValueType::U8;
  GgufValueType elem_type = GgufValueType::U8;  // ARRAY only
  std::vector<Item> items;

  bool is_array() const { return type == GgufValueType::ARRAY; }
  // The type of the items: elem_type for an array, else type.
  GgufValueType item_type() const { return is_array() ? elem_type : type; }
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> dims;  // as stored: dims[0] innermost (see the layout above), 1..4 of them
  gemm::GgufType type = gemm::GgufType::F32;
  uint64_t offset = 0;  // absolute byte offset in the file (data section + the stored offset)
  uint64_t nbytes = 0;  // row_bytes(type, dims[0]) x dims[1] x ...
  const uint8_t* data = nullptr;

  int64_t numel() const;
  std::string dims_str() const;  // "[64, 4]"
};

class GgufFile {
 public:
  // Maps and validates the whole header: magic, version, counts bounded by the file size, every
  // string, value type, tensor type, dims, offset (aligned, inside the file, not overlapping)
  // and name (no duplicate keys or tensors). Throws one-line ff::Error naming the file and the
  // key or tensor.
  explicit GgufFile(const std::string& path);
  // The same parse and checks over a GGUF image already in memory (the fuzzer's input); `name`
  // stands for the path in messages. Nothing is copied: tensors point into `bytes`, which must
  // outlive the GgufFile.
  explicit GgufFile(std::span<const uint8_t> bytes, std::string name = "<memory>");

  const std::string& path() const { return name_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section
  uint64_t file_size() const { return size_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;  // nullptr if absent
  // Typed getters: ff::Error "FILE: missing metadata key KEY", or "FILE: metadata key KEY is
  // <type>, expected <what>". Integer getters accept any integer type whose value fits.
  uint64_t get_u64(const std::string& key) const;
  int64_t get_i64(const std::string& key) const;
  uint32_t get_u32(const std::string& key) const;
  int32_t get_i32(const std::string& key) const;
  double get_f64(const std::string& key) const;  // f32 or f64
  float get_f32(const std::string& key) const;   // f32 or f64 (rounded)
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_i64_array(const std::string& key) const;  // any integer elements
  std::vector<double> get_f64_array(const std::string& key) const;   // f32 or f64 elements

  // In file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;  // nullptr if absent
  // The tensor, or ff::Error "FILE: missing tensor NAME".
  const GgufTensor& get_tensor(const std::string& name) const;

 private:
  const GgufValue& get(const std::string& key, GgufValueType want, const char* what) const;
  const GgufValue& get_scalar(const std::string& key) const;
  void parse();  // the header of data_[0, size_), into the members below

  MappedFile file_;  // empty for an in-memory image
  std::string name_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace ff
