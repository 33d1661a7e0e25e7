// Rotary position embedding with YaRN, as transformers computes it for DeepSeek-V2/V3:
//   inv_freq[i] = blend of 1/theta^(2i/d) (extrapolation) and that / factor (interpolation) over a
//   linear ramp between the YaRN correction dims (floor/ceil, clamped to [0, d-1]);
//   cos/sin are multiplied by attention_factor (1 when mscale == mscale_all_dim).
// Pairing: adjacent pairs (x[2i], x[2i+1]) for V2 and V3 with rope_interleave (the checkpoints'
// layout), else the two halves (x[i], x[i+d/2]). Rotated values stay in place; since queries and
// keys use the same layout, dot products equal the reference's.
#pragma once
#include <vector>

#include "model/config.h"

namespace ff {

class Rope {
 public:
  explicit Rope(const ModelConfig& c);
  int dim() const { return dim_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  float attention_factor() const { return attention_factor_; }
  // Rotates x[dim] in place for position `pos`.
  void apply(float* x, int64_t pos) const;
  // Rotates `n` vectors spaced `stride` floats apart, all at position `pos`.
  void apply_n(float* x, int n, int64_t stride, int64_t pos) const;

 private:
  int dim_;
  bool interleave_;
  float attention_factor_ = 1.f;
  std::vector<float> inv_freq_;
};

}  // namespace ff
