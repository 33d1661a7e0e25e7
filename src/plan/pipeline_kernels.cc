#include "plan/pipeline_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace ff::plan {
namespace {

// 32 bytes of T, GCC's generic vectors: two SSE2 registers on baseline x86-64. Lanes are
// independent, so a lane computes exactly what the scalar loop computes for its column.
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};

template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int kLanes = int(sizeof(Vec<T>) / sizeof(T));

constexpr int kColumnBlock = 256;  // with kDepthBlock: a 256 x 256 block of b stays in L2
constexpr int kDepthBlock = 256;   // and a 4 x 256 strip of a in L1
constexpr int kRows = 4;

// Vectors pass by reference: 32-byte vectors by value would change the ABI without AVX.
template <typename T>
void load(Vec<T>& v, const T* p) {
  std::memcpy(&v, p, sizeof v);
}

template <typename T>
void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof v);
}

// Rows i..i+R-1, columns j..j+kLanes-1 of c, over depth p0..p1-1 (continuing c when p0 > 0).
template <typename T, int R>
void tile(const T* a, ptrdiff_t rs, ptrdiff_t cs, const T* b, T* c, int n, int i, int j, int p0,
          int p1) {
  Vec<T> acc[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = Vec<T>{};
    if (p0 > 0) load(acc[r], c + ptrdiff_t(i + r) * n + j);
  }
  for (int p = p0; p < p1; ++p) {
    Vec<T> bv;
    load(bv, b + ptrdiff_t(p) * n + j);
    const T* ap = a + ptrdiff_t(i) * rs + ptrdiff_t(p) * cs;
    for (int r = 0; r < R; ++r) acc[r] += bv * ap[r * rs];
  }
  for (int r = 0; r < R; ++r) store(c + ptrdiff_t(i + r) * n + j, acc[r]);
}

// One element of c: the same operation sequence as one lane of tile().
template <typename T>
void element(const T* a, ptrdiff_t rs, ptrdiff_t cs, const T* b, T* c, int n, int i, int j, int p0,
             int p1) {
  T acc = p0 == 0 ? T(0) : c[ptrdiff_t(i) * n + j];
  const T* ap = a + ptrdiff_t(i) * rs;
  for (int p = p0; p < p1; ++p) acc += b[ptrdiff_t(p) * n + j] * ap[ptrdiff_t(p) * cs];
  c[ptrdiff_t(i) * n + j] = acc;
}

template <typename T, int R>
void row_block(const T* a, ptrdiff_t rs, ptrdiff_t cs, const T* b, T* c, int n, int i, int j0,
               int j1, int p0, int p1) {
  int j = j0;
  for (; j + kLanes<T> <= j1; j += kLanes<T>) tile<T, R>(a, rs, cs, b, c, n, i, j, p0, p1);
  for (; j < j1; ++j)
    for (int r = 0; r < R; ++r) element(a, rs, cs, b, c, n, i + r, j, p0, p1);
}

}  // namespace

template <typename T>
void matmul(const T* a, ptrdiff_t rs, ptrdiff_t cs, const T* b, T* c, int m, int n, int k) {
  if (k == 0) {
    std::fill(c, c + ptrdiff_t(m) * n, T(0));
    return;
  }
  for (int j0 = 0; j0 < n; j0 += kColumnBlock) {
    const int j1 = std::min(n, j0 + kColumnBlock);
    for (int p0 = 0; p0 < k; p0 += kDepthBlock) {
      const int p1 = std::min(k, p0 + kDepthBlock);
      int i = 0;
      for (; i + kRows <= m; i += kRows) row_block<T, kRows>(a, rs, cs, b, c, n, i, j0, j1, p0, p1);
      for (; i < m; ++i) row_block<T, 1>(a, rs, cs, b, c, n, i, j0, j1, p0, p1);
    }
  }
}

template <typename T>
T gelu(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(M_SQRT1_2)));
}

template <typename T>
T gelu_grad(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
  const T pdf = std::exp(T(-0.5) * x * x) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
  return cdf + x * pdf;
}

template void matmul<float>(const float*, ptrdiff_t, ptrdiff_t, const float*, float*, int, int,
                            int);
template void matmul<double>(const double*, ptrdiff_t, ptrdiff_t, const double*, double*, int, int,
                             int);
template float gelu<float>(float);
template double gelu<double>(double);
template float gelu_grad<float>(float);
template double gelu_grad<double>(double);

}  // namespace ff::plan
