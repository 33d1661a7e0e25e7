// Every backend of mla_decode_with_kvcache against the float64 reference, over a grid in the
// spirit of FlashMLA's tests: b in {1, 3, 16}, s_q in {1, 2, 4}, h_q in {16, 64, 128}, h_kv in
// {1, 2}, cache lengths including 0, 1, 63, 64, 65 and a few thousand, causal on/off, unused cache
// slots and block-table entries poisoned, non-contiguous q; dense, FP8-KV and sparse. The grid is
// sampled (each axis value appears, not every combination) to keep the suite to seconds.
#include "mla/cpu/kernels.h"
#include "mla/schedule.h"
#include "mla_test_util.h"

namespace ff::mla::test {
namespace {

// Every kernel this CPU can run for the spec (the dpbf16 one needs BF16 q and even dims).
std::vector<KernelId> kernels(const Spec& s) {
  std::vector<KernelId> v{KernelId::Ref};
  if (cpu_features().avx2_fma) v.push_back(KernelId::Avx2);
  if (cpu_features().avx512) v.push_back(KernelId::Avx512F32);
  if (cpu_features().avx512 && cpu_features().avx512_bf16 && (s.dtype == DType::BF16 || s.fp8) &&
      s.d % 2 == 0 && s.dv % 2 == 0)
    v.push_back(KernelId::Avx512Bf16);
  return v;
}

MlaSchedule schedule_for(const Problem& p) {
  const Spec& s = p.spec;
  MlaMetadataOptions opt;
  opt.num_threads = s.num_threads;
  opt.head_dim = s.d;
  opt.head_dim_v = s.dv;
  if (s.topk) return get_mla_sparse_metadata(s.b, s.s_q, s.h_q, s.topk, p.tl, opt);
  return get_mla_metadata(p.sl, s.s_q * s.h_q / s.h_kv, s.h_kv, opt);
}

struct Output {
  std::vector<float> out, lse;
};

Output run(const Problem& p, KernelId kid, MlaSchedule& sched) {
  const Spec& s = p.spec;
  const size_t oes = dtype_size(s.out_dtype);
  std::vector<uint8_t> out_buf(size_t(s.b * s.s_q * s.h_q * s.dv) * oes, 0xff);  // NaN-filled
  Output o;
  o.lse.assign(size_t(s.b * s.h_q * s.s_q), std::numeric_limits<float>::quiet_NaN());
  TensorView out(out_buf.data(), s.out_dtype, {s.b, s.s_q, s.h_q, s.dv});
  TensorView lse(o.lse.data(), DType::F32, {s.b, s.h_q, s.s_q});
  MlaDecodeOptions opt;
  opt.indices = p.idx;
  opt.topk_length = p.tl;
  opt.attn_sink = p.sk;
  mla_decode_with_kernel(kid, p.q, p.kcache, p.bt, p.sl, s.dv, sched, 0.f, s.causal, out, lse, opt);
  o.out.resize(size_t(out.numel()));
  for (size_t i = 0; i < o.out.size(); ++i)
    o.out[i] = load_as(s.out_dtype, out_buf.data() + i * oes);
  return o;
}

struct Tolerance {
  double out_abs, out_rel, out_cos, lse_abs, lse_rel;
};

Tolerance tolerance(const Spec& s, KernelId kid) {
  Tolerance t;
  if (kid == KernelId::Avx512Bf16) {
    // The dot-product kernel rounds the probabilities P to bf16 before P.V, as FlashMLA's
    // tensor-core kernel does, so FlashMLA's own tolerances apply, with the absolute part scaled
    // by 5 because our V values are 0.5 * randn where FlashMLA's are randn / 10 (a short row's
    // output is a few P * V terms, each off by up to 2^-9 relative). Q.K products of bf16 values
    // are exact in f32, so lse keeps FlashMLA's tight bound.
    t = {5 * 8e-4, 2.01 / 128, 5e-6, 1e-6, 8.01 / 65536};
  } else {
    // f32 arithmetic on the exact input values: the error is f32 accumulation over up to a few
    // thousand keys (~1e-7 * sqrt(n) relative) plus the 2e-7 relative error of the vector exp2.
    t = {1e-5, 1e-4, 1e-8, 1e-5, 1e-5};
  }
  // Output rounding: half an ulp of the output format, and its square in the cosine difference.
  if (s.out_dtype == DType::BF16) t.out_abs = 5e-3, t.out_rel = 2.01 / 256, t.out_cos = 1e-5;
  if (s.out_dtype == DType::F16) t.out_abs = 1e-4, t.out_rel = 2.01 / 2048, t.out_cos = 1e-6;
  return t;
}

void check_all_backends(const Spec& spec) {
  const Problem p = make_problem(spec);
  const Result ref = reference(p);
  for (KernelId kid : kernels(spec)) {
    SCOPED_TRACE(std::string(kernel_name(kid)) + " " + spec.name());
    MlaSchedule sched = schedule_for(p);
    const Output got = run(p, kid, sched);
    const Tolerance t = tolerance(spec, kid);
    expect_close(ref.out, got.out, t.out_abs, t.out_rel, t.out_cos, "out");
    expect_close(ref.lse, got.lse, t.lse_abs, t.lse_rel, 1.0, "lse");
  }
}

Spec dense(int64_t b, int64_t s_q, int64_t h_q, int64_t h_kv, std::vector<int32_t> lens,
           bool causal, DType dt = DType::BF16, int threads = 0) {
  Spec s;
  s.b = b, s.s_q = s_q, s.h_q = h_q, s.h_kv = h_kv, s.lens = std::move(lens), s.causal = causal;
  s.dtype = dt, s.num_threads = threads;
  s.seed = uint64_t(b * 1000003 + s_q * 1009 + h_q * 17 + h_kv + (causal ? 7 : 0));
  return s;
}

class MlaDense : public ::testing::TestWithParam<Spec> {};

TEST_P(MlaDense, MatchesFloat64Reference) {
  check_all_backends(GetParam());
}

std::vector<Spec> dense_grid() {
  std::vector<Spec> v;
  v.push_back(dense(1, 1, 16, 1, {3000}, false));
  v.push_back(dense(3, 2, 64, 1, {0, 65, 1}, true, DType::BF16, 3));
  v.push_back(dense(16, 1, 16, 2, {0, 1, 63, 64, 65, 127, 128, 129, 200, 1, 0, 64, 300, 31, 2, 90},
                    false, DType::BF16, 5));
  v.push_back(dense(3, 4, 128, 1, {63, 64, 700}, true));
  v.push_back(dense(1, 4, 64, 2, {2049}, true, DType::BF16, 7));
  v.push_back(dense(16, 2, 16, 1, {3, 0, 1, 2, 64, 65, 63, 100, 1, 5, 129, 64, 0, 2, 70, 40}, true,
                    DType::BF16, 4));
  v.push_back(dense(3, 1, 128, 2, {1, 129, 400}, false, DType::BF16, 2));
  // F16 and F32 caches (the model's exact path is F32).
  v.push_back(dense(3, 2, 16, 2, {4, 65, 700}, true, DType::F16, 3));
  v.push_back(dense(3, 1, 64, 1, {1, 64, 1000}, false, DType::F32));
  v.push_back(dense(16, 2, 16, 1, {0, 1, 63, 64, 65, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 2},
                    true, DType::F32, 6));
  // Generic dims: a tiny model's latent (kv_lora 40 + rope 16, dv 40), d = 512, and odd dims.
  Spec g = dense(3, 2, 16, 2, {0, 70, 130}, true, DType::F32, 2);
  g.d = 56, g.dv = 40;
  v.push_back(g);
  g.dtype = DType::BF16;
  v.push_back(g);
  Spec o = dense(3, 1, 16, 1, {5, 64, 129}, false, DType::F16);
  o.d = 41, o.dv = 17;
  v.push_back(o);
  o.dtype = DType::BF16, o.seed = 99;
  v.push_back(o);
  Spec k512 = dense(3, 1, 16, 1, {65, 130, 2}, false);
  k512.d = 512;
  v.push_back(k512);
  // Output in q's dtype.
  Spec bo = dense(3, 2, 64, 1, {1, 64, 300}, true);
  bo.out_dtype = DType::BF16;
  v.push_back(bo);
  Spec ho = dense(1, 1, 16, 1, {77}, false, DType::F16);
  ho.out_dtype = DType::F16;
  v.push_back(ho);
  // FP8 cache (V3.2 layout); the reference sees the dequantized cache, as in FlashMLA's tests.
  Spec f = dense(3, 2, 64, 1, {0, 65, 1500}, true, DType::BF16, 3);
  f.fp8 = true;
  v.push_back(f);
  f = dense(16, 1, 128, 1, {1, 63, 64, 65, 0, 200, 5, 7, 128, 129, 33, 64, 1, 2, 3, 150}, false,
            DType::BF16, 0);
  f.fp8 = true;
  v.push_back(f);
  return v;
}

std::string spec_name(const ::testing::TestParamInfo<Spec>& info) {
  return info.param.name();
}

INSTANTIATE_TEST_SUITE_P(Grid, MlaDense, ::testing::ValuesIn(dense_grid()), spec_name);

Spec sparse(int64_t b, int64_t s_q, int64_t h_q, int64_t topk, int64_t pool, bool fp8,
            std::vector<int32_t> topk_length, bool sink, int threads = 0) {
  Spec s;
  s.b = b, s.s_q = s_q, s.h_q = h_q, s.topk = topk, s.sparse_pool = pool, s.fp8 = fp8;
  s.use_topk_length = !topk_length.empty();
  s.lens = std::move(topk_length);
  s.sink = sink, s.num_threads = threads;
  s.seed = uint64_t(b * 31 + s_q * 7 + h_q + topk * 3 + pool);
  return s;
}

class MlaSparse : public ::testing::TestWithParam<Spec> {};

TEST_P(MlaSparse, MatchesFloat64Reference) {
  check_all_backends(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Grid, MlaSparse,
    ::testing::Values(sparse(3, 2, 64, 128, 512, true, {}, false, 3),
                      sparse(3, 1, 128, 600, 1024, true, {0, 300, 600}, true, 4),
                      sparse(1, 4, 64, 64, 100, true, {}, true),
                      sparse(16, 1, 16, 65, 200, false, {}, false, 5),
                      sparse(3, 2, 128, 200, 150, false, {200, 1, 64}, true, 2)),
    spec_name);

TEST(MlaDecode, DeterministicForAFixedSchedule) {
  const Problem p = make_problem(dense(3, 2, 64, 1, {100, 900, 33}, true, DType::BF16, 3));
  for (KernelId kid : kernels(p.spec)) {
    MlaSchedule sched = schedule_for(p);
    const Output a = run(p, kid, sched), b = run(p, kid, sched);
    EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4)) << kernel_name(kid);
    EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4)) << kernel_name(kid);
  }
}

TEST(MlaDecode, EmptyRowsGiveZeroAndInfiniteLse) {
  // s_q = 4 over a 2-token cache, causal: query tokens 0 and 1 see nothing.
  Spec s = dense(1, 4, 16, 1, {2}, true);
  const Problem p = make_problem(s);
  for (KernelId kid : kernels(s)) {
    MlaSchedule sched = schedule_for(p);
    const Output o = run(p, kid, sched);
    for (int64_t h = 0; h < 16; ++h) {
      EXPECT_EQ(o.lse[size_t(h * 4 + 0)], std::numeric_limits<float>::infinity());
      EXPECT_EQ(o.lse[size_t(h * 4 + 1)], std::numeric_limits<float>::infinity());
      EXPECT_TRUE(std::isfinite(o.lse[size_t(h * 4 + 2)]));
      for (int64_t j = 0; j < 512; ++j) EXPECT_EQ(o.out[size_t(h * 512 + j)], 0.f);
    }
  }
}

TEST(MlaDecode, PublicEntryMatchesItsKernel) {
  // mla_decode_with_kvcache dispatches to default_kernel(active_isa(), ...): same bits.
  const Problem p = make_problem(dense(3, 1, 16, 1, {10, 100, 1000}, false));
  MlaSchedule sched = schedule_for(p);
  const Output direct = run(p, default_kernel(active_isa(), DType::BF16, 576, 512), sched);
  std::vector<float> out(direct.out.size()), lse(direct.lse.size());
  mla_decode_with_kvcache(p.q, p.kcache, p.bt, p.sl, 512, sched, 0.f, false,
                          TensorView(out.data(), DType::F32, {3, 1, 16, 512}),
                          TensorView(lse.data(), DType::F32, {3, 16, 1}));
  EXPECT_EQ(0, std::memcmp(out.data(), direct.out.data(), out.size() * 4));
  EXPECT_EQ(0, std::memcmp(lse.data(), direct.lse.data(), lse.size() * 4));
}

TEST(MlaSchedule, SplitsWorkEvenlyAndCountsSplits) {
  std::vector<int32_t> lens{4096, 64, 0, 1000, 3000, 1};
  TensorView sl(lens.data(), DType::I32, {6});
  MlaMetadataOptions opt;
  opt.num_threads = 4;
  MlaSchedule s = get_mla_metadata(sl, 128, 1, opt);
  EXPECT_EQ(s.num_parts(), 4);
  const auto& ns = s.num_splits();
  ASSERT_EQ(ns.size(), 7u);
  EXPECT_EQ(ns[0], 0);
  // Total cost 64 + 1 + 0 + 16 + 47 + 1 blocks + 6 * 5 overhead = 159 -> 40 per part, so the
  // 64-block request must be split.
  EXPECT_GE(ns[1] - ns[0], 2);
  for (size_t i = 1; i < ns.size(); ++i) EXPECT_GE(ns[i] - ns[i - 1], 1);
  int64_t max_blocks = 0, total = 0;
  for (const auto& part : s.impl().parts) {
    int64_t blocks = 0;
    for (const auto& it : part) blocks += it.block1 - it.block0 + 5;
    max_blocks = std::max(max_blocks, blocks);
    total += blocks;
  }
  // A part overshoots its share by at most one request's overhead plus one block.
  EXPECT_LE(max_blocks, (total + 3) / 4 + 5 + 1);
}

}  // namespace
}  // namespace ff::mla::test
