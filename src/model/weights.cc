#include "model/weights.h"

#include <fmt/format.h>

#include <cmath>

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

// Element idx of an F32 or BF16 array at base (derived matrices the weights own; BF16 rounds).
void put_value(DType dt, uint8_t* base, int64_t idx, float x) {
  if (dt == DType::F32) {
    std::memcpy(base + 4 * idx, &x, 4);
  } else {
    const uint16_t h = f32_to_bf16(x);
    std::memcpy(base + 2 * idx, &h, 2);
  }
}

struct Binder {
  const ModelConfig& c;
  ModelWeights& mw;
  const Checkpoint& ck;
  Quantize quantize = Quantize::None;

  // The weight quantized as `quantize` asks (see weights.h), or w itself.
  gemm::Weight quantized(const gemm::Weight& w) {
    if (quantize == Quantize::None || w.block != gemm::Block::None) return w;
    if (quantize == Quantize::Fp8) {
      if (w.dtype == DType::F8_E4M3) return w;
      return to_fp8(w);
    }
    if (w.k % 32 != 0) return w;
    const bool q4 = quantize == Quantize::Q4 && w.k % 256 == 0;
    const gemm::GgufType type = q4 ? gemm::GgufType::Q4_K : gemm::GgufType::Q8_0;
    const int64_t rb = gemm::row_bytes(type, w.k);
    std::vector<uint8_t>& out = mw.owned_bytes.emplace_back(size_t(w.n * rb));
    parallel_for(w.n, [&](int64_t b, int64_t e) {
      std::vector<float> row(size_t(w.k));
      for (int64_t r = b; r < e; ++r) {
        gemm::dequantize_row(w, r, row.data());
        if (q4)
          gemm::quantize_q4_k(row.data(), w.k, out.data() + r * rb);
        else
          gemm::quantize_q8_0(row.data(), w.k, out.data() + r * rb);
      }
    });
    gemm::Weight q;
    q.block = *gemm::block_of(type);
    q.data = out.data();
    q.n = w.n;
    q.k = q.ld = w.k;
    return q;
  }

  gemm::Weight to_fp8(const gemm::Weight& w) {
    const int64_t B = gemm::kFp8Block, sn = (w.n + B - 1) / B, sk = (w.k + B - 1) / B;
    std::vector<uint8_t>& data = mw.owned_bytes.emplace_back(size_t(w.n * w.k));
    std::vector<float>& scales = mw.owned_scales.emplace_back(size_t(sn * sk));
    parallel_for(sn, [&](int64_t b, int64_t e) {
      std::vector<float> panel(size_t(B * w.k));
      for (int64_t p = b; p < e; ++p) {
        const int64_t r0 = p * B, rows = std::min(B, w.n - r0);
        for (int64_t r = 0; r < rows; ++r) gemm::dequantize_row(w, r0 + r, panel.data() + r * w.k);
        gemm::quantize_per_block(panel.data(), rows, w.k, w.k, data.data() + r0 * w.k,
                                 scales.data() + p * sk);
      }
    });
    gemm::Weight q;
    q.dtype = DType::F8_E4M3;
    q.data = data.data();
    q.n = w.n;
    q.k = q.ld = w.k;
    q.scale_inv = scales.data();
    return q;
  }

  std::vector<float> vec(const std::string& name, int64_t n) {
    const TensorInfo& t = ck.get(name, {n});
    std::vector<float> out(static_cast<size_t>(n));
    if (t.gguf_type) {
      gemm::dequantize_gguf(*t.gguf_type, t.data, n, out.data());
      return out;
    }
    FF_CHECK(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
             "{}: tensor {} has dtype {}, expected F32, BF16 or F16", *t.file, name,
             dtype_name(t.dtype));
    widen_to_f32(t.data, t.dtype, out.data(), size_t(n));
    return out;
  }

  // A weight over rows x k values of tensor t starting at `data` (a GGUF block-quantized tensor
  // or a plain one). Block types run in their own format where gemm has a kernel for it;
  // otherwise the values are dequantized once into fp32 storage the weights own.
  gemm::Weight gguf_weight(const TensorInfo& t, const uint8_t* data, int64_t rows, int64_t k) {
    gemm::Weight w;
    w.n = rows;
    w.k = k;
    w.ld = k;
    w.data = data;
    if (!t.gguf_type) {
      w.dtype = t.dtype;
      return w;
    }
    const gemm::GgufType type = *t.gguf_type;
    FF_CHECK(k % gemm::gguf_block_size(type) == 0,
             "{}: tensor {} has rows of {} values, not a multiple of the {} block ({})", *t.file,
             t.name, k, gemm::gguf_type_name(type), gemm::gguf_block_size(type));
    const int64_t rb = gemm::row_bytes(type, k);
    if (const auto block = gemm::block_of(type)) {
      w.block = *block;
      return w;
    }
    if (type == gemm::GgufType::Q4_0 || type == gemm::GgufType::Q5_0) {
      // x = d * q with q in [-8, 7] / [-16, 15] and an f16 d first in each 32-block: exactly a
      // Q8_0 block of the same d (what llama.cpp's Q4_K_M files hold where rows do not fit 256).
      const int64_t qrb = gemm::row_bytes(gemm::GgufType::Q8_0, k);
      std::vector<uint8_t>& out = mw.owned_bytes.emplace_back(size_t(rows * qrb));
      parallel_for(rows, [&](int64_t b, int64_t e) {
        std::vector<float> row(static_cast<size_t>(k));
        for (int64_t r = b; r < e; ++r) {
          gemm::dequantize_gguf(type, data + r * rb, k, row.data());
          to_q8_0(t, data + r * rb, gemm::gguf_type_size(type), row.data(), k,
                  out.data() + r * qrb);
        }
      });
      w.block = gemm::Block::Q8_0;
      w.data = out.data();
      return w;
    }
    std::vector<float>& out = mw.owned_f32.emplace_back(size_t(rows * k));
    for (int64_t r = 0; r < rows; ++r)
      gemm::dequantize_gguf(type, data + r * rb, k, out.data() + r * k);
    w.dtype = DType::F32;
    w.data = out.data();
    return w;
  }

  // One row of a 32-block format whose values are d * q (f16 d first in each block of
  // `block_bytes`, integer |q| <= 127): the same d and q as Q8_0 blocks. `x` holds the row's
  // values (exact products, so x / d gives q back exactly).
  static void to_q8_0(const TensorInfo& t, const uint8_t* src, int64_t block_bytes, const float* x,
                      int64_t k, uint8_t* dst) {
    for (int64_t b = 0; b < k / 32; ++b, src += block_bytes, dst += 34) {
      uint16_t dh;
      std::memcpy(&dh, src, 2);
      const float d = f16_to_f32(dh);
      FF_CHECK(std::isfinite(d), "{}: tensor {} has a non-finite block scale", *t.file, t.name);
      std::memcpy(dst, src, 2);
      for (int i = 0; i < 32; ++i) {
        const float q = d == 0.f ? 0.f : x[b * 32 + i] / d;
        dst[2 + i] = uint8_t(int8_t(q));
      }
    }
  }

  // A linear layer, quantized as `quantize` asks.
  gemm::Weight linear(const std::string& prefix, int64_t out, int64_t in) {
    return quantized(bind_linear(prefix, out, in));
  }

  // A linear layer in its checkpoint format.
  gemm::Weight bind_linear(const std::string& prefix, int64_t out, int64_t in) {
    const std::string name = prefix + ".weight";
    const TensorInfo& t = ck.get(name, {out, in});
    if (t.gguf_type) return gguf_weight(t, t.data, out, in);
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
    // uv[h] = W_UV(h) is rows h (nope + v) + nope .. + v of kv_b itself: a view of them where
    // kv_b is BF16, F16, F32 or GGUF blocks (exact, and no second copy: DeepSeek-V3 in BF16 keeps
    // 16 MiB a layer less). FP8's 128 x 128 scale blocks keep the fp32 copy.
    const bool uv_view = a.kv_b.dtype != DType::F8_E4M3 || a.kv_b.block != gemm::Block::None;
    // Exact storage for W_UK(h)^T (transposed, so blocks cannot be kept): BF16 stays BF16; F32,
    // F16, FP8 and blocks (whose values need fp32) use F32.
    const DType dt =
        a.kv_b.dtype == DType::BF16 && a.kv_b.block == gemm::Block::None ? DType::BF16 : DType::F32;
    const size_t es = dtype_size(dt);
    const int64_t per_head = nope + (uv_view ? 0 : v);
    a.absorbed_storage.resize(size_t(H) * size_t(per_head) * size_t(r) * es);
    uint8_t* base = a.absorbed_storage.data();
    std::vector<float> row(static_cast<size_t>(r));
    auto put = [&](uint8_t* dst, int64_t idx, float x) { put_value(dt, dst, idx, x); };
    const size_t kv_row_bytes =
        a.kv_b.block != gemm::Block::None
            ? size_t(gemm::row_bytes(gemm::block_gguf_type(a.kv_b.block), a.kv_b.ld))
            : size_t(a.kv_b.ld) * dtype_size(a.kv_b.dtype);
    for (int64_t h = 0; h < H; ++h) {
      uint8_t* uk = base + size_t(h) * size_t(per_head) * size_t(r) * es;
      uint8_t* uv = uk + size_t(nope) * size_t(r) * es;
      for (int64_t d = 0; d < nope + (uv_view ? 0 : v); ++d) {
        gemm::dequantize_row(a.kv_b, h * (nope + v) + d, row.data());
        for (int64_t j = 0; j < r; ++j) {
          if (d < nope)
            put(uk, j * nope + d, row[size_t(j)]);  // transpose: [r, nope]
          else
            put(uv, (d - nope) * r + j, row[size_t(j)]);  // [v, r]
        }
      }
      gemm::Weight wk{dt, gemm::Block::None, uk, r, nope, nope, nullptr, /*exact_x=*/true};
      gemm::Weight wv{dt, gemm::Block::None, uv, v, r, r, nullptr, /*exact_x=*/true};
      if (uv_view) {
        wv = a.kv_b;
        wv.data =
            static_cast<const uint8_t*>(a.kv_b.data) + size_t(h * (nope + v) + nope) * kv_row_bytes;
        wv.n = v;
      }
      a.uk_t.push_back(wk);
      a.uv.push_back(wv);
    }
  }

  // GGUF files store kv_b_proj split per head (llama.cpp's converter): k_b [H, kv_lora, nope]
  // holds W_UK(h)^T and v_b [H, v, kv_lora] holds W_UV(h), which are the absorbed decode weights
  // as they are. The prefill form needs kv_b itself; it is rebuilt from them exactly (BF16 when
  // both are BF16, else fp32) into absorbed_storage.
  void split_kv_b(MlaWeights& a, const std::string& p) {
    const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim,
                  r = c.kv_lora_rank;
    const TensorInfo& kb = ck.get(p + ".k_b_proj.weight", {H, r, nope});
    const TensorInfo& vb = ck.get(p + ".v_b_proj.weight", {H, v, r});
    const size_t kslab = kb.nbytes / size_t(H), vslab = vb.nbytes / size_t(H);
    for (int64_t h = 0; h < H; ++h) {
      a.uk_t.push_back(gguf_weight(kb, kb.data + size_t(h) * kslab, r, nope));
      a.uv.push_back(gguf_weight(vb, vb.data + size_t(h) * vslab, v, r));
    }
    const DType dt =
        !kb.gguf_type && !vb.gguf_type && kb.dtype == DType::BF16 && vb.dtype == DType::BF16
            ? DType::BF16
            : DType::F32;
    const size_t es = dtype_size(dt);
    a.absorbed_storage.resize(size_t(H) * size_t(nope + v) * size_t(r) * es);
    uint8_t* base = a.absorbed_storage.data();
    std::vector<float> row(size_t(std::max(r, nope)));
    auto put = [&](int64_t idx, float x) { put_value(dt, base, idx, x); };
    for (int64_t h = 0; h < H; ++h) {
      const int64_t row0 = h * (nope + v);
      for (int64_t j = 0; j < r; ++j) {  // row j of W_UK(h)^T is column j of rows row0..+nope
        gemm::dequantize_row(a.uk_t[size_t(h)], j, row.data());
        for (int64_t d = 0; d < nope; ++d) put((row0 + d) * r + j, row[size_t(d)]);
      }
      for (int64_t d = 0; d < v; ++d) {
        gemm::dequantize_row(a.uv[size_t(h)], d, row.data());
        for (int64_t j = 0; j < r; ++j) put((row0 + nope + d) * r + j, row[size_t(j)]);
      }
    }
    a.kv_b = gemm::Weight{};
    a.kv_b.dtype = dt;
    a.kv_b.data = base;
    a.kv_b.n = H * (nope + v);
    a.kv_b.k = a.kv_b.ld = r;
    a.kv_b.exact_x = true;  // as absorb's
    for (gemm::Weight& w : a.uk_t) w.exact_x = true;
    for (gemm::Weight& w : a.uv) w.exact_x = true;
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
    a.o = linear(p + ".o_proj", hid, H * c.v_head_dim);
    if (!ck.find(p + ".kv_b_proj.weight") && ck.find(p + ".k_b_proj.weight")) {
      split_kv_b(a, p);
      return a;
    }
    // Kept as stored: decode reads the absorbed matrices made from it, prefill reads it once.
    a.kv_b = bind_linear(p + ".kv_b_proj", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    // Prefill's kv_b and decode's absorbed form must round alike (gemm::Weight::exact_x).
    a.kv_b.exact_x = true;
    absorb(a);
    return a;
  }
};

}  // namespace

Quantize parse_quantize(const std::string& s) {
  if (s == "none" || s.empty()) return Quantize::None;
  if (s == "q8") return Quantize::Q8;
  if (s == "q4") return Quantize::Q4;
  if (s == "fp8") return Quantize::Fp8;
  fail("quantize: '{}' is not a format (none, q8, q4, fp8)", s);
}

const char* quantize_name(Quantize q) {
  switch (q) {
    case Quantize::Q8:
      return "q8";
    case Quantize::Q4:
      return "q4";
    case Quantize::Fp8:
      return "fp8";
    default:
      return "none";
  }
}

std::unique_ptr<ModelWeights> ModelWeights::load(const ModelConfig& c, Checkpoint ckpt,
                                                 Quantize quantize,
                                                 const std::function<bool(int, int)>& keep_expert) {
  FF_CHECK(!c.attention_bias, "{}: attention_bias=true is not supported", ckpt.dir());
  auto mw = std::make_unique<ModelWeights>();
  mw->checkpoint = std::move(ckpt);
  Binder b{c, *mw, mw->checkpoint, quantize};
  const auto& ck = mw->checkpoint;
  const int64_t hid = c.hidden_size;
  mw->embed = &ck.get("model.embed_tokens.weight", {c.vocab_size, hid});
  FF_CHECK(mw->embed->gguf_type || mw->embed->dtype == DType::F32 ||
               mw->embed->dtype == DType::BF16 || mw->embed->dtype == DType::F16,
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
    m.router = b.bind_linear(p + ".mlp.gate", c.n_routed_experts, hid);  // never quantized
    if (c.topk_method == TopkMethod::NoauxTc)
      m.score_bias = b.vec(p + ".mlp.gate.e_score_correction_bias", c.n_routed_experts);
    for (int e = 0; e < c.n_routed_experts; ++e)
      m.experts.push_back(
          !keep_expert || keep_expert(l, e)
              ? b.mlp(fmt::format("{}.mlp.experts.{}", p, e), hid, c.moe_intermediate_size)
              : MlpWeights{});
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
  if (embed->gguf_type) {
    const int64_t rb = gemm::row_bytes(*embed->gguf_type, hid);
    gemm::dequantize_gguf(*embed->gguf_type, embed->data + size_t(token) * size_t(rb), hid, out);
    return;
  }
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
         stored_bytes(a.o);
    for (size_t h = 0; h < a.uk_t.size(); ++h) n += stored_bytes(a.uk_t[h]) + stored_bytes(a.uv[h]);
    if (!L.is_moe) {
      n += mlp_bytes(L.mlp);
    } else {
      n += stored_bytes(L.moe.router);
      if (L.moe.has_shared) n += mlp_bytes(L.moe.shared);
      for (const MlpWeights& e : L.moe.experts)  // one expert's bytes (the first held here)
        if (e.gate.data) {
          n += size_t(c.num_experts_per_tok) * mlp_bytes(e);
          break;
        }
    }
  }
  return n;
}

}  // namespace ff
