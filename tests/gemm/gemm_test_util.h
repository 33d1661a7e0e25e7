// Helpers shared by the gemm tests: the backends this CPU runs, and an ff::Error check.
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/core.h"
#include "gemm/gemm.h"

namespace ff::gemm::testing {

// Every backend the CPU supports, the scalar reference first.
// count uniform floats in [-1, 1) from seed.
inline std::vector<float> random_floats(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::vector<float> v(count);
  for (float& f : v) f = uni(rng);
  return v;
}

inline std::vector<Isa> backends() {
  std::vector<Isa> out{Isa::Scalar};
  if (int(best_isa()) >= int(Isa::Avx2)) out.push_back(Isa::Avx2);
  if (int(best_isa()) >= int(Isa::Avx512)) out.push_back(Isa::Avx512);
  return out;
}

// f() must throw ff::Error with `needle` in its message.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error (wanted '" << needle << "')";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A weight with its own storage: n rows of ld elements, random values of the given dtype.
struct TestWeight {
  Weight w;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;

  TestWeight(DType dtype, int64_t n, int64_t k, int64_t ld, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    w.dtype = dtype;
    w.n = n;
    w.k = k;
    w.ld = ld;
    bytes.assign(size_t(n * ld) * dtype_size(dtype), 0);
    for (int64_t i = 0; i < n * ld; ++i) {
      switch (dtype) {
        case DType::F32: {
          const float v = uni(rng);
          std::memcpy(&bytes[size_t(i) * 4], &v, 4);
          break;
        }
        case DType::BF16: {
          const uint16_t v = f32_to_bf16(uni(rng));
          std::memcpy(&bytes[size_t(i) * 2], &v, 2);
          break;
        }
        case DType::F16: {
          const uint16_t v = f32_to_f16(uni(rng));
          std::memcpy(&bytes[size_t(i) * 2], &v, 2);
          break;
        }
        default: {
          // Every e4m3 code but the NaNs (0x7f, 0xff), subnormals included.
          uint8_t v = uint8_t(rng() & 0xff);
          if ((v & 0x7f) == 0x7f) v ^= 1;
          bytes[size_t(i)] = v;
        }
      }
    }
    w.data = bytes.data();
    if (dtype == DType::F8_E4M3) {
      const int64_t nb = (n + kFp8Block - 1) / kFp8Block, kb = (k + kFp8Block - 1) / kFp8Block;
      std::uniform_real_distribution<float> s(0.5e-3f, 2e-3f);
      scales.resize(size_t(nb * kb));
      for (float& v : scales) v = s(rng);
      w.scale_inv = scales.data();
    }
  }
};

// The bytes of tests/fixtures/gguf_quant/<name> (goldens of tools/make_gguf_goldens.py).
inline std::vector<uint8_t> read_fixture(const std::string& name) {
  const std::string path = std::string(FF_FIXTURES_DIR) + "/gguf_quant/" + name;
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace ff::gemm::testing
