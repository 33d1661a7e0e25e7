#include <gtest/gtest.h>

#include <cmath>

#include "core/core.h"

namespace ff {
namespace {

TEST(DType, Bf16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_bf16(f), h);
  }
}

}  // namespace
}  // namespace ff
