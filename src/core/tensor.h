// Non-owning strided tensor views. Memory belongs to someone else (an mmap'd checkpoint, a
// buffer in the engine); kernels take views and never allocate in the hot path.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace ff {

constexpr int kMaxDims = 6;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> stride{};  // in elements

  TensorView() = default;
  // A contiguous (row-major) view.
  TensorView(void* d, DType t, std::initializer_list<int64_t> dims);
  TensorView(const void* d, DType t, std::initializer_list<int64_t> dims)
      : TensorView(const_cast<void*>(d), t, dims) {}

  int64_t numel() const;
  int64_t size(int dim) const { return shape[dim < 0 ? dim + ndim : dim]; }
  bool is_contiguous() const;
  std::string shape_str() const;  // "[2, 3, 4]"

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  // Element pointer at the given index (all dims), for generic code.
  template <typename T>
  T* at(std::initializer_list<int64_t> idx) const {
    int64_t off = 0;
    int i = 0;
    for (int64_t v : idx) off += v * stride[i++];
    return static_cast<T*>(data) + off;
  }
  // A view of the sub-range [begin, end) of dimension `dim`.
  TensorView slice(int dim, int64_t begin, int64_t end) const;
};

}  // namespace ff
