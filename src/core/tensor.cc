#include "core/tensor.h"

#include <fmt/format.h>

namespace ff {

TensorView::TensorView(void* d, DType t, std::initializer_list<int64_t> dims)
    : data(d), dtype(t), ndim(int(dims.size())) {
  FF_CHECK(ndim <= kMaxDims, "tensor view: {} dims, at most {} supported", ndim, kMaxDims);
  int i = 0;
  for (int64_t v : dims) {
    FF_CHECK(v >= 0, "tensor view: negative size {} in dim {}", v, i);
    shape[i++] = v;
  }
  int64_t s = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    stride[k] = s;
    s *= shape[k];
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t s = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    if (shape[k] != 1 && stride[k] != s) return false;
    s *= shape[k];
  }
  return true;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return s + "]";
}

TensorView TensorView::slice(int dim, int64_t begin, int64_t end) const {
  FF_CHECK(dim >= 0 && dim < ndim && begin >= 0 && begin <= end && end <= shape[dim],
           "tensor view {}: slice [{}, {}) of dim {} out of range", shape_str(), begin, end, dim);
  TensorView v = *this;
  v.data = static_cast<uint8_t*>(data) + begin * stride[dim] * int64_t(dtype_size(dtype));
  v.shape[dim] = end - begin;
  return v;
}

}  // namespace ff
