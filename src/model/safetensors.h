// Safetensors checkpoints, memory-mapped.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// then the data region; offsets are relative to its start. A checkpoint directory holds
// `model.safetensors`, or shards listed in `model.safetensors.index.json` ("weight_map":
// tensor name -> shard file). Tensors point into the mappings; nothing is copied.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/core.h"
#include "gemm/gguf_quant.h"

namespace ff {

struct TensorInfo {
  std::string name;          // as the file names it (a GGUF tensor keeps its GGUF name)
  DType dtype = DType::F32;  // U8 for a GGUF block-quantized tensor (see gguf_type)
  // Set for a tensor of a GGUF file whose type is block-quantized (Q8_0, Q4_K, ...): `data`
  // holds rows of row_bytes(type, shape.back()) bytes.
  std::optional<gemm::GgufType> gguf_type;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  const std::string* file = nullptr;  // the shard it lives in, for error messages

  int64_t numel() const;
  std::string shape_str() const;
};

class SafetensorsFile {
 public:
  // Maps and validates the file (header JSON, dtypes, offsets inside the file, sizes that match
  // shape x dtype). Throws ff::Error naming the file and tensor.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;

 private:
  MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
};

class Checkpoint {
 public:
  // Opens an HF checkpoint directory (single file or index + shards).
  static Checkpoint open(const std::string& dir);
  // Opens one or more safetensors files directly.
  static Checkpoint open_files(const std::vector<std::string>& paths);
  // A checkpoint over tensors another reader has mapped (a GGUF file, with HF names as keys):
  // `owner` keeps their data (and the strings their `file` fields point to) alive.
  // `file_name(key)`, when given, is the name the file uses for a tensor key (in messages about
  // missing tensors).
  static Checkpoint from_tensors(std::string source,
                                 std::vector<std::pair<std::string, TensorInfo>> tensors,
                                 std::shared_ptr<const void> owner,
                                 std::function<std::string(const std::string&)> file_name = {});

  const std::string& dir() const { return dir_; }
  const TensorInfo* find(const std::string& name) const;
  // The tensor, or ff::Error "DIR: missing tensor NAME".
  const TensorInfo& get(const std::string& name) const;
  // get() plus a shape check: "FILE: tensor NAME has shape [a, b], expected [c, d]".
  const TensorInfo& get(const std::string& name, const std::vector<int64_t>& shape) const;
  size_t num_tensors() const { return index_.size(); }
  size_t total_bytes() const;
  // Faults in the mapped pages of every tensor (ff::prefault), across the thread pool, when they
  // fit in 80% of the available memory; returns the bytes faulted in (0 when skipped). Saves the
  // first forward pass a page fault per 4 KiB of weights. wanted(name), when given, picks the
  // tensors (by key).
  size_t prefault(const std::function<bool(const std::string&)>& wanted = {}) const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
  std::vector<std::unique_ptr<TensorInfo>> own_;  // from_tensors
  std::shared_ptr<const void> owner_;
  std::function<std::string(const std::string&)> file_name_;
};

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace ff
