// GGUF block formats: the type table and scalar dequantisers (layouts, numerics: gguf_quant.h).
#include "gemm/gguf_quant.h"

#include <cstring>
#include <limits>

#include "core/core.h"

namespace ff::gemm {
namespace {

constexpr int kQK = 256;  // QK_K: elements of a K-quant super-block

struct TypeInfo {
  GgufType type;
  const char* name;
  int64_t block_size, type_size;
};

constexpr TypeInfo kTypes[] = {
    {GgufType::F32, "F32", 1, 4},
    {GgufType::F16, "F16", 1, 2},
    {GgufType::Q4_0, "Q4_0", 32, 18},
    {GgufType::Q4_1, "Q4_1", 32, 20},
    {GgufType::Q5_0, "Q5_0", 32, 22},
    {GgufType::Q5_1, "Q5_1", 32, 24},
    {GgufType::Q8_0, "Q8_0", 32, 34},
    {GgufType::Q8_1, "Q8_1", 32, 40},
    {GgufType::Q2_K, "Q2_K", 256, 84},
    {GgufType::Q3_K, "Q3_K", 256, 110},
    {GgufType::Q4_K, "Q4_K", 256, 144},
    {GgufType::Q5_K, "Q5_K", 256, 176},
    {GgufType::Q6_K, "Q6_K", 256, 210},
    {GgufType::Q8_K, "Q8_K", 256, 292},
    {GgufType::IQ2_XXS, "IQ2_XXS", 256, 66},
    {GgufType::IQ2_XS, "IQ2_XS", 256, 74},
    {GgufType::IQ3_XXS, "IQ3_XXS", 256, 98},
    {GgufType::IQ1_S, "IQ1_S", 256, 50},
    {GgufType::IQ4_NL, "IQ4_NL", 32, 18},
    {GgufType::IQ3_S, "IQ3_S", 256, 110},
    {GgufType::IQ2_S, "IQ2_S", 256, 82},
    {GgufType::IQ4_XS, "IQ4_XS", 256, 136},
    {GgufType::I8, "I8", 1, 1},
    {GgufType::I16, "I16", 1, 2},
    {GgufType::I32, "I32", 1, 4},
    {GgufType::I64, "I64", 1, 8},
    {GgufType::F64, "F64", 1, 8},
    {GgufType::IQ1_M, "IQ1_M", 256, 56},
    {GgufType::BF16, "BF16", 1, 2},
    {GgufType::TQ1_0, "TQ1_0", 256, 54},
    {GgufType::TQ2_0, "TQ2_0", 256, 66},
    {GgufType::MXFP4, "MXFP4", 32, 17},
    {GgufType::NVFP4, "NVFP4", 64, 36},
    {GgufType::Q1_0, "Q1_0", 128, 18},
};

const TypeInfo* find_type(GgufType t) {
  for (const TypeInfo& info : kTypes)
    if (info.type == t) return &info;
  return nullptr;
}

const TypeInfo& known_type(GgufType t) {
  const TypeInfo* info = find_type(t);
  if (!info) fail("unknown GGUF tensor type id {}", uint32_t(t));
  return *info;
}

uint16_t load_u16(const uint8_t* p) {
  return uint16_t(p[0] | (p[1] << 8));
}
float load_f16(const uint8_t* p) {
  return f16_to_f32(load_u16(p));
}

// Q8_0: f16 d, int8 q[32].
void dequantize_q8_0(const uint8_t* b, float* out) {
  const float d = load_f16(b);
  for (int i = 0; i < 32; ++i) out[i] = float(int8_t(b[2 + i])) * d;
}

// The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K / Q5_K.
void k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K (qh == nullptr) and Q5_K: f16 d, f16 dmin, scales[12], [qh[32]], qs[128].
void dequantize_q45_k(const uint8_t* b, const uint8_t* qh, const uint8_t* qs, float* out) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    k_scale_min(scales, j, &sc, &m);
    const float dl = d * float(sc);
    const float ml = dmin * float(m);
    const uint8_t* q4 = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) {
      int q = (q4[l] >> shift) & 15;
      if (qh) q |= ((qh[l] >> j) & 1) << 4;
      out[32 * j + l] = dl * float(q) - ml;  // the products are exact (see gguf_quant.h)
    }
  }
}

// Q6_K: ql[128], qh[64], int8 scales[16], f16 d.
void dequantize_q6_k(const uint8_t* b, float* out) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const uint8_t* scales = b + 192;
  const float d = load_f16(b + 208);
  for (int h = 0; h < 2; ++h) {
    for (int r = 0; r < 128; ++r) {
      const int e = 128 * h + r;
      const int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 15;
      const int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const float ds = d * float(int8_t(scales[e / 16]));
      out[e] = ds * float((lo | (hi << 4)) - 32);
    }
  }
}

uint32_t load_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1 (32 elements): f16 d, [f16 m], [u32 qh], qs[16]; element i < 16 is
// the low nibble of qs[i], element 16 + i the high one; Q5 adds bit i of qh as bit 4.
// Without m the quant is centred (q - 8, resp. q - 16) and x = d * q; with m, x = d * q + m.
void dequantize_q45_01(const uint8_t* b, bool has_min, bool has_high, float* out) {
  const float d = load_f16(b);
  const float m = has_min ? load_f16(b + 2) : 0.f;
  const uint8_t* p = b + (has_min ? 4 : 2);
  const uint32_t qh = has_high ? load_u32(p) : 0;
  const uint8_t* qs = p + (has_high ? 4 : 0);
  const int centre = has_min ? 0 : has_high ? 16 : 8;
  for (int i = 0; i < 32; ++i) {
    int q = (qs[i % 16] >> (4 * (i / 16))) & 15;
    q |= int((qh >> i) & 1) << 4;
    out[i] = has_min ? d * float(q) + m : d * float(q - centre);  // d * q is exact
  }
}

// Q2_K: scales[16] (low nibble: scale, high: min, per 16 elements) | qs[64] | f16 d | f16 dmin.
// Element e = 128 h + 32 s + l: q = (qs[32 h + l] >> 2 s) & 3, x = (d * sc) * q - dmin * m.
void dequantize_q2_k(const uint8_t* b, float* out) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = load_f16(b + 80), dmin = load_f16(b + 82);
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32;
    const int q = (qs[32 * h + l] >> (2 * s)) & 3;
    const float dl = d * float(scales[e / 16] & 15), ml = dmin * float(scales[e / 16] >> 4);
    out[e] = dl * float(q) - ml;
  }
}

// Q3_K: hmask[32] | qs[64] | scales[12] | f16 d. 16 6-bit signed scales (value - 32): the low 4
// bits of scale i are nibble i / 8 of scales[i % 8], the high 2 bits are bits 2 (i / 4) of
// scales[8 + i % 4]. Element e = 128 h + 32 s + l: low 2 bits (qs[32 h + l] >> 2 s) & 3; the
// quant is that minus 4 unless bit e / 32 of hmask[e % 32] is set; x = (d * scale) * q.
void dequantize_q3_k(const uint8_t* b, float* out) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = load_f16(b + 108);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    const int lo = (sc[i % 8] >> (4 * (i / 8))) & 15;
    const int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    dl[i] = d * float((lo | hi << 4) - 32);
  }
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32;
    const int low = (qs[32 * h + l] >> (2 * s)) & 3;
    const int high = (hmask[l] >> (e / 32)) & 1;
    out[e] = dl[e / 16] * float(low - (high ? 0 : 4));
  }
}

}  // namespace

bool gguf_type_known(uint32_t id) {
  return find_type(GgufType(id)) != nullptr;
}

std::string gguf_type_name(GgufType t) {
  const TypeInfo* info = find_type(t);
  return info ? info->name : "unknown(" + std::to_string(uint32_t(t)) + ")";
}

int64_t gguf_block_size(GgufType t) {
  return known_type(t).block_size;
}

int64_t gguf_type_size(GgufType t) {
  return known_type(t).type_size;
}

bool gguf_dequantize_supported(GgufType t) {
  switch (t) {
    case GgufType::F32:
    case GgufType::F16:
    case GgufType::BF16:
    case GgufType::Q8_0:
    case GgufType::Q4_0:
    case GgufType::Q4_1:
    case GgufType::Q5_0:
    case GgufType::Q5_1:
    case GgufType::Q2_K:
    case GgufType::Q3_K:
    case GgufType::Q4_K:
    case GgufType::Q5_K:
    case GgufType::Q6_K:
      return true;
    default:
      return false;
  }
}

int64_t row_bytes(GgufType t, int64_t n) {
  const TypeInfo& info = known_type(t);
  if (n < 0 || n % info.block_size != 0)
    fail("GGUF type {}: {} elements is not a multiple of its block size {}", info.name, n,
         info.block_size);
  // Up to 8 bytes per element: 2^62 F32 elements would overflow int64.
  if (n / info.block_size > std::numeric_limits<int64_t>::max() / info.type_size)
    fail("GGUF type {}: {} elements take more than 2^63 bytes", info.name, n);
  return n / info.block_size * info.type_size;
}

void dequantize_gguf(GgufType t, const void* src, int64_t n, float* out) {
  const TypeInfo& info = known_type(t);
  if (!gguf_dequantize_supported(t)) fail("GGUF type {} is not supported", info.name);
  const int64_t bytes = row_bytes(t, n);
  if (n == 0) return;
  if (!src || !out) fail("dequantize_gguf({}): null source or output", info.name);
  const auto* p = static_cast<const uint8_t*>(src);
  switch (t) {
    case GgufType::F32:
      std::memcpy(out, p, size_t(bytes));
      return;
    case GgufType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = load_f16(p + 2 * i);
      return;
    case GgufType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load_u16(p + 2 * i));
      return;
    default:
      break;
  }
  const int64_t blocks = n / info.block_size;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = p + i * info.type_size;
    float* o = out + i * info.block_size;
    switch (t) {
      case GgufType::Q8_0:
        dequantize_q8_0(b, o);
        break;
      case GgufType::Q4_0:
        dequantize_q45_01(b, false, false, o);
        break;
      case GgufType::Q4_1:
        dequantize_q45_01(b, true, false, o);
        break;
      case GgufType::Q5_0:
        dequantize_q45_01(b, false, true, o);
        break;
      case GgufType::Q5_1:
        dequantize_q45_01(b, true, true, o);
        break;
      case GgufType::Q2_K:
        dequantize_q2_k(b, o);
        break;
      case GgufType::Q3_K:
        dequantize_q3_k(b, o);
        break;
      case GgufType::Q4_K:
        dequantize_q45_k(b, nullptr, b + 16, o);
        break;
      case GgufType::Q5_K:
        dequantize_q45_k(b, b + 16, b + 16 + kQK / 8, o);
        break;
      case GgufType::Q6_K:
        dequantize_q6_k(b, o);
        break;
      default:
        fail_invariant("dequantize_gguf: no kernel for {}", info.name);
    }
  }
}

}  // namespace ff::gemm
