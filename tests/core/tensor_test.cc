// Strided tensor views.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "core/core.h"

namespace ff {
namespace {

TEST(TensorView, ContiguousStridesShapeAndNumel) {
  std::vector<float> buf(24);
  TensorView t(buf.data(), DType::F32, {2, 3, 4});
  EXPECT_EQ(t.ndim, 3);
  EXPECT_EQ(t.data, buf.data());
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.stride[0], 12);
  EXPECT_EQ(t.stride[1], 4);
  EXPECT_EQ(t.stride[2], 1);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.shape_str(), "[2, 3, 4]");
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.size(-3), 2);
  EXPECT_EQ(t.ptr<float>(), buf.data());

  TensorView scalar(buf.data(), DType::BF16, {});
  EXPECT_EQ(scalar.ndim, 0);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.shape_str(), "[]");
  EXPECT_TRUE(scalar.is_contiguous());

  TensorView empty(buf.data(), DType::F32, {3, 0, 5});
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.stride[0], 0);
  EXPECT_EQ(empty.stride[1], 5);

  const std::vector<float>& cbuf = buf;
  TensorView c(cbuf.data(), DType::F32, {4, 6});
  EXPECT_EQ(c.ptr<const float>(), cbuf.data());
  EXPECT_EQ(TensorView().ndim, 0);

  TensorView six(buf.data(), DType::U8, {1, 2, 1, 3, 1, 4});
  EXPECT_EQ(six.numel(), 24);
  EXPECT_EQ(six.stride[0], 24);
  EXPECT_EQ(six.stride[5], 1);
}

TEST(TensorView, AtAddressesElements) {
  std::vector<int32_t> buf(2 * 3 * 4);
  std::iota(buf.begin(), buf.end(), 0);
  TensorView t(buf.data(), DType::I32, {2, 3, 4});
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) EXPECT_EQ(*t.at<int32_t>({i, j, k}), i * 12 + j * 4 + k);
  *t.at<int32_t>({1, 2, 3}) = -1;
  EXPECT_EQ(buf.back(), -1);
}

TEST(TensorView, SliceKeepsStridesAndOffsetsData) {
  std::vector<float> buf(2 * 3 * 4);
  std::iota(buf.begin(), buf.end(), 0.f);
  TensorView t(buf.data(), DType::F32, {2, 3, 4});

  TensorView s = t.slice(1, 1, 3);  // [2, 2, 4], a strided view
  EXPECT_EQ(s.shape_str(), "[2, 2, 4]");
  EXPECT_EQ(s.stride, t.stride);
  EXPECT_EQ(s.numel(), 16);
  EXPECT_FALSE(s.is_contiguous());
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t k = 0; k < 4; ++k)
        EXPECT_EQ(*s.at<float>({i, j, k}), float(i * 12 + (j + 1) * 4 + k));

  TensorView rows = t.slice(0, 1, 2);  // a slice of the outer dim stays contiguous
  EXPECT_TRUE(rows.is_contiguous());
  EXPECT_EQ(rows.ptr<float>(), buf.data() + 12);

  TensorView cols = t.slice(2, 1, 2);  // [2, 3, 1]
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(*cols.at<float>({1, 2, 0}), 1 * 12 + 2 * 4 + 1);

  TensorView nested = s.slice(2, 2, 4).slice(0, 1, 2);  // [1, 2, 2]
  EXPECT_EQ(nested.shape_str(), "[1, 2, 2]");
  EXPECT_EQ(*nested.at<float>({0, 1, 1}), float(12 + 2 * 4 + 3));

  TensorView none = t.slice(1, 3, 3);
  EXPECT_EQ(none.numel(), 0);
  TensorView all = t.slice(0, 0, 2);
  EXPECT_EQ(all.data, t.data);
  EXPECT_TRUE(all.is_contiguous());
}

TEST(TensorView, SliceOffsetUsesTheElementSize) {
  std::vector<uint8_t> buf(64);
  for (DType dt : {DType::BF16, DType::F8_E4M3, DType::F64, DType::I32}) {
    TensorView t(buf.data(), dt, {4, 2});
    TensorView s = t.slice(0, 1, 3);
    EXPECT_EQ(static_cast<uint8_t*>(s.data) - buf.data(), int64_t(2 * dtype_size(dt)))
        << dtype_name(dt);
  }
}

TEST(TensorView, BadSlicesAndShapesThrow) {
  std::vector<float> buf(24);
  TensorView t(buf.data(), DType::F32, {2, 3, 4});
  auto expect_error = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no ff::Error (expected one mentioning " << needle << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { t.slice(3, 0, 1); }, "[2, 3, 4]");
  expect_error([&] { t.slice(-1, 0, 1); }, "dim -1");
  expect_error([&] { t.slice(1, -1, 2); }, "slice [-1, 2)");
  expect_error([&] { t.slice(1, 0, 4); }, "slice [0, 4)");
  expect_error([&] { t.slice(1, 2, 1); }, "slice [2, 1)");
  expect_error([&] { TensorView(buf.data(), DType::F32, {1, 1, 1, 1, 1, 1, 1}); }, "7 dims");
  expect_error([&] { TensorView(buf.data(), DType::F32, {2, -3}); }, "negative size -3");
  EXPECT_THROW(t.slice(0, 0, 3), Error);
  EXPECT_NO_THROW(t.slice(0, 2, 2));
}

}  // namespace
}  // namespace ff
