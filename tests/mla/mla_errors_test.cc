// Bad input to the MLA API: each case throws ff::Error naming the problem, before any read out of
// bounds (these tests also run under ASan).
#include "mla_test_util.h"

namespace ff::mla::test {
namespace {

// A valid small dense problem whose pieces the tests break one at a time.
struct Fixture {
  Problem p;
  std::vector<float> out_buf, lse_buf;
  TensorView out, lse;
  MlaSchedule sched;

  explicit Fixture(Spec s = {}) {
    if (s.lens.empty()) s.lens = {70, 5};
    if (s.b != int64_t(s.lens.size())) s.b = int64_t(s.lens.size());
    p = make_problem(s);
    out_buf.resize(size_t(s.b * s.s_q * s.h_q * s.dv));
    lse_buf.resize(size_t(s.b * s.h_q * s.s_q));
    out = TensorView(out_buf.data(), DType::F32, {s.b, s.s_q, s.h_q, s.dv});
    lse = TensorView(lse_buf.data(), DType::F32, {s.b, s.h_q, s.s_q});
    MlaMetadataOptions opt;
    opt.head_dim = s.d, opt.head_dim_v = s.dv;
    sched = s.topk ? get_mla_sparse_metadata(s.b, s.s_q, s.h_q, s.topk, p.tl, opt)
                   : get_mla_metadata(p.sl, s.s_q * s.h_q / s.h_kv, s.h_kv, opt);
  }
  void run(const TensorView& q, const TensorView& kc, const TensorView& bt, const TensorView& sl,
           int64_t dv = 512, bool causal = false, MlaDecodeOptions opt = {}) {
    if (opt.indices.ndim == 0 && p.spec.topk) opt.indices = p.idx;
    mla_decode_with_kvcache(q, kc, bt, sl, dv, sched, 0.f, causal, out, lse, opt);
  }
  void run() { run(p.q, p.kcache, p.bt, p.sl); }
};

// Expects fn to throw ff::Error whose message contains `needle`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(MlaErrors, ValidCallPasses) {
  Fixture f;
  EXPECT_NO_THROW(f.run());
}

TEST(MlaErrors, BlockTableEntryOutOfRange) {
  Fixture f;
  f.p.block_table[1] = int32_t(f.p.num_blocks);  // page 1 of sequence 0 (70 tokens) is read
  expect_error([&] { f.run(); }, "block_table[0][1]");
  f.p.block_table[1] = -3;
  expect_error([&] { f.run(); }, "out of range");
}

TEST(MlaErrors, UnusedBlockTableEntriesAreNotRead) {
  Fixture f;  // entries past each length hold 2147480000 (make_problem poisons them)
  EXPECT_NO_THROW(f.run());
}

TEST(MlaErrors, SeqlenBeyondBlockTable) {
  Fixture f;
  TensorView bt = f.p.bt;
  bt.shape[1] = 1;  // 70 tokens need two pages
  expect_error([&] { f.run(f.p.q, f.p.kcache, bt, f.p.sl); }, "exceeds the block table");
}

TEST(MlaErrors, SeqlensChangedSinceSchedule) {
  Fixture f;
  f.p.seqlens[1] = 6;
  expect_error([&] { f.run(); }, "differs from the schedule");
}

TEST(MlaErrors, ScheduleForOtherShapes) {
  Fixture f;
  f.sched = get_mla_metadata(f.p.sl, 32, 1);
  expect_error([&] { f.run(); }, "schedule made for b = 2, 32 rows");
  MlaMetadataOptions opt;
  opt.head_dim = 64, opt.head_dim_v = 64;
  f.sched = get_mla_metadata(f.p.sl, 16, 1, opt);
  expect_error([&] { f.run(); }, "schedule made for d = 64");
}

TEST(MlaErrors, NegativeSeqlenRejectedBySchedule) {
  std::vector<int32_t> lens{3, -1};
  expect_error([&] { get_mla_metadata(TensorView(lens.data(), DType::I32, {2}), 16, 1); },
               "cache_seqlens[1] = -1");
}

TEST(MlaErrors, Shapes) {
  Fixture f;
  TensorView q3 = f.p.q;
  q3.ndim = 3;
  expect_error([&] { f.run(q3, f.p.kcache, f.p.bt, f.p.sl); }, "q must be");
  TensorView kc = f.p.kcache;
  kc.shape[1] = 32;
  expect_error([&] { f.run(f.p.q, kc, f.p.bt, f.p.sl); }, "page size");
  kc = f.p.kcache;
  kc.shape[3] = 575;
  expect_error([&] { f.run(f.p.q, kc, f.p.bt, f.p.sl); }, "head dim");
  expect_error([&] { f.run(f.p.q, f.p.kcache, f.p.bt, f.p.sl, 600); }, "head_dim_v");
  expect_error([&] { f.run(f.p.q, f.p.kcache, f.p.bt, f.p.sl, 256); }, "out must be");
  TensorView bt = f.p.bt;
  bt.dtype = DType::I64;
  expect_error([&] { f.run(f.p.q, f.p.kcache, bt, f.p.sl); }, "block_table must be I32");
  f.out.shape[3] = 511;
  expect_error([&] { f.run(); }, "out must be");
}

TEST(MlaErrors, HeadsNotDivisible) {
  Spec s;
  s.h_q = 16, s.h_kv = 2;
  Fixture f(s);
  TensorView kc = f.p.kcache;
  kc.shape[2] = 3;
  expect_error([&] { f.run(f.p.q, kc, f.p.bt, f.p.sl); }, "multiple of h_kv");
}

TEST(MlaErrors, Dtypes) {
  Fixture f;
  TensorView kc = f.p.kcache;
  kc.dtype = DType::F16;
  expect_error([&] { f.run(f.p.q, kc, f.p.bt, f.p.sl); }, "must equal q dtype");
  TensorView q = f.p.q;
  q.dtype = DType::I32;
  expect_error([&] { f.run(q, f.p.kcache, f.p.bt, f.p.sl); }, "q dtype");
  f.lse.dtype = DType::BF16;
  expect_error([&] { f.run(); }, "lse must be F32");
}

TEST(MlaErrors, Fp8LayoutChecked) {
  Spec s;
  s.fp8 = true;
  Fixture f(s);
  EXPECT_NO_THROW(f.run());
  TensorView kc = f.p.kcache;
  kc.shape[3] = 576;
  expect_error([&] { f.run(f.p.q, kc, f.p.bt, f.p.sl); }, "FP8 kcache must be");
}

TEST(MlaErrors, SparseIndices) {
  Spec s;
  s.topk = 16, s.sparse_pool = 64, s.lens = {0};  // lens unused (no topk_length)
  s.b = 1;
  Fixture f(s);
  EXPECT_NO_THROW(f.run());
  f.p.indices[3] = int32_t(f.p.num_blocks * 64);
  expect_error([&] { f.run(); }, "indices[0][0][3]");
  f.p.indices[3] = -2;
  expect_error([&] { f.run(); }, "out of range");
  f.p.indices[3] = -1;
  expect_error([&] { f.run(f.p.q, f.p.kcache, f.p.bt, f.p.sl, 512, true); }, "causal off");
}

TEST(MlaErrors, DenseScheduleForSparseCall) {
  Fixture f;
  std::vector<int32_t> ix(size_t(2 * 16), -1);
  MlaDecodeOptions opt;
  opt.indices = TensorView(ix.data(), DType::I32, {2, 1, 16});
  expect_error([&] { f.run(f.p.q, f.p.kcache, f.p.bt, f.p.sl, 512, false, opt); },
               "schedule is for dense");
}

TEST(MlaErrors, AttnSinkShape) {
  Fixture f;
  std::vector<float> sink(8);
  MlaDecodeOptions opt;
  opt.attn_sink = TensorView(sink.data(), DType::F32, {8});
  expect_error([&] { f.run(f.p.q, f.p.kcache, f.p.bt, f.p.sl, 512, false, opt); }, "attn_sink");
}

TEST(MlaErrors, BackendTheCpuLacks) {
  if (cpu_features().avx512) GTEST_SKIP() << "this CPU has AVX-512";
  Fixture f;
  expect_error(
      [&] {
        mla_decode_with_isa(Isa::Avx512, f.p.q, f.p.kcache, f.p.bt, f.p.sl, 512, f.sched, 0.f,
                            false, f.out, f.lse);
      },
      "AVX-512");
}

}  // namespace
}  // namespace ff::mla::test
