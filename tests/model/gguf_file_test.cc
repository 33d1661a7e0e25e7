// GgufFile against the gguf package's own reader (tests/fixtures/gguf/, made by
// tools/make_gguf_fixtures.py), then the typed getters, then corrupted copies: each gives one
// ff::Error naming the file, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <span>

#include "model/model.h"
#include "model_test_util.h"

namespace ff {
namespace {

using json = nlohmann::json;
using testing::TempDir;

std::string fixture_path() {
  return testing::fixture("gguf/tiny.gguf");
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

json manifest() {
  return json::parse(read_text_file(testing::fixture("gguf/manifest.json")));
}

std::string hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += {digits[p[i] >> 4], digits[p[i] & 15]};
  return s;
}

// The item as JSON, for comparison with the manifest's value.
json item_json(const GgufValue::Item& it) {
  return std::visit([](const auto& x) { return json(x); }, it);
}

TEST(GgufFile, MatchesReferenceReader) {
  const json m = manifest();
  const GgufFile f(fixture_path());
  EXPECT_EQ(f.version(), m["version"].get<uint32_t>());
  EXPECT_EQ(f.alignment(), m["alignment"].get<uint32_t>());
  EXPECT_EQ(f.data_offset(), m["data_offset"].get<uint64_t>());
  EXPECT_EQ(f.file_size(), m["file_size"].get<uint64_t>());

  ASSERT_EQ(f.metadata().size(), m["metadata"].size());
  for (const json& e : m["metadata"]) {
    const std::string key = e["key"];
    const GgufValue* v = f.find(key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(uint32_t(v->type), e["type"].get<uint32_t>()) << key;
    if (v->is_array()) {
      EXPECT_EQ(uint32_t(v->elem_type), e["elem_type"].get<uint32_t>()) << key;
      ASSERT_EQ(v->items.size(), e["value"].size()) << key;
      for (size_t i = 0; i < v->items.size(); ++i)
        EXPECT_EQ(item_json(v->items[i]), e["value"][i]) << key << "[" << i << "]";
    } else {
      ASSERT_EQ(v->items.size(), 1u) << key;
      EXPECT_EQ(item_json(v->items[0]), e["value"]) << key;
    }
  }

  ASSERT_EQ(f.tensors().size(), m["tensors"].size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const GgufTensor& t = f.tensors()[i];
    const json& e = m["tensors"][i];
    EXPECT_EQ(t.name, e["name"].get<std::string>());
    EXPECT_EQ(t.dims, e["dims"].get<std::vector<int64_t>>()) << t.name;
    EXPECT_EQ(uint32_t(t.type), e["type"].get<uint32_t>()) << t.name;
    EXPECT_EQ(t.offset, e["offset"].get<uint64_t>()) << t.name;
    EXPECT_EQ(t.nbytes, e["nbytes"].get<uint64_t>()) << t.name;
    EXPECT_EQ(hex(t.data, t.nbytes), e["hex"].get<std::string>()) << t.name;
    EXPECT_EQ(f.find_tensor(t.name), &t);
  }
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
  EXPECT_EQ(f.find("nope"), nullptr);
}

TEST(GgufFile, DequantizesQ8_0LikeTheReference) {
  const json q = manifest()["q8_0_dequantized"];
  const GgufFile f(fixture_path());
  const GgufTensor& t = f.get_tensor(q["name"]);
  ASSERT_EQ(t.type, gemm::GgufType::Q8_0);
  ASSERT_EQ(t.dims, (std::vector<int64_t>{64, 4}));
  std::vector<float> out(size_t(t.numel()));
  gemm::dequantize_gguf(t.type, t.data, t.numel(), out.data());
  const auto want = q["values"].get<std::vector<float>>();
  ASSERT_EQ(out.size(), want.size());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], want[i]) << i;
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GgufFile, TypedGetters) {
  const GgufFile f(fixture_path());
  EXPECT_EQ(f.get_string("general.architecture"), "deepseek2");
  EXPECT_EQ(f.get_u32("deepseek2.block_count"), 2u);
  EXPECT_EQ(f.get_i64("deepseek2.context_length"), 4096);
  EXPECT_EQ(f.get_i32("fireflyer.test.i32"), -7);
  EXPECT_EQ(f.get_u64("fireflyer.test.u64"), uint64_t(1) << 40);
  EXPECT_EQ(f.get_f32("deepseek2.attention.layer_norm_rms_epsilon"), 1e-6f);
  EXPECT_TRUE(f.get_bool("fireflyer.test.bool"));
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"<s>", "</s>", "hello", "wörld", ""}));
  EXPECT_EQ(f.get_i64_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{1, 3, 1, 1, -2}));

  const std::string p = fixture_path() + ": ";
  EXPECT_EQ(error_of([&] { f.get_u32("nope"); }), p + "missing metadata key nope");
  EXPECT_EQ(error_of([&] { f.get_u32("general.architecture"); }),
            p + "metadata key general.architecture is string, expected u32");
  EXPECT_EQ(error_of([&] { f.get_string("tokenizer.ggml.tokens"); }),
            p + "metadata key tokenizer.ggml.tokens is an array of string, expected string");
  EXPECT_EQ(error_of([&] { f.get_u32("fireflyer.test.u64"); }),
            p + "metadata key fireflyer.test.u64 = 1099511627776 does not fit u32");
  EXPECT_EQ(error_of([&] { f.get_u64("fireflyer.test.i32"); }),
            p + "metadata key fireflyer.test.i32 = -7 does not fit u64");
  EXPECT_EQ(error_of([&] { f.get_bool("deepseek2.block_count"); }),
            p + "metadata key deepseek2.block_count is u32, expected bool");
  EXPECT_EQ(error_of([&] { f.get_string_array("tokenizer.ggml.token_type"); }),
            p + "metadata key tokenizer.ggml.token_type is an array of i32, expected an array of "
                "string");
  EXPECT_EQ(error_of([&] { f.get_tensor("nope"); }), p + "missing tensor nope");
}

// The in-memory parse (what fuzz/gguf_fuzz.cc uses) sees what the mapped file shows, with the
// tensors pointing into the caller's bytes and the given name in place of the path.
TEST(GgufFile, ParsesFromMemoryLikeFromAFile) {
  const std::vector<uint8_t> bytes = read_bytes(fixture_path());
  const GgufFile disk(fixture_path());
  const GgufFile mem(std::span<const uint8_t>(bytes), "tiny in memory");
  EXPECT_EQ(mem.path(), "tiny in memory");
  EXPECT_EQ(mem.file_size(), bytes.size());
  EXPECT_EQ(mem.version(), disk.version());
  EXPECT_EQ(mem.alignment(), disk.alignment());
  EXPECT_EQ(mem.data_offset(), disk.data_offset());
  ASSERT_EQ(mem.metadata().size(), disk.metadata().size());
  for (const auto& [key, v] : disk.metadata()) {
    const GgufValue* m = mem.find(key);
    ASSERT_NE(m, nullptr) << key;
    EXPECT_EQ(m->type, v.type) << key;
    EXPECT_EQ(m->elem_type, v.elem_type) << key;
    EXPECT_EQ(m->items, v.items) << key;
  }
  ASSERT_EQ(mem.tensors().size(), disk.tensors().size());
  for (size_t i = 0; i < mem.tensors().size(); ++i) {
    const GgufTensor& a = mem.tensors()[i];
    const GgufTensor& b = disk.tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dims, b.dims) << a.name;
    EXPECT_EQ(a.type, b.type) << a.name;
    EXPECT_EQ(a.offset, b.offset) << a.name;
    EXPECT_EQ(a.nbytes, b.nbytes) << a.name;
    EXPECT_EQ(a.data, bytes.data() + a.offset) << a.name;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name;
  }
  EXPECT_EQ(error_of([&] { mem.get_u32("nope"); }), "tiny in memory: missing metadata key nope");
  EXPECT_EQ(error_of([&] { GgufFile f(std::span<const uint8_t>(bytes.data(), 3)); }),
            "<memory>: truncated GGUF file: magic needs 4 bytes at offset 0, file has 3");
  EXPECT_EQ(error_of([&] { GgufFile f(std::span<const uint8_t>{}); }),
            "<memory>: truncated GGUF file: magic needs 4 bytes at offset 0, file has 0");
}

// Corrupted copies of the fixture, written to a temp dir and opened.
class GgufCorrupt : public ::testing::Test {
 protected:
  void SetUp() override { bytes_ = read_bytes(fixture_path()); }

  // Offset just past the only occurrence of `s` in the header.
  size_t after(const std::string& s) const {
    auto it = std::search(bytes_.begin(), bytes_.end(), s.begin(), s.end());
    EXPECT_NE(it, bytes_.end()) << s;
    EXPECT_EQ(std::search(it + 1, bytes_.end(), s.begin(), s.end()), bytes_.end()) << s;
    return size_t(it - bytes_.begin()) + s.size();
  }
  template <typename T>
  void put(size_t at, T v) {
    ASSERT_LE(at + sizeof(T), bytes_.size());
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  template <typename T>
  T get(size_t at) const {
    T v;
    std::memcpy(&v, bytes_.data() + at, sizeof(T));
    return v;
  }
  // Tensor info fields of the 2-dim tensor `name`: n_dims, dims, type, offset.
  size_t n_dims_at(const std::string& name) const { return after(name); }
  size_t type_at(const std::string& name) const { return after(name) + 4 + 16; }
  size_t offset_at(const std::string& name) const { return after(name) + 4 + 16 + 4; }

  // Writes the bytes (the first n of them, if given) and returns the open error ("" if none).
  std::string open_error(size_t n = size_t(-1)) {
    path_ = dir_.path + "/bad.gguf";
    std::ofstream(path_, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes_.data()),
               std::streamsize(std::min(n, bytes_.size())));
    std::string msg = error_of([&] { GgufFile f(path_); });
    if (!msg.empty()) {
      EXPECT_EQ(msg.rfind(path_ + ": ", 0), 0u) << "message: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "message: " << msg;
    }
    return msg;
  }

  TempDir dir_;
  std::string path_;
  std::vector<uint8_t> bytes_;
};

TEST_F(GgufCorrupt, IntactCopyOpens) {
  EXPECT_EQ(open_error(), "");
}

TEST_F(GgufCorrupt, EmptyFileOfNoKeysOrTensorsOpens) {
  bytes_.resize(24);
  put<uint64_t>(8, 0);
  put<uint64_t>(16, 0);
  EXPECT_EQ(open_error(), "");
  const GgufFile f(path_);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.tensors().empty());
}

TEST_F(GgufCorrupt, TruncatedAnywhereFails) {
  const size_t size = bytes_.size();
  for (size_t n : {size_t(0), size_t(3), size_t(4), size_t(7), size_t(8), size_t(15), size_t(23),
                   size_t(24), size_t(30), size_t(100), size_t(400), size_t(700), size_t(900),
                   size_t(1000), size_t(1023), size_t(1025), size_t(2000), size - 1}) {
    EXPECT_NE(open_error(n), "") << "truncated to " << n << " bytes";
  }
  EXPECT_CONTAINS(open_error(3), "truncated GGUF file: magic needs 4 bytes");
  EXPECT_CONTAINS(open_error(size - 1),
                  "truncated GGUF file: tensor blk.1.attn_norm.weight needs bytes [2656, 3680)");
}

TEST_F(GgufCorrupt, BadMagic) {
  bytes_[0] ^= 0xff;
  EXPECT_CONTAINS(open_error(), "not a GGUF file");
}

TEST_F(GgufCorrupt, UnsupportedVersion) {
  put<uint32_t>(4, 99);
  EXPECT_CONTAINS(open_error(), "unsupported GGUF version 99 (expected 2 or 3)");
  put<uint32_t>(4, 2);
  EXPECT_EQ(open_error(), "");
}

TEST_F(GgufCorrupt, HugeCounts) {
  put<uint64_t>(8, uint64_t(1) << 60);
  EXPECT_CONTAINS(open_error(), "tensor count 1152921504606846976 is too large");
  SetUp();
  put<uint64_t>(16, ~uint64_t(0));
  EXPECT_CONTAINS(open_error(), "metadata count 18446744073709551615 is too large");
  SetUp();
  const size_t count_at = after("tokenizer.ggml.tokens") + 4 + 4;  // type, element type
  ASSERT_EQ(get<uint64_t>(count_at), 5u);
  put<uint64_t>(count_at, uint64_t(1) << 59);
  EXPECT_CONTAINS(open_error(), "metadata key tokenizer.ggml.tokens: array of");
}

// Parsed elements take ~40 bytes each, so the arrays of one file are bounded in all (2^24
// elements): a 16 MiB array of u8 is refused instead of taking 670 MB.
TEST(GgufLimits, ArraysOfMoreThan2To24ElementsInAllAreRefused) {
  auto image = [](uint64_t count) {
    std::vector<uint8_t> b;
    auto put = [&](const void* p, size_t n) {
      b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    };
    const uint32_t version = 3, arr = 9, u8 = 0;
    const uint64_t tensors = 0, kvs = 1, keylen = 3;
    put("GGUF", 4);
    put(&version, 4);
    put(&tensors, 8);
    put(&kvs, 8);
    put(&keylen, 8);
    put("big", 3);
    put(&arr, 4);
    put(&u8, 4);
    put(&count, 8);
    b.resize(b.size() + count, 7);
    return b;
  };
  const auto ok = image(uint64_t(1) << 24);
  EXPECT_EQ(GgufFile(std::span<const uint8_t>(ok), "ok.gguf").find("big")->items.size(), size_t(1)
                                                                                             << 24);
  const auto big = image((uint64_t(1) << 24) + 1);
  try {
    GgufFile f(std::span<const uint8_t>(big), "big.gguf");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("big.gguf: metadata key big: array of 16777217 elements"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(GgufCorrupt, StringPastTheEnd) {
  put<uint64_t>(24, uint64_t(1) << 40);  // the first key's length
  EXPECT_CONTAINS(open_error(),
                  "metadata key #0: string length 1099511627776 at offset 24 runs "
                  "past the end of the file");
  SetUp();
  const size_t at = after("tokenizer.ggml.model") + 4;  // the value's length
  ASSERT_EQ(get<uint64_t>(at), 4u);
  put<uint64_t>(at, ~uint64_t(0));
  EXPECT_CONTAINS(open_error(), "metadata key tokenizer.ggml.model: string length");
}

TEST_F(GgufCorrupt, UnknownValueTypes) {
  put<uint32_t>(after("fireflyer.test.bool"), 77);
  EXPECT_CONTAINS(open_error(), "metadata key fireflyer.test.bool: unknown value type 77");
  SetUp();
  put<uint32_t>(after("tokenizer.ggml.tokens") + 4, 13);
  EXPECT_CONTAINS(open_error(),
                  "metadata key tokenizer.ggml.tokens: unknown array element type 13");
  SetUp();
  put<uint32_t>(after("tokenizer.ggml.tokens") + 4, 9);
  EXPECT_CONTAINS(open_error(), "arrays of arrays are not supported");
  SetUp();
  put<uint8_t>(after("fireflyer.test.bool") + 4, 2);
  EXPECT_CONTAINS(open_error(), "metadata key fireflyer.test.bool: bool value 2 is not 0 or 1");
}

TEST_F(GgufCorrupt, DuplicateKey) {
  const size_t at = after("fireflyer.test.u64") - 3;
  std::memcpy(bytes_.data() + at, "i32", 3);
  EXPECT_CONTAINS(open_error(), "duplicate metadata key fireflyer.test.i32");
}

TEST_F(GgufCorrupt, BadAlignment) {
  const size_t at = after("general.alignment");
  ASSERT_EQ(get<uint32_t>(at), 4u);  // u32
  put<uint32_t>(at + 4, 48);
  EXPECT_CONTAINS(open_error(), "metadata key general.alignment = 48 is not a power of two");
  put<uint32_t>(at + 4, 0);
  EXPECT_CONTAINS(open_error(), "metadata key general.alignment = 0 is not a power of two");
  put<uint32_t>(at, 5);  // i32
  EXPECT_CONTAINS(open_error(), "metadata key general.alignment is i32, expected u32");
}

TEST_F(GgufCorrupt, UnknownTensorType) {
  put<uint32_t>(type_at("token_embd.weight"), 5);  // Q4_2, long removed from ggml
  EXPECT_CONTAINS(open_error(), "tensor token_embd.weight: unknown tensor type id 5");
}

TEST_F(GgufCorrupt, BadDims) {
  put<uint32_t>(n_dims_at("token_embd.weight"), 5);
  EXPECT_CONTAINS(open_error(), "tensor token_embd.weight: 5 dims (expected 1 to 4)");
  SetUp();
  put<uint32_t>(n_dims_at("token_embd.weight"), 0);
  EXPECT_CONTAINS(open_error(), "tensor token_embd.weight: 0 dims");
  SetUp();
  put<uint64_t>(n_dims_at("token_embd.weight") + 4 + 8, 0);
  EXPECT_CONTAINS(open_error(), "tensor token_embd.weight: dim 1 = 0 is zero");
  SetUp();
  put<uint64_t>(n_dims_at("token_embd.weight") + 4, uint64_t(1) << 62);
  put<uint64_t>(n_dims_at("token_embd.weight") + 4 + 8, 4);
  EXPECT_CONTAINS(open_error(),
                  "tensor token_embd.weight: dim 1 = 4 is zero or makes the element "
                  "count overflow");
  SetUp();
  put<uint64_t>(n_dims_at("token_embd.weight") + 4 + 8, uint64_t(1) << 40);
  EXPECT_CONTAINS(open_error(),
                  "tensor token_embd.weight: dims [64, 1099511627776] of F32 need "
                  "more bytes than the file has");
  SetUp();
  // Found by fuzz/gguf_fuzz.cc (corpus: seed-dim0-2e62-f32.gguf): one row of 2^62 F32
  // elements is 2^64 bytes, which overflowed (UB) to 0 and then divided by zero.
  put<uint64_t>(n_dims_at("token_embd.weight") + 4, uint64_t(1) << 62);
  put<uint64_t>(n_dims_at("token_embd.weight") + 4 + 8, 1);
  EXPECT_CONTAINS(open_error(),
                  "tensor token_embd.weight: dims [4611686018427387904, 1] of F32 need "
                  "more bytes than the file has");
  SetUp();
  put<uint64_t>(n_dims_at("blk.0.ffn_down.weight") + 4, 48);  // Q8_0 blocks are 32
  EXPECT_CONTAINS(open_error(),
                  "tensor blk.0.ffn_down.weight: dims [48, 4]: dims[0] is not a "
                  "multiple of the Q8_0 block size 32");
}

TEST_F(GgufCorrupt, BadOffsets) {
  const size_t at = offset_at("blk.0.attn_norm.weight");
  put<uint64_t>(at, get<uint64_t>(at) + 4);
  EXPECT_CONTAINS(open_error(),
                  "tensor blk.0.attn_norm.weight: data offset 1028 is not a "
                  "multiple of the alignment 32");
  put<uint64_t>(at, uint64_t(1) << 62);
  EXPECT_CONTAINS(open_error(), "truncated GGUF file: tensor blk.0.attn_norm.weight needs bytes");
  put<uint64_t>(at, 32);  // inside token_embd.weight's bytes [0, 1024)
  EXPECT_CONTAINS(open_error(),
                  "tensor token_embd.weight (bytes [1024, 2048)) overlaps tensor "
                  "blk.0.attn_norm.weight (from byte 1056)");
}

// Names are the file's bytes; messages show control bytes as \xNN and stay one line
// (fuzz/gguf_fuzz.cc checks this of every message it gets).
TEST_F(GgufCorrupt, ControlBytesInNamesKeepMessagesOneLine) {
  const size_t at = after("token_embd.weight") - std::strlen("embd.weight") - 1;
  ASSERT_EQ(bytes_[at], '_');
  bytes_[at] = '\n';
  put<uint32_t>(type_at("token\nembd.weight"), 5);
  EXPECT_CONTAINS(open_error(), "tensor token\\x0aembd.weight: unknown tensor type id 5");
  SetUp();
  const size_t key_at = after("fireflyer.test.u64") - 3;
  std::memcpy(bytes_.data() + key_at, "i\r\x7f", 3);
  EXPECT_EQ(open_error(), "");
  const GgufFile f(path_);
  EXPECT_EQ(f.get_u64("fireflyer.test.i\r\x7f"), uint64_t(1) << 40);
  EXPECT_EQ(error_of([&] { f.get_string("fireflyer.test.i\r\x7f"); }),
            path_ + ": metadata key fireflyer.test.i\\x0d\\x7f is u64, expected string");
  EXPECT_EQ(error_of([&] { f.get_tensor("a\tb"); }), path_ + ": missing tensor a\\x09b");
  EXPECT_EQ(error_of([&] { f.get_u32("wörld\n"); }), path_ + ": missing metadata key wörld\\x0a");
}

TEST_F(GgufCorrupt, DuplicateTensorName) {
  const size_t at = after("blk.1.attn_norm.weight") - std::strlen("blk.1.attn_norm.weight");
  bytes_[at + 4] = '0';
  EXPECT_CONTAINS(open_error(), "duplicate tensor blk.0.attn_norm.weight");
}

}  // namespace
}  // namespace ff
