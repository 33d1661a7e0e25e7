// Bit-exact checks of every conversion in src/core/dtype.h against PyTorch's.
//
// tests/fixtures/dtype/goldens.bin is written by tools/make_dtype_goldens.py (torch, CPU) and holds
// "streams" of unsigned bit patterns. All integers are little-endian:
//   magic "FFDTGLD1", u32 stream count, then per stream:
//     u8 name length + name; u8 element width (1, 2, 4); u32 element count;
//     u32 payload bytes + payload; u32 nondeterministic-entry count + (u32 index, u8 flags) each.
//   The payload is a list of records; `prev` starts at 0, arithmetic modulo 2^(8*width):
//     u8 0, u32 n, n literal values                  -> emits them (prev = the last)
//     u8 p (1..), u32 reps, p deltas                 -> reps times: prev += delta[k], emit prev
//   Streams: "in/<group>"   f32 input bits of a group (specials, fp8_ties, f16_values,
//                           bf16_values, f16_ties, bf16_ties, random);
//            "<t>/<group>"  torch's `.to(t)` of those inputs, t in e4m3, e5m2, f16, bf16;
//            "dec/<t>"      torch's `.to(float32)` of every code of format t, in code order.
//   Nondeterministic entries are NaN results whose bits depend on torch's code path (ATen CPU
//   capability, vector body vs tail); flags bit 0 says the sign was still the same on every path.
//   There the test asks for a NaN (with that sign); everywhere else for the exact bits.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/core.h"

namespace ff {
namespace {

struct Stream {
  int width = 0;
  std::vector<uint32_t> values;
  std::map<uint32_t, uint8_t> nondet;  // index -> flags
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  uint32_t get(int width) {
    FF_CHECK(pos_ + size_t(width) <= n_, "goldens.bin: truncated at byte {}", pos_);
    uint32_t v = 0;
    for (int i = 0; i < width; ++i) v |= uint32_t(p_[pos_ + i]) << (8 * i);
    pos_ += size_t(width);
    return v;
  }
  std::string bytes(size_t k) {
    FF_CHECK(pos_ + k <= n_, "goldens.bin: truncated at byte {}", pos_);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), k);
    pos_ += k;
    return s;
  }
  size_t pos() const { return pos_; }
  bool done() const { return pos_ == n_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

std::map<std::string, Stream> load_goldens() {
  const std::string path = std::string(FF_FIXTURES_DIR) + "/dtype/goldens.bin";
  MappedFile file(path);
  Reader r(file.data(), file.size());
  FF_CHECK(r.bytes(8) == "FFDTGLD1", "{}: bad magic", path);
  std::map<std::string, Stream> out;
  const uint32_t nstreams = r.get(4);
  for (uint32_t s = 0; s < nstreams; ++s) {
    const std::string name = r.bytes(r.get(1));
    Stream st;
    st.width = int(r.get(1));
    FF_CHECK(st.width == 1 || st.width == 2 || st.width == 4, "{}: width {}", name, st.width);
    const uint32_t count = r.get(4);
    const size_t end = r.get(4) + r.pos();
    const uint32_t mask = st.width == 4 ? 0xffffffffu : (1u << (8 * st.width)) - 1;
    uint32_t prev = 0;
    while (r.pos() < end) {
      const uint32_t kind = r.get(1);
      const uint32_t m = r.get(4);
      if (kind == 0) {
        for (uint32_t i = 0; i < m; ++i) st.values.push_back(prev = r.get(st.width));
      } else {
        std::vector<uint32_t> deltas(kind);
        for (auto& d : deltas) d = r.get(st.width);
        for (uint32_t k = 0; k < m; ++k)
          for (uint32_t d : deltas) st.values.push_back(prev = (prev + d) & mask);
      }
      FF_CHECK(st.values.size() <= count, "{}: more values than its count {}", name, count);
    }
    FF_CHECK(r.pos() == end && st.values.size() == count, "{}: payload does not decode", name);
    const uint32_t nd = r.get(4);
    for (uint32_t i = 0; i < nd; ++i) {
      const uint32_t idx = r.get(4);
      st.nondet[idx] = uint8_t(r.get(1));
    }
    out.emplace(name, std::move(st));
  }
  FF_CHECK(r.done(), "{}: trailing bytes", path);
  return out;
}

const std::map<std::string, Stream>& goldens() {
  static const auto g = load_goldens();
  return g;
}

const Stream& stream(const std::string& name) {
  auto it = goldens().find(name);
  if (it == goldens().end()) throw Error("goldens.bin: no stream " + name);
  return it->second;
}

const char* const kGroups[] = {"specials", "fp8_ties",  "f16_values", "bf16_values",
                               "f16_ties", "bf16_ties", "random"};

struct Format {
  const char* name;
  int width;
  bool (*is_nan)(uint32_t);
  uint32_t sign;
};

const Format kE4m3{"e4m3", 1, [](uint32_t v) { return (v & 0x7fu) == 0x7fu; }, 0x80u};
const Format kE5m2{"e5m2", 1, [](uint32_t v) { return (v & 0x7fu) > 0x7cu; }, 0x80u};
const Format kF16{"f16", 2, [](uint32_t v) { return (v & 0x7fffu) > 0x7c00u; }, 0x8000u};
const Format kBf16{"bf16", 2, [](uint32_t v) { return (v & 0x7fffu) > 0x7f80u; }, 0x8000u};
const Format kF32{"f32", 4, [](uint32_t v) { return (v & 0x7fffffffu) > 0x7f800000u; },
                  0x80000000u};

// Compares `got[i]` with the golden stream; returns the number of mismatches, printing the first.
template <typename Fn>
int64_t check_stream(const Stream& golden, const Format& out, const std::string& what,
                     const std::vector<uint32_t>& inputs, int in_width, Fn&& convert) {
  EXPECT_EQ(golden.width, out.width) << what;
  EXPECT_EQ(golden.values.size(), inputs.size()) << what;
  int64_t bad = 0;
  int64_t nondet_checked = 0;
  for (size_t i = 0; i < inputs.size() && i < golden.values.size(); ++i) {
    const uint32_t want = golden.values[i];
    const uint32_t got = convert(inputs[i]);
    bool ok;
    auto nd = golden.nondet.find(uint32_t(i));
    if (nd != golden.nondet.end()) {
      ++nondet_checked;
      ok = out.is_nan(got) && out.is_nan(want);
      if (nd->second & 1) ok = ok && (got & out.sign) == (want & out.sign);
    } else {
      ok = got == want;
    }
    if (!ok && ++bad <= 8) {
      ADD_FAILURE() << what << "[" << i << "]: input 0x" << std::hex << inputs[i] << " (width "
                    << std::dec << in_width << "): got 0x" << std::hex << got << ", torch 0x"
                    << want << (nd != golden.nondet.end() ? " (NaN bits vary in torch)" : "");
    }
  }
  EXPECT_EQ(nondet_checked, int64_t(golden.nondet.size())) << what;
  return bad;
}

template <typename Fn>
void check_encoding(const Format& out, Fn&& convert) {
  int64_t total = 0;
  for (const char* group : kGroups) {
    const Stream& in = stream(std::string("in/") + group);
    const std::string name = std::string(out.name) + "/" + group;
    ASSERT_EQ(in.width, 4) << name;
    total += int64_t(in.values.size());
    EXPECT_EQ(check_stream(stream(name), out, name, in.values, 4,
                           [&](uint32_t x) { return uint32_t(convert(f32_from_bits(x))); }),
              0)
        << name;
  }
  EXPECT_GT(total, 500000);
}

template <typename Fn>
void check_decoding(const Format& in, Fn&& convert) {
  const std::string name = std::string("dec/") + in.name;
  const Stream& g = stream(name);
  std::vector<uint32_t> codes(size_t(1) << (8 * in.width));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint32_t(i);
  EXPECT_EQ(check_stream(g, kF32, name, codes, in.width,
                         [&](uint32_t c) { return f32_bits(convert(c)); }),
            0);
}

TEST(DTypeGolden, FileHasEveryStream) {
  EXPECT_EQ(goldens().size(), 4u + 7u * 5u);
  for (const char* group : kGroups) {
    const size_t n = stream(std::string("in/") + group).values.size();
    EXPECT_GT(n, 0u) << group;
    for (const char* t : {"e4m3", "e5m2", "f16", "bf16"})
      EXPECT_EQ(stream(std::string(t) + "/" + group).values.size(), n) << t << "/" << group;
  }
  EXPECT_EQ(stream("in/f16_values").values.size(), 65536u);
  EXPECT_EQ(stream("in/bf16_values").values.size(), 65536u);
  EXPECT_GE(stream("in/random").values.size(), 100000u);
  EXPECT_EQ(stream("dec/e4m3").values.size(), 256u);
  EXPECT_EQ(stream("dec/e5m2").values.size(), 256u);
  EXPECT_EQ(stream("dec/f16").values.size(), 65536u);
  EXPECT_EQ(stream("dec/bf16").values.size(), 65536u);
  // The saturation thresholds are in the inputs.
  const auto& sp = stream("in/specials").values;
  for (float x : {448.f, 464.f, 480.f, 57344.f, 61440.f, 65536.f, 65504.f, 65520.f}) {
    EXPECT_NE(std::find(sp.begin(), sp.end(), f32_bits(x)), sp.end()) << x;
    EXPECT_NE(std::find(sp.begin(), sp.end(), f32_bits(-x)), sp.end()) << -x;
  }
}

// The fixture's own claims about PyTorch, spelled out (so a regenerated fixture that changed
// them would be noticed).
TEST(DTypeGolden, PyTorchSaturationAndNaNBehaviour) {
  const Stream& in = stream("in/specials");
  auto golden_of = [&](const char* t, float x) {
    const auto& v = in.values;
    const size_t i = size_t(std::find(v.begin(), v.end(), f32_bits(x)) - v.begin());
    EXPECT_LT(i, v.size()) << x;
    return stream(std::string(t) + "/specials").values.at(i);
  };
  EXPECT_EQ(golden_of("e4m3", 448.f), 0x7eu);
  EXPECT_EQ(golden_of("e4m3", 464.f), 0x7eu);  // tie -> even (448)
  // Saturating (pytorch/pytorch#178817): finite overflow and inf -> +-448, NaN -> NaN.
  EXPECT_EQ(golden_of("e4m3", 480.f), 0x7eu);
  EXPECT_EQ(golden_of("e4m3", -480.f), 0xfeu);
  EXPECT_EQ(golden_of("e4m3", INFINITY), 0x7eu);
  EXPECT_EQ(golden_of("e4m3", -INFINITY), 0xfeu);
  EXPECT_EQ(golden_of("e4m3", NAN), 0x7fu);
  EXPECT_EQ(golden_of("e5m2", 57344.f), 0x7bu);
  EXPECT_EQ(golden_of("e5m2", 61440.f), 0x7cu);  // tie -> even (inf)
  EXPECT_EQ(golden_of("e5m2", 65536.f), 0x7cu);
  EXPECT_EQ(golden_of("e5m2", -INFINITY), 0xfcu);
  EXPECT_EQ(golden_of("f16", 65504.f), 0x7bffu);
  EXPECT_EQ(golden_of("f16", 65520.f), 0x7c00u);
  EXPECT_EQ(stream("dec/e4m3").values[0x7f], 0x7ff00000u);
  EXPECT_EQ(stream("dec/e4m3").values[0xff], 0xfff00000u);
  EXPECT_EQ(stream("dec/e5m2").values[0x7d], 0x7fe00000u);
}

TEST(DTypeGolden, F32ToE4m3) {
  check_encoding(kE4m3, f32_to_e4m3);
}
TEST(DTypeGolden, F32ToE5m2) {
  check_encoding(kE5m2, f32_to_e5m2);
}
TEST(DTypeGolden, F32ToF16) {
  check_encoding(kF16, f32_to_f16);
}
TEST(DTypeGolden, F32ToBf16) {
  check_encoding(kBf16, f32_to_bf16);
}

TEST(DTypeGolden, E4m3ToF32) {
  check_decoding(kE4m3, [](uint32_t c) { return e4m3_to_f32(uint8_t(c)); });
  check_decoding(kE4m3, [](uint32_t c) { return e4m3_table()[c]; });
}
TEST(DTypeGolden, E5m2ToF32) {
  check_decoding(kE5m2, [](uint32_t c) { return e5m2_to_f32(uint8_t(c)); });
}
TEST(DTypeGolden, F16ToF32) {
  check_decoding(kF16, [](uint32_t c) { return f16_to_f32(uint16_t(c)); });
}
TEST(DTypeGolden, Bf16ToF32) {
  check_decoding(kBf16, [](uint32_t c) { return bf16_to_f32(uint16_t(c)); });
}

// The bulk API over the same goldens (whole groups at once, so any vector body is exercised).
template <typename T, typename Bulk>
void check_bulk_encoding(const Format& out, Bulk&& bulk) {
  for (const char* group : kGroups) {
    const Stream& in = stream(std::string("in/") + group);
    std::vector<float> x(in.values.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = f32_from_bits(in.values[i]);
    std::vector<T> y(x.size());
    bulk(x.data(), y.data(), x.size());
    std::vector<uint32_t> idx(x.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = uint32_t(i);
    const std::string name = std::string(out.name) + "/" + group;
    EXPECT_EQ(check_stream(stream(name), out, "bulk " + name, idx, 4,
                           [&](uint32_t i) { return uint32_t(y[i]); }),
              0);
  }
}

template <typename T, typename Bulk>
void check_bulk_decoding(const Format& in, Bulk&& bulk) {
  std::vector<T> codes(size_t(1) << (8 * in.width));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = T(i);
  std::vector<float> y(codes.size());
  bulk(codes.data(), y.data(), codes.size());
  std::vector<uint32_t> idx(codes.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = uint32_t(i);
  const std::string name = std::string("dec/") + in.name;
  EXPECT_EQ(check_stream(stream(name), kF32, "bulk " + name, idx, in.width,
                         [&](uint32_t i) { return f32_bits(y[i]); }),
            0);
}

TEST(DTypeGolden, BulkConversions) {
  check_bulk_encoding<uint8_t>(kE4m3, convert_f32_to_e4m3);
  check_bulk_encoding<uint8_t>(kE5m2, convert_f32_to_e5m2);
  check_bulk_encoding<uint16_t>(kF16, convert_f32_to_f16);
  check_bulk_encoding<uint16_t>(kBf16, convert_f32_to_bf16);
  check_bulk_decoding<uint8_t>(kE4m3, convert_e4m3_to_f32);
  check_bulk_decoding<uint8_t>(kE5m2, convert_e5m2_to_f32);
  check_bulk_decoding<uint16_t>(kF16, convert_f16_to_f32);
  check_bulk_decoding<uint16_t>(kBf16, convert_bf16_to_f32);
}

// The bulk API dispatches on active_isa(), which is fixed per process: run the bulk tests again
// in a child process for every backend this CPU has (FF_ISA forces it).
TEST(DTypeGolden, BulkConversionsUnderEveryIsa) {
  if (std::getenv("FF_ISA")) GTEST_SKIP() << "already a forced run";
  std::array<char, 4096> self{};
  const ssize_t len = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  ASSERT_GT(len, 0);
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (int(isa) > int(best_isa())) continue;
    const std::string cmd = std::string("FF_ISA=") + isa_name(isa) + " '" +
                            std::string(self.data(), size_t(len)) +
                            "' --gtest_filter=DTypeGolden.BulkConversions:"
                            "DType.BulkMatchesScalarAtEverySizeAndAlignment 2>&1";
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    const int status = ::pclose(p);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << isa_name(isa) << ":\n" << out;
    EXPECT_NE(out.find("[  PASSED  ] 2 tests"), std::string::npos) << isa_name(isa) << ":\n" << out;
  }
}

}  // namespace
}  // namespace ff
