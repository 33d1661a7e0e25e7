// Helpers shared by the model tests: fixture paths and golden tensors.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "model/model.h"

namespace ff::testing {

inline std::string fixture(const std::string& name) {
  return std::string(FF_FIXTURES_DIR) + "/" + name;
}

inline bool fixture_exists(const std::string& name) {
  return std::filesystem::exists(fixture(name) + "/config.json");
}

template <typename T>
std::vector<T> read_vec(const TensorInfo& t) {
  std::vector<T> out(size_t(t.numel()));
  if constexpr (std::is_same_v<T, int32_t>) {
    for (size_t i = 0; i < out.size(); ++i) {
      if (t.dtype == DType::I64) {
        int64_t v;
        std::memcpy(&v, t.data + 8 * i, 8);
        out[i] = int32_t(v);
      } else {
        std::memcpy(&out[i], t.data + 4 * i, 4);
      }
    }
  } else {
    EXPECT_EQ(t.dtype, DType::F32) << t.name;
    std::memcpy(out.data(), t.data, out.size() * 4);
  }
  return out;
}

// max_i |a_i - b_i| / max_i |b_i|: the error relative to the scale of the logits row.
inline double max_rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}

inline int32_t argmax(const float* x, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

}  // namespace ff::testing

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

namespace ff::testing {

struct RawTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes a safetensors file (for building broken checkpoints in tests).
inline void write_safetensors(const std::string& path,
                              const std::map<std::string, RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  size_t off = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << h;
  for (const auto& [name, t] : tensors) out << t.bytes;
}

// Every tensor of a checkpoint as raw bytes (to modify and write back).
inline std::map<std::string, RawTensor> read_all(const std::string& dir) {
  std::map<std::string, RawTensor> out;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().extension() != ".safetensors" || f.path().filename() == "golden.safetensors")
      continue;
    SafetensorsFile sf(f.path().string());
    for (const auto& [name, t] : sf.tensors())
      out[name] = RawTensor{dtype_name(t.dtype), t.shape,
                            std::string(reinterpret_cast<const char*>(t.data), t.nbytes)};
  }
  return out;
}

// A fresh temporary directory removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ff_test_XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace ff::testing
