// MLA (multi-head latent attention) of DeepSeek-V2/V3.
//
// Shared by both forms: q = q_b(norm(q_a(h))) (or q_proj(h)) -> [heads, qk_nope | qk_rope];
// kv_a(h) -> [c_kv (kv_lora) | k_pe (rope)], c_kv normalized, k_pe and q_pe rotated; the token's
// [c_kv | k_pe] row goes to the paged cache.
// Prefill (several new tokens, compute-friendly): K_nope/V of every cached token are
// up-projected with kv_b, then ordinary causal attention per head over dims qk_nope+qk_rope.
// Decode (one new token, absorbed): q_nope is mapped into the latent space with W_UK^T, the
// scores are q_lat . c_kv + q_pe . k_pe over the cache rows directly, the latent output is mapped
// back with W_UV. Same math, reassociated; the decode form reads only the 576-value rows.
#include <cmath>
#include <limits>

#include "mla/mla.h"
#include "model/model.h"
#include "model/workspace.h"

namespace ff {

namespace {

// Numerically stable softmax over s[0..n) in place.
void softmax(float* s, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, s[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    s[i] = std::exp(s[i] - mx);
    sum += s[i];
  }
  const float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) s[i] *= inv;
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace

void Model::attention(int layer, const float* h, int64_t T, std::span<const Request> batch,
                      KVCache& cache, float* out) {
  const ModelConfig& c = config_;
  const MlaWeights& w = weights_->layers[size_t(layer)].attn;
  Workspace& ws = *ws_;
  const int64_t H = c.num_attention_heads, qk = c.qk_head_dim(), nope = c.qk_nope_head_dim,
                r = c.kv_lora_rank, lat = c.latent_dim(), hid = c.hidden_size;

  float* q = Workspace::get(ws.q, size_t(T * H * qk));
  if (c.q_lora_rank > 0) {
    float* qa = Workspace::get(ws.qa, size_t(T * c.q_lora_rank));
    gemm::linear(h, T, hid, w.q_a, qa, c.q_lora_rank);
    rms_norm(qa, T, c.q_lora_rank, c.q_lora_rank, w.q_a_norm.data(), 1e-6);
    gemm::linear(qa, T, c.q_lora_rank, w.q_b, q, H * qk);
  } else {
    gemm::linear(h, T, hid, w.q_proj, q, H * qk);
  }
  float* kva = Workspace::get(ws.kva, size_t(T * lat));
  gemm::linear(h, T, hid, w.kv_a, kva, lat);
  rms_norm(kva, T, r, lat, w.kv_a_norm.data(), 1e-6);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t pos = ws.pos[size_t(t)];
    rope_.apply_n(q + t * H * qk + nope, int(H), qk, pos);
    rope_.apply(kva + t * lat + r, pos);
  }
  // Append the new latents to the cache.
  {
    int64_t row = 0;
    for (const Request& req : batch)
      for (size_t i = 0; i < req.tokens.size(); ++i, ++row)
        cache.write_row(layer, *req.seq, ws.pos[size_t(row)], kva + row * lat);
  }

  float* o = Workspace::get(ws.attn_o, size_t(T * H * c.v_head_dim));
  std::vector<int64_t> decode_rows;
  std::vector<const Request*> decode_reqs;
  int64_t row = 0;
  for (const Request& req : batch) {
    if (req.tokens.size() == 1) {
      decode_rows.push_back(row);
      decode_reqs.push_back(&req);
    } else {
      attention_prefill(layer, req, row, cache);
    }
    row += int64_t(req.tokens.size());
  }
  if (!decode_rows.empty()) attention_decode(layer, decode_rows, decode_reqs, cache);
  gemm::linear(o, T, H * c.v_head_dim, w.o, out, hid);
}

void Model::attention_prefill(int layer, const Request& req, int64_t row0, KVCache& cache) {
  const ModelConfig& c = config_;
  const MlaWeights& w = weights_->layers[size_t(layer)].attn;
  Workspace& ws = *ws_;
  const int64_t H = c.num_attention_heads, qk = c.qk_head_dim(), nope = c.qk_nope_head_dim,
                rope = c.qk_rope_head_dim, r = c.kv_lora_rank, lat = c.latent_dim(),
                vd = c.v_head_dim;
  const int64_t n = int64_t(req.tokens.size());
  const int64_t L = req.seq->length + n;  // context including the new tokens
  const int64_t p0 = req.seq->length;

  float* lat_all = Workspace::get(ws.lat_all, size_t(L * lat));
  for (int64_t t = 0; t < L; ++t) cache.read_row(layer, *req.seq, t, lat_all + t * lat);
  float* kv = Workspace::get(ws.kv_up, size_t(L * H * (nope + vd)));
  gemm::linear(lat_all, L, lat, w.kv_b, kv, H * (nope + vd));

  const float* q = ws.q.data();
  float* o = ws.attn_o.data();
  const int threads = ThreadPool::global().size();
  float* scores_all = Workspace::get(ws.scores, size_t(threads) * size_t(L));
  const float scale = softmax_scale_;
  // One task per (head, query); scores buffer per thread chunk.
  ThreadPool::global().run([&](int tid) {
    const int64_t items = H * n;
    const int64_t b = items * tid / threads, e = items * (tid + 1) / threads;
    float* s = scores_all + size_t(tid) * size_t(L);
    for (int64_t it = b; it < e; ++it) {
      const int64_t hh = it / n, i = it % n;
      const float* qi = q + (row0 + i) * H * qk + hh * qk;
      const int64_t ctx = p0 + i + 1;  // causal: keys [0, p0 + i]
      for (int64_t t = 0; t < ctx; ++t) {
        const float* kt = kv + t * H * (nope + vd) + hh * (nope + vd);
        s[t] = (dot(qi, kt, nope) + dot(qi + nope, lat_all + t * lat + r, rope)) * scale;
      }
      softmax(s, ctx);
      float* oi = o + (row0 + i) * H * vd + hh * vd;
      for (int64_t d = 0; d < vd; ++d) oi[d] = 0;
      for (int64_t t = 0; t < ctx; ++t) {
        const float* vt = kv + t * H * (nope + vd) + hh * (nope + vd) + nope;
        const float p = s[t];
        for (int64_t d = 0; d < vd; ++d) oi[d] += p * vt[d];
      }
    }
  });
}

void Model::attention_decode(int layer, std::span<const int64_t> rows,
                             std::span<const Request* const> reqs, KVCache& cache) {
  const ModelConfig& c = config_;
  const MlaWeights& w = weights_->layers[size_t(layer)].attn;
  Workspace& ws = *ws_;
  const int64_t H = c.num_attention_heads, qk = c.qk_head_dim(), nope = c.qk_nope_head_dim,
                rope = c.qk_rope_head_dim, r = c.kv_lora_rank, lat = c.latent_dim(),
                vd = c.v_head_dim;
  const int64_t D = int64_t(rows.size());

  // Gather the decode rows' queries and map q_nope into the latent space, head by head.
  float* qd = Workspace::get(ws.qd, size_t(D * H * qk));
  for (int64_t d = 0; d < D; ++d)
    std::memcpy(qd + d * H * qk, ws.q.data() + rows[size_t(d)] * H * qk, size_t(H * qk) * 4);
  float* q_lat = Workspace::get(ws.q_lat, size_t(D * H * r));
  for (int64_t hh = 0; hh < H; ++hh)
    gemm::linear(qd + hh * qk, D, H * qk, w.uk_t[size_t(hh)], q_lat + hh * r, H * r);

  // Attention over the latent cache: MQA with d = kv_lora + rope (576), dv = kv_lora (512), one
  // KV head shared by all query heads (src/mla). The block tables and the schedule are the same
  // for every layer of this step, so they are built once, at layer 0.
  if (layer == 0) {
    int64_t max_blocks = 1;
    for (const Request* req : reqs)
      max_blocks = std::max<int64_t>(max_blocks, int64_t(req->seq->block_table.size()));
    ws.block_table.assign(size_t(D * max_blocks), 0);
    ws.seqlens.resize(size_t(D));
    for (int64_t d = 0; d < D; ++d) {
      const KVSequence& seq = *reqs[size_t(d)]->seq;
      std::copy(seq.block_table.begin(), seq.block_table.end(),
                ws.block_table.begin() + d * max_blocks);
      ws.seqlens[size_t(d)] = int32_t(seq.length + 1);  // the new token's row is written
    }
    ws.block_table_cols = max_blocks;
    mla::MlaMetadataOptions mo;
    mo.head_dim = lat;
    mo.head_dim_v = r;
    ws.schedule = mla::get_mla_metadata(TensorView(ws.seqlens.data(), DType::I32, {D}), H, 1, mo);
  }
  const DType qt = cache.dtype();
  void* qm = nullptr;
  if (qt == DType::F32) {
    qm = Workspace::get(ws.q_mla, size_t(D * H * lat));
  } else {
    if (ws.q_mla16.size() < size_t(D * H * lat)) ws.q_mla16.resize(size_t(D * H * lat));
    qm = ws.q_mla16.data();
  }
  for (int64_t d = 0; d < D; ++d)
    for (int64_t hh = 0; hh < H; ++hh) {
      const float* ql = q_lat + d * H * r + hh * r;
      const float* qpe = qd + d * H * qk + hh * qk + nope;
      const int64_t base = (d * H + hh) * lat;
      if (qt == DType::F32) {
        float* dst = static_cast<float*>(qm) + base;
        std::memcpy(dst, ql, size_t(r) * 4);
        std::memcpy(dst + r, qpe, size_t(rope) * 4);
      } else {
        uint16_t* dst = static_cast<uint16_t*>(qm) + base;
        convert_f32_to_bf16(ql, dst, size_t(r));
        convert_f32_to_bf16(qpe, dst + r, size_t(rope));
      }
    }
  float* o_lat = Workspace::get(ws.o_lat, size_t(D * H * r));
  float* lse = Workspace::get(ws.lse, size_t(D * H));
  const TensorView q_view(qm, qt, {D, 1, H, lat});
  const TensorView kcache(cache.layer_base(layer), qt, {cache.num_pages(), kPageSize, 1, lat});
  const TensorView block_table(ws.block_table.data(), DType::I32, {D, ws.block_table_cols});
  const TensorView seqlens(ws.seqlens.data(), DType::I32, {D});
  mla::mla_decode_with_kvcache(q_view, kcache, block_table, seqlens, r, ws.schedule, softmax_scale_,
                               /*causal=*/false, TensorView(o_lat, DType::F32, {D, 1, H, r}),
                               TensorView(lse, DType::F32, {D, H, 1}));
  // Map the latent outputs back per head and scatter into the attention output rows.
  float* od = Workspace::get(ws.od, size_t(D * H * vd));
  for (int64_t hh = 0; hh < H; ++hh)
    gemm::linear(o_lat + hh * r, D, H * r, w.uv[size_t(hh)], od + hh * vd, H * vd);
  for (int64_t d = 0; d < D; ++d)
    std::memcpy(ws.attn_o.data() + rows[size_t(d)] * H * vd, od + d * H * vd, size_t(H * vd) * 4);
}

}  // namespace ff
