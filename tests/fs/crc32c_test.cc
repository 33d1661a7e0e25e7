// CRC32C against published check values (RFC 3720 B.4 and the common "123456789" check), the
// instruction path against the table path, and incremental use.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "fs/fs.h"

namespace ff::fs {
namespace {

TEST(Crc32c, KnownValues) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  std::vector<uint8_t> b(32, 0);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x8A9136AAu);  // RFC 3720: 32 bytes of zeros
  std::fill(b.begin(), b.end(), 0xff);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x62A8AB43u);  // 32 bytes of 0xff
  for (int i = 0; i < 32; ++i) b[size_t(i)] = uint8_t(i);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x46DD794Eu);  // incrementing
  for (int i = 0; i < 32; ++i) b[size_t(i)] = uint8_t(31 - i);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x113FDB5Cu);  // decrementing
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, InstructionMatchesTableAndComposes) {
  std::mt19937 g(7);
  std::string s(100000, '\0');
  for (auto& c : s) c = char(g());
  for (const size_t n :
       {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(4095), s.size()}) {
    EXPECT_EQ(crc32c(s.data(), n), crc32c_portable(s.data(), n)) << n;
    const size_t cut = n / 3;
    EXPECT_EQ(crc32c(s.data() + cut, n - cut, crc32c(s.data(), cut)), crc32c(s.data(), n)) << n;
  }
}

}  // namespace
}  // namespace ff::fs
