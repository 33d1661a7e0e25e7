#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace ff {

namespace {
double get_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}
double correction_dim(double rotations, int dim, double base, double max_pos) {
  return dim * std::log(max_pos / (rotations * 2 * M_PI)) / (2 * std::log(base));
}
}  // namespace

Rope::Rope(const ModelConfig& c)
    : dim_(c.qk_rope_head_dim), interleave_(c.model_type == "deepseek_v2" || c.rope_interleave) {
  const int half = dim_ / 2;
  inv_freq_.resize(size_t(half));
  for (int i = 0; i < half; ++i) {
    const float pos_freq = std::pow(float(c.rope_theta), float(2 * i) / float(dim_));
    inv_freq_[size_t(i)] = 1.0f / pos_freq;
  }
  if (!c.yarn.enabled) return;
  const auto& y = c.yarn;
  if (y.attention_factor != 0)
    attention_factor_ = float(y.attention_factor);
  else if (y.mscale != 0 && y.mscale_all_dim != 0)
    attention_factor_ =
        float(get_mscale(y.factor, y.mscale) / get_mscale(y.factor, y.mscale_all_dim));
  else
    attention_factor_ = float(get_mscale(y.factor, 1.0));

  double low = std::floor(
      correction_dim(y.beta_fast, dim_, c.rope_theta, y.original_max_position_embeddings));
  double high = std::ceil(
      correction_dim(y.beta_slow, dim_, c.rope_theta, y.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, double(dim_ - 1));
  if (low == high) high += 0.001;
  for (int i = 0; i < half; ++i) {
    const float ramp = std::clamp(float((i - low) / (high - low)), 0.f, 1.f);
    const float extrapolation_factor = 1.f - ramp;
    const float pos_freq = std::pow(float(c.rope_theta), float(2 * i) / float(dim_));
    const float extrapolated = 1.0f / pos_freq;
    const float interpolated = 1.0f / (float(y.factor) * pos_freq);
    inv_freq_[size_t(i)] =
        interpolated * (1 - extrapolation_factor) + extrapolated * extrapolation_factor;
  }
}

void Rope::apply(float* x, int64_t pos) const {
  apply_n(x, 1, 0, pos);
}

void Rope::apply_n(float* x, int n, int64_t stride, int64_t pos) const {
  const int half = dim_ / 2;
  // Angles in fp32 like the reference (position * inv_freq as float).
  float cs[256], sn[256];
  float* cosv = cs;
  float* sinv = sn;
  std::vector<float> big;
  if (half > 256) {
    big.resize(size_t(2 * half));
    cosv = big.data();
    sinv = big.data() + half;
  }
  for (int i = 0; i < half; ++i) {
    const float angle = float(pos) * inv_freq_[size_t(i)];
    cosv[i] = std::cos(angle) * attention_factor_;
    sinv[i] = std::sin(angle) * attention_factor_;
  }
  for (int v = 0; v < n; ++v) {
    float* p = x + v * stride;
    for (int i = 0; i < half; ++i) {
      float* a = interleave_ ? p + 2 * i : p + i;
      float* b = interleave_ ? p + 2 * i + 1 : p + i + half;
      const float x1 = *a, x2 = *b;
      *a = x1 * cosv[i] - x2 * sinv[i];
      *b = x2 * cosv[i] + x1 * sinv[i];
    }
  }
}

}  // namespace ff
