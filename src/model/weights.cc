#include "model/weights.h"

#include <fmt/format.h>

namespace ff {

namespace {

// n values of an F32 / BF16 / F16 tensor's bytes as fp32 (safetensors data need not be aligned).
void widen_to_f32(const uint8_t* src, DType t, float* out, size_t n) {
  if (t == DType::F32) {
    std::memcpy(out, src, n * 4);
    return;
  }
  if (reinterpret_cast<uintptr_t>(src) % 2 == 0) {
    const auto* h = reinterpret_cast<const uint16_t*>(src);
    if (t == DType::BF16)
      convert_bf16_to_f32(h, out, n);
    else
      convert_f16_to_f32(h, out, n);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    out[i] = t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

struct Binder {
  const ModelConfig& c;
  ModelWeights& mw;
  const Checkpoint& ck;

  std::vector<float> vec(const std::string& name, int64_t n) {
    const TensorInfo& t = ck.get(name, {n});
    FF_CHECK(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
             "{}: tensor {} has dtype {}, expected F32, BF16 or F16", *t.file, name,
             dtype_name(t.dtype));
    std::vector<float> out(static_cast<size_t>(n));
    widen_to_f32(t.data, t.dtype, out.data(), size_t(n));
    return out;
  }

  gemm::Weight linear(const std::string& prefix, int64_t out, int64_t in) {
    const std::string name = prefix + ".weight";
    const TensorInfo& t = ck.get(name, {out, in});
    gemm::Weight w;
    w.dtype = t.dtype;
    w.data = t.data;
    w.n = out;
    w.k = in;
    w.ld = in;
    switch (t.dtype) {
      case DType::F32:
      case DType::BF16:
      case DType::F16:
        break;
      case DType::F8_E4M3: {
        const int64_t sn = (out + gemm::kFp8Block - 1) / gemm::kFp8Block;
        const int64_t sk = (in + gemm::kFp8Block - 1) / gemm::kFp8Block;
        const std::string sname = prefix + ".weight_scale_inv";
        FF_CHECK(ck.find(sname) != nullptr, "{}: FP8 tensor {} has no {}", *t.file, name, sname);
        const TensorInfo& s = ck.get(sname, {sn, sk});
        if (s.dtype == DType::F32 && reinterpret_cast<uintptr_t>(s.data) % 4 == 0) {
          w.scale_inv = reinterpret_cast<const float*>(s.data);
        } else {
          FF_CHECK(s.dtype == DType::F32 || s.dtype == DType::BF16,
                   "{}: tensor {} has dtype {}, expected F32", *s.file, sname, dtype_name(s.dtype));
          mw.owned_scales.push_back(vec(sname, sn * sk));
          w.scale_inv = mw.owned_scales.back().data();
        }
        break;
      }
      default:
        fail(
            "{}: tensor {} has dtype {}, not supported for a linear layer (F32, BF16, F16, "
            "F8_E4M3)",
            *t.file, name, dtype_name(t.dtype));
    }
    FF_CHECK(t.dtype == DType::F8_E4M3 || reinterpret_cast<uintptr_t>(t.data) % 2 == 0,
             "{}: tensor {} is misaligned in the file", *t.file, name);
    return w;
  }

  MlpWeights mlp(const std::string& prefix, int64_t hidden, int64_t inter) {
    MlpWeights m;
    m.gate = linear(prefix + ".gate_proj", inter, hidden);
    m.up = linear(prefix + ".up_proj", inter, hidden);
    m.down = linear(prefix + ".down_proj", hidden, inter);
    return m;
  }

  void absorb(MlaWeights& a) {
    const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim,
                  r = c.kv_lora_rank;
    // Exact storage: BF16 stays BF16; F32, F16 and FP8 (whose scaled values need fp32) use F32.
    const DType dt = a.kv_b.dtype == DType::BF16 ? DType::BF16 : DType::F32;
    const size_t es = dtype_size(dt);
    a.absorbed_storage.resize(size_t(H) * size_t(nope + v) * size_t(r) * es);
    uint8_t* base = a.absorbed_storage.data();
    std::vector<float> row(static_cast<size_t>(r));
    auto put = [&](uint8_t* dst, int64_t idx, float x) {
      if (dt == DType::F32)
        std::memcpy(dst + 4 * idx, &x, 4);
      else {
        const uint16_t h = f32_to_bf16(x);
        std::memcpy(dst + 2 * idx, &h, 2);
      }
    };
    for (int64_t h = 0; h < H; ++h) {
      uint8_t* uk = base + size_t(h) * size_t(nope + v) * size_t(r) * es;
      uint8_t* uv = uk + size_t(nope) * size_t(r) * es;
      for (int64_t d = 0; d < nope + v; ++d) {
        gemm::dequantize_row(a.kv_b, h * (nope + v) + d, row.data());
        for (int64_t j = 0; j < r; ++j) {
          if (d < nope)
            put(uk, j * nope + d, row[size_t(j)]);  // transpose: [r, nope]
          else
            put(uv, (d - nope) * r + j, row[size_t(j)]);  // [v, r]
        }
      }
      gemm::Weight wk{dt, gemm::Block::None, uk, r, nope, nope, nullptr};
      gemm::Weight wv{dt, gemm::Block::None, uv, v, r, r, nullptr};
      a.uk_t.push_back(wk);
      a.uv.push_back(wv);
    }
  }

  MlaWeights attention(const std::string& p) {
    MlaWeights a;
    const int64_t H = c.num_attention_heads, hid = c.hidden_size;
    if (c.q_lora_rank > 0) {
      a.q_a = linear(p + ".q_a_proj", c.q_lora_rank, hid);
      a.q_a_norm = vec(p + ".q_a_layernorm.weight", c.q_lora_rank);
      a.q_b = linear(p + ".q_b_proj", H * c.qk_head_dim(), c.q_lora_rank);
    } else {
      a.q_proj = linear(p + ".q_proj", H * c.qk_head_dim(), hid);
    }
    a.kv_a = linear(p + ".kv_a_proj_with_mqa", c.latent_dim(), hid);
    a.kv_a_norm = vec(p + ".kv_a_layernorm.weight", c.kv_lora_rank);
    a.kv_b = linear(p + ".kv_b_proj", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    a.o = linear(p + ".o_proj", hid, H * c.v_head_dim);
    absorb(a);
    return a;
  }
};

}  // namespace

std::unique_ptr<ModelWeights> ModelWeights::load(const ModelConfig& c, Checkpoint ckpt) {
  FF_CHECK(!c.attention_bias, "{}: attention_bias=true is not supported", ckpt.dir());
  auto mw = std::make_unique<ModelWeights>();
  mw->checkpoint = std::move(ckpt);
  Binder b{c, *mw, mw->checkpoint};
  const auto& ck = mw->checkpoint;
  const int64_t hid = c.hidden_size;
  mw->embed = &ck.get("model.embed_tokens.weight", {c.vocab_size, hid});
  FF_CHECK(mw->embed->dtype == DType::F32 || mw->embed->dtype == DType::BF16 ||
               mw->embed->dtype == DType::F16,
           "{}: tensor model.embed_tokens.weight has dtype {}, expected F32, BF16 or F16",
           *mw->embed->file, dtype_name(mw->embed->dtype));
  mw->final_norm = b.vec("model.norm.weight", hid);
  if (c.tie_word_embeddings && !ck.find("lm_head.weight"))
    mw->lm_head = b.linear("model.embed_tokens", c.vocab_size, hid);
  else
    mw->lm_head = b.linear("lm_head", c.vocab_size, hid);
  mw->layers.resize(size_t(c.num_hidden_layers));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}", l);
    LayerWeights& L = mw->layers[size_t(l)];
    L.attn_norm = b.vec(p + ".input_layernorm.weight", hid);
    L.ffn_norm = b.vec(p + ".post_attention_layernorm.weight", hid);
    L.attn = b.attention(p + ".self_attn");
    L.is_moe = c.is_moe_layer(l);
    if (!L.is_moe) {
      L.mlp = b.mlp(p + ".mlp", hid, c.intermediate_size);
      continue;
    }
    MoeWeights& m = L.moe;
    m.router = b.linear(p + ".mlp.gate", c.n_routed_experts, hid);
    if (c.topk_method == TopkMethod::NoauxTc)
      m.score_bias = b.vec(p + ".mlp.gate.e_score_correction_bias", c.n_routed_experts);
    for (int e = 0; e < c.n_routed_experts; ++e)
      m.experts.push_back(
          b.mlp(fmt::format("{}.mlp.experts.{}", p, e), hid, c.moe_intermediate_size));
    if (c.n_shared_experts > 0) {
      m.has_shared = true;
      m.shared = b.mlp(p + ".mlp.shared_experts", hid,
                       int64_t(c.moe_intermediate_size) * c.n_shared_experts);
    }
  }
  return mw;
}

void ModelWeights::embed_row(int32_t token, float* out) const {
  const int64_t hid = embed->shape[1];
  widen_to_f32(embed->data + size_t(token) * size_t(hid) * dtype_size(embed->dtype), embed->dtype,
               out, size_t(hid));
}

namespace {
size_t stored_bytes(const gemm::Weight& w) {
  return w.data ? size_t(gemm::weight_bytes(w)) : 0;
}
size_t mlp_bytes(const MlpWeights& m) {
  return stored_bytes(m.gate) + stored_bytes(m.up) + stored_bytes(m.down);
}
}  // namespace

size_t ModelWeights::bytes_per_token_decode(const ModelConfig& c) const {
  size_t n = stored_bytes(lm_head);
  for (const auto& L : layers) {
    const auto& a = L.attn;
    n += stored_bytes(a.q_a) + stored_bytes(a.q_b) + stored_bytes(a.q_proj) + stored_bytes(a.kv_a) +
         stored_bytes(a.o) + a.absorbed_storage.size();
    if (!L.is_moe) {
      n += mlp_bytes(L.mlp);
    } else {
      n += stored_bytes(L.moe.router);
      if (L.moe.has_shared) n += mlp_bytes(L.moe.shared);
      if (!L.moe.experts.empty()) n += size_t(c.num_experts_per_tok) * mlp_bytes(L.moe.experts[0]);
    }
  }
  return n;
}

}  // namespace ff
