// GGUF block formats: dequantize_gguf against the gguf package's reference dequantisers, bit for
// bit (tests/fixtures/gguf_quant/, made by tools/make_gguf_goldens.py), then sizes, names, errors.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "gemm/gemm.h"
#include "gemm_test_util.h"

namespace ff::gemm {
namespace {

using testing::expect_error;
using testing::read_fixture;

class GgufGolden : public ::testing::TestWithParam<GgufType> {};

TEST_P(GgufGolden, BitExactWithReference) {
  const GgufType t = GetParam();
  const std::string name = gguf_type_name(t);
  const std::vector<uint8_t> blocks = read_fixture(name + ".blocks.bin");
  const std::vector<uint8_t> want = read_fixture(name + ".f32.bin");
  ASSERT_FALSE(want.empty());
  ASSERT_EQ(want.size() % 4, 0u);
  const int64_t n = int64_t(want.size() / 4);
  ASSERT_EQ(row_bytes(t, n), int64_t(blocks.size()));

  // Whole tensor at once, from an unaligned copy (GGUF data need not be aligned for the blocks).
  std::vector<uint8_t> unaligned(blocks.size() + 1);
  std::memcpy(unaligned.data() + 1, blocks.data(), blocks.size());
  std::vector<float> got(size_t(n), -1.f);
  dequantize_gguf(t, unaligned.data() + 1, n, got.data());
  for (int64_t i = 0; i < n; ++i) {
    uint32_t g, w;
    std::memcpy(&g, &got[size_t(i)], 4);
    std::memcpy(&w, &want[size_t(i) * 4], 4);
    if (g != w) {
      ADD_FAILURE() << name << " element " << i << " (block " << i / gguf_block_size(t)
                    << "): got 0x" << std::hex << g << ", reference 0x" << w;
      break;
    }
  }
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size()), 0);

  // Block by block (a row of one block) gives the same floats.
  const int64_t bs = gguf_block_size(t), ts = gguf_type_size(t);
  std::vector<float> one(static_cast<size_t>(bs));
  for (int64_t b = 0; b < n / bs; ++b) {
    dequantize_gguf(t, blocks.data() + b * ts, bs, one.data());
    ASSERT_EQ(std::memcmp(one.data(), want.data() + b * bs * 4, size_t(bs) * 4), 0)
        << name << " block " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Gguf, GgufGolden,
    ::testing::Values(GgufType::F32, GgufType::F16, GgufType::BF16, GgufType::Q8_0, GgufType::Q4_K,
                      GgufType::Q5_K, GgufType::Q6_K, GgufType::Q4_0, GgufType::Q4_1,
                      GgufType::Q5_0, GgufType::Q5_1, GgufType::Q2_K, GgufType::Q3_K),
    [](const ::testing::TestParamInfo<GgufType>& info) { return gguf_type_name(info.param); });

TEST(GgufQuant, IdsNamesAndSizes) {
  struct Row {
    GgufType t;
    uint32_t id;
    const char* name;
    int64_t block, bytes;
  };
  const Row rows[] = {
      {GgufType::F32, 0, "F32", 1, 4},        {GgufType::F16, 1, "F16", 1, 2},
      {GgufType::Q4_0, 2, "Q4_0", 32, 18},    {GgufType::Q4_1, 3, "Q4_1", 32, 20},
      {GgufType::Q5_0, 6, "Q5_0", 32, 22},    {GgufType::Q5_1, 7, "Q5_1", 32, 24},
      {GgufType::Q8_0, 8, "Q8_0", 32, 34},    {GgufType::Q2_K, 10, "Q2_K", 256, 84},
      {GgufType::Q3_K, 11, "Q3_K", 256, 110}, {GgufType::Q4_K, 12, "Q4_K", 256, 144},
      {GgufType::Q5_K, 13, "Q5_K", 256, 176}, {GgufType::Q6_K, 14, "Q6_K", 256, 210},
      {GgufType::Q8_K, 15, "Q8_K", 256, 292}, {GgufType::BF16, 30, "BF16", 1, 2},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(uint32_t(r.t), r.id) << r.name;
    EXPECT_TRUE(gguf_type_known(r.id)) << r.name;
    EXPECT_EQ(gguf_type_name(r.t), r.name);
    EXPECT_EQ(gguf_block_size(r.t), r.block) << r.name;
    EXPECT_EQ(gguf_type_size(r.t), r.bytes) << r.name;
  }
  EXPECT_FALSE(gguf_type_known(4));
  EXPECT_FALSE(gguf_type_known(31));
  EXPECT_EQ(gguf_type_name(GgufType(4)), "unknown(4)");
  for (GgufType t : {GgufType::F32, GgufType::F16, GgufType::BF16, GgufType::Q8_0, GgufType::Q4_K,
                     GgufType::Q5_K, GgufType::Q6_K, GgufType::Q4_0, GgufType::Q4_1, GgufType::Q5_0,
                     GgufType::Q5_1, GgufType::Q2_K, GgufType::Q3_K})
    EXPECT_TRUE(gguf_dequantize_supported(t)) << gguf_type_name(t);
  for (GgufType t : {GgufType::Q8_1, GgufType::Q8_K, GgufType::IQ4_XS, GgufType::TQ1_0})
    EXPECT_FALSE(gguf_dequantize_supported(t)) << gguf_type_name(t);
}

TEST(GgufQuant, RowBytes) {
  EXPECT_EQ(row_bytes(GgufType::F32, 7), 28);
  EXPECT_EQ(row_bytes(GgufType::BF16, 7), 14);
  EXPECT_EQ(row_bytes(GgufType::Q8_0, 64), 68);
  EXPECT_EQ(row_bytes(GgufType::Q4_K, 7168), 28 * 144);
  EXPECT_EQ(row_bytes(GgufType::Q6_K, 0), 0);
  expect_error([] { row_bytes(GgufType::Q4_K, 100); }, "Q4_K");
  expect_error([] { row_bytes(GgufType::Q8_0, 33); }, "not a multiple of its block size 32");
  expect_error([] { row_bytes(GgufType::F16, -2); }, "F16");
  expect_error([] { row_bytes(GgufType(99), 256); }, "unknown GGUF tensor type id 99");
}

// Found by fuzz/gguf_fuzz.cc (corpus: seed-dim0-2e62-f32.gguf): a GGUF tensor of 2^62 F32
// elements per row made n * 4 overflow int64 (UB; 0 in practice, then a division by zero in
// GgufFile). The byte count must fit int64 or be an error.
TEST(GgufQuant, RowBytesOverflowIsAnError) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(row_bytes(GgufType::F64, kMax / 8), kMax / 8 * 8);
  EXPECT_EQ(row_bytes(GgufType::I8, kMax), kMax);
  expect_error([] { row_bytes(GgufType::F64, kMax / 8 + 1); },
               "GGUF type F64: 1152921504606846976 elements take more than 2^63 bytes");
  expect_error([] { row_bytes(GgufType::F32, int64_t(1) << 62); },
               "GGUF type F32: 4611686018427387904 elements take more than 2^63 bytes");
  expect_error([] { row_bytes(GgufType::Q8_0, kMax / 32 * 32); }, "take more than 2^63 bytes");
  expect_error([] { row_bytes(GgufType::F16, kMax / 2 + 1); }, "take more than 2^63 bytes");
  EXPECT_EQ(row_bytes(GgufType::Q6_K, kMax / 256 * 256), kMax / 256 * 210);  // < 1 byte each
}

TEST(GgufQuant, Errors) {
  std::vector<uint8_t> src(1024, 0);
  std::vector<float> out(512);
  expect_error([&] { dequantize_gguf(GgufType::Q8_1, src.data(), 32, out.data()); },
               "GGUF type Q8_1 is not supported");
  expect_error([&] { dequantize_gguf(GgufType::IQ2_XS, src.data(), 256, out.data()); },
               "GGUF type IQ2_XS is not supported");
  expect_error([&] { dequantize_gguf(GgufType(5), src.data(), 32, out.data()); },
               "unknown GGUF tensor type id 5");
  expect_error([&] { dequantize_gguf(GgufType::Q6_K, src.data(), 255, out.data()); },
               "GGUF type Q6_K: 255 elements");
  expect_error([&] { dequantize_gguf(GgufType::Q8_0, nullptr, 32, out.data()); }, "null");
  dequantize_gguf(GgufType::Q5_K, nullptr, 0, nullptr);  // n == 0: nothing to read or write
}

}  // namespace
}  // namespace ff::gemm
