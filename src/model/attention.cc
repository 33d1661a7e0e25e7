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
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/vec4.h"
#include "mla/mla.h"
#include "model/model.h"
#include "model/workspace.h"

namespace ff {

namespace {

// One causal score row in place: s[0..valid) = softmax(scale * s[0..valid)), s[valid..ctx) = 0
// (masked keys; the zeros let P V run over the block's whole key range). valid >= 1.
void softmax_row(float* s, int64_t valid, int64_t ctx, float scale) {
  // Four independent maxima so the compare-and-select chains overlap.
  const f4 lowest = f4{} - std::numeric_limits<float>::infinity();
  f4 m0 = lowest, m1 = lowest, m2 = lowest, m3 = lowest;
  int64_t t = 0;
  for (; t + 16 <= valid; t += 16) {
    const f4 a = load4(s + t), b = load4(s + t + 4), c = load4(s + t + 8), d = load4(s + t + 12);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
    m2 = c > m2 ? c : m2;
    m3 = d > m3 ? d : m3;
  }
  for (; t + 4 <= valid; t += 4) {
    const f4 a = load4(s + t);
    m0 = a > m0 ? a : m0;
  }
  m0 = m1 > m0 ? m1 : m0;
  m2 = m3 > m2 ? m3 : m2;
  m0 = m2 > m0 ? m2 : m0;
  float mx = std::max(std::max(m0[0], m0[1]), std::max(m0[2], m0[3]));
  for (; t < valid; ++t) mx = std::max(mx, s[t]);
  // e^(scale * (s - max)): scale > 0, so the largest score still maps to e^0.
  double sum = 0;
  f4 partial = {};
  t = 0;
  for (; t + 4 <= valid; t += 4) {
    const f4 e = exp_nonpositive((load4(s + t) - mx) * scale);
    store4(s + t, e);
    partial += e;
    if (t % 64 == 60) {  // float partials go into the double every 64 keys
      sum += double((partial[0] + partial[1]) + (partial[2] + partial[3]));
      partial = f4{};
    }
  }
  sum += double((partial[0] + partial[1]) + (partial[2] + partial[3]));
  for (; t < valid; ++t) {
    f4 tail = {};
    tail[0] = (s[t] - mx) * scale;
    s[t] = exp_nonpositive(tail)[0];
    sum += s[t];
  }
  const float inv = float(1.0 / sum);
  t = 0;
  for (; t + 4 <= valid; t += 4) store4(s + t, load4(s + t) * inv);
  for (; t < valid; ++t) s[t] *= inv;
  for (; t < ctx; ++t) s[t] = 0.f;
}

// Query rows per block of the prefill attention: large enough for gemm::linear's packed
// (prefill) path, small enough that the causal upper triangle it computes and discards stays a
// small fraction of the work.
constexpr int64_t kQueryBlock = 64;
// Floats of per-head scratch (K, V^T and a block of scores) to aim for; heads are processed in
// groups that fit, so a long context or many heads do not multiply the memory.
constexpr int64_t kHeadGroupFloats = int64_t(8) << 20;

}  // namespace

void Model::attention(int layer, const float* h, int64_t T, std::span<const Request> batch,
                      KVCache& cache, float* out) {
  const ModelConfig& c = config_;
  const MlaWeights& w = weights_->layers[size_t(layer)].attn;
  Workspace& ws = *ws_;
  const int64_t H = c.num_attention_heads, qk = c.qk_head_dim(), nope = c.qk_nope_head_dim,
                r = c.kv_lora_rank, lat = c.latent_dim(), hid = c.hidden_size;

  profile::Scope prof_in("attn.in_proj");
  // The two products of h (q_a or q_proj, and kv_a) run as one linear_batch.
  float* q = Workspace::get(ws.q, size_t(T * H * qk));
  float* kva = Workspace::get(ws.kva, size_t(T * lat));
  if (c.q_lora_rank > 0) {
    float* qa = Workspace::get(ws.qa, size_t(T * c.q_lora_rank));
    const gemm::LinearProblem from_h[2] = {{h, T, hid, &w.q_a, qa, c.q_lora_rank},
                                           {h, T, hid, &w.kv_a, kva, lat}};
    gemm::linear_batch(from_h);
    rms_norm(qa, T, c.q_lora_rank, c.q_lora_rank, w.q_a_norm.data(), 1e-6);
    gemm::linear(qa, T, c.q_lora_rank, w.q_b, q, H * qk);
  } else {
    const gemm::LinearProblem from_h[2] = {{h, T, hid, &w.q_proj, q, H * qk},
                                           {h, T, hid, &w.kv_a, kva, lat}};
    gemm::linear_batch(from_h);
  }
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

  prof_in.stop();

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
  profile::Scope prof_o("attn.o_proj");
  gemm::linear(o, T, H * c.v_head_dim, w.o, out, hid);
}

void Model::attention_prefill(int layer, const Request& req, int64_t row0, KVCache& cache) {
  const ModelConfig& c = config_;
  const MlaWeights& w = weights_->layers[size_t(layer)].attn;
  Workspace& ws = *ws_;
  const int64_t H = c.num_attention_heads, qk = c.qk_head_dim(), nope = c.qk_nope_head_dim,
                rope = c.qk_rope_head_dim, r = c.kv_lora_rank, lat = c.latent_dim(),
                vd = c.v_head_dim;
  profile::Scope prof("attn.prefill");
  const int64_t n = int64_t(req.tokens.size());
  const int64_t L = req.seq->length + n;  // context including the new tokens
  const int64_t p0 = req.seq->length;

  float* lat_all = Workspace::get(ws.lat_all, size_t(L * lat));
  for (int64_t t = 0; t < L; ++t) cache.read_row(layer, *req.seq, t, lat_all + t * lat);
  float* kv = Workspace::get(ws.kv_up, size_t(L * H * (nope + vd)));
  gemm::linear(lat_all, L, lat, w.kv_b, kv, H * (nope + vd));

  // Per head h: S = Q_h K_h^T over the keys, row softmax with the causal mask, O_h = P V_h, all
  // through gemm's dispatched kernels. Layouts (floats):
  //   kh  [hg][L][dk]  K_h rows: [k_nope of kv_up | k_pe of the latent row] (dk = nope + rope)
  //   vt  [hg][vd][L]  V_h^T, so P V_h is linear(P, W = V_h^T)
  //   s   [hg][qb][ctx] one query block's scores, then probabilities
  // Heads go in groups of hg (all of them unless the context is long), queries in blocks of qb
  // rows; block [i0, i1) needs keys [0, p0 + i1) only, and query i sees keys [0, p0 + i].
  // The group's S products run as one gemm::linear_batch, as do its P V products; the softmax
  // rows of a block are one parallel_for. Masked keys get probability 0, so P V_h may run over
  // all of them.
  const int64_t dk = nope + rope, kvw = H * (nope + vd);
  const int64_t qb = std::min(n, kQueryBlock);
  const int64_t hg = std::clamp<int64_t>(kHeadGroupFloats / (L * (dk + vd + qb)), 1, H);
  float* kh = Workspace::get(ws.k_heads, size_t(hg * L * dk));
  float* vt = Workspace::get(ws.v_heads_t, size_t(hg * vd * L));
  float* s = Workspace::get(ws.scores, size_t(hg * qb * L));
  const float* q = ws.q.data();
  float* o = ws.attn_o.data();
  const float scale = softmax_scale_;

  for (int64_t h0 = 0; h0 < H; h0 += hg) {
    const int64_t g = std::min(hg, H - h0);
    // Gather K_h and V_h^T of the group's heads; the transpose goes 16 keys at a time so its
    // strided writes stay within a few cache lines per row of V^T.
    parallel_for(
        g * L,
        [&](int64_t b, int64_t e) {
          for (int64_t it = b; it < e; ++it) {
            const int64_t j = it / L, t = it % L;
            float* dst = kh + (j * L + t) * dk;
            std::memcpy(dst, kv + t * kvw + (h0 + j) * (nope + vd), size_t(nope) * 4);
            std::memcpy(dst + nope, lat_all + t * lat + r, size_t(rope) * 4);
          }
        },
        64);
    parallel_for(g * ((L + 15) / 16), [&](int64_t b, int64_t e) {
      const int64_t tiles = (L + 15) / 16;
      for (int64_t it = b; it < e; ++it) {
        const int64_t j = it / tiles, t0 = (it % tiles) * 16, t1 = std::min(L, t0 + 16);
        const float* v = kv + (h0 + j) * (nope + vd) + nope;
        float* dst = vt + j * vd * L;
        for (int64_t d = 0; d < vd; ++d)
          for (int64_t t = t0; t < t1; ++t) dst[d * L + t] = v[t * kvw + d];
      }
    });

    for (int64_t i0 = 0; i0 < n; i0 += qb) {
      const int64_t m = std::min(qb, n - i0), ctx = p0 + i0 + m;
      // S_h [m, ctx] = Q_h K_h^T (query rows are H * qk apart in ws.q), all g heads as one
      // linear_batch.
      ws.head_weights.resize(size_t(g));
      ws.head_problems.resize(size_t(g));
      for (int64_t j = 0; j < g; ++j) {
        ws.head_weights[size_t(j)] = {DType::F32, gemm::Block::None, kh + j * L * dk, ctx, dk, dk,
                                      nullptr};
        ws.head_problems[size_t(j)] = {q + (row0 + i0) * H * qk + (h0 + j) * qk,
                                       m,
                                       H * qk,
                                       &ws.head_weights[size_t(j)],
                                       s + j * qb * ctx,
                                       ctx};
      }
      gemm::linear_batch(ws.head_problems);
      parallel_for(
          g * m,
          [&](int64_t b, int64_t e) {
            for (int64_t it = b; it < e; ++it) {
              const int64_t j = it / m, i = it % m;
              softmax_row(s + j * qb * ctx + i * ctx, p0 + i0 + i + 1, ctx, scale);
            }
          },
          4);
      // O_h [m, vd] = P_h V_h, written straight into the head's columns of the output rows.
      for (int64_t j = 0; j < g; ++j) {
        ws.head_weights[size_t(j)] = {DType::F32, gemm::Block::None, vt + j * vd * L, vd, ctx, L,
                                      nullptr};
        ws.head_problems[size_t(j)] = {s + j * qb * ctx,
                                       m,
                                       ctx,
                                       &ws.head_weights[size_t(j)],
                                       o + (row0 + i0) * H * vd + (h0 + j) * vd,
                                       H * vd};
      }
      gemm::linear_batch(ws.head_problems);
    }
  }
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
  profile::Scope prof_uk("attn.decode.q_latent");
  float* qd = Workspace::get(ws.qd, size_t(D * H * qk));
  for (int64_t d = 0; d < D; ++d)
    std::memcpy(qd + d * H * qk, ws.q.data() + rows[size_t(d)] * H * qk, size_t(H * qk) * 4);
  float* q_lat = Workspace::get(ws.q_lat, size_t(D * H * r));
  ws.head_problems.resize(size_t(H));
  for (int64_t hh = 0; hh < H; ++hh)
    ws.head_problems[size_t(hh)] = {qd + hh * qk,   D,    H * qk, &w.uk_t[size_t(hh)],
                                    q_lat + hh * r, H * r};
  gemm::linear_batch(ws.head_problems);
  prof_uk.stop();

  // Attention over the latent cache: MQA with d = kv_lora + rope (576), dv = kv_lora (512), one
  // KV head shared by all query heads (src/mla). The block tables and the schedule are the same
  // for every layer of this step, so they are built once, at layer 0.
  profile::Scope prof_mla("attn.decode.mla");
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
  prof_mla.stop();
  // Map the latent outputs back per head and scatter into the attention output rows.
  profile::Scope prof_uv("attn.decode.out_latent");
  float* od = Workspace::get(ws.od, size_t(D * H * vd));
  ws.head_problems.resize(size_t(H));
  for (int64_t hh = 0; hh < H; ++hh)
    ws.head_problems[size_t(hh)] = {o_lat + hh * r, D,     H * r, &w.uv[size_t(hh)],
                                    od + hh * vd,   H * vd};
  gemm::linear_batch(ws.head_problems);
  for (int64_t d = 0; d < D; ++d)
    std::memcpy(ws.attn_o.data() + rows[size_t(d)] * H * vd, od + d * H * vd, size_t(H * vd) * 4);
}

}  // namespace ff
