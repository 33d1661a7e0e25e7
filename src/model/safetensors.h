// Safetensors checkpoints, memory-mapped.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// then the data region; offsets are relative to its start. A checkpoint directory holds
// `model.safetensors`, or shards listed in `model.safetensors.index.json` ("weight_map":
// tensor name -> shard file). Tensors point into the mappings; nothing is copied.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/core.h"

namespace ff {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
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

  const std::string& dir() const { return dir_; }
  const TensorInfo* find(const std::string& name) const;
  // The tensor, or ff::Error "DIR: missing tensor NAME".
  const TensorInfo& get(const std::string& name) const;
  // get() plus a shape check: "FILE: tensor NAME has shape [a, b], expected [c, d]".
  const TensorInfo& get(const std::string& name, const std::vector<int64_t>& shape) const;
  size_t num_tensors() const { return index_.size(); }
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
};

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace ff
