// libFuzzer entry point for the GGUF reader (docs/model.md, "Fuzzing the GGUF reader").
//
// One input is one GGUF image. It is parsed in memory; if that succeeds, everything a loader may
// touch is exercised: every metadata key through every typed getter, every tensor through its
// name, and the first and last elements of every tensor whose type has a dequantizer. A bad
// input must end in ff::Error and nothing else: a crash, a sanitizer report, any other exception
// (ff::InternalError included), a broken invariant of a parsed file (checked below, reported by
// abort) or a slow or huge input is a bug.
//
// The same function serves two programs: gguf_fuzz (clang, -fsanitize=fuzzer,address,undefined,
// -DFIREFLYER_FUZZ=ON) and gguf_fuzz_replay (any build; the GgufFuzzCorpus test replays
// tests/fixtures/gguf_fuzz/corpus/ with it).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "gemm/gemm.h"
#include "model/gguf_file.h"
#include "model/model.h"

namespace {

// Elements dequantized at each end of a tensor and in all for one input: enough to reach the
// last block of every tensor, small enough that one input takes well under a millisecond.
constexpr int64_t kEndElements = 1024;
constexpr int64_t kInputElements = 1 << 16;

// A broken invariant of a file that parsed: a bug even without a sanitizer.
#define GGUF_FUZZ_ASSERT(cond)                                                                     \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "gguf_fuzz: %s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                                \
    }                                                                                              \
  } while (0)

// Bad input is reported in one line that names the file ("fuzz.gguf: ..."), whatever bytes the
// file's keys and names hold.
void check_message(const ff::Error& e) {
  const std::string_view m = e.what();
  GGUF_FUZZ_ASSERT(m.starts_with("fuzz.gguf: ") && m.size() > 11);
  GGUF_FUZZ_ASSERT(m.find_first_of("\r\n") == std::string_view::npos);
}

// Runs f; an ff::Error is an accepted outcome (a getter asked for the wrong type), so it
// returns false.
template <typename F>
bool try_call(F&& f) {
  try {
    f();
    return true;
  } catch (const ff::Error& e) {
    check_message(e);
    return false;
  }
}

void walk_metadata(const ff::GgufFile& file) {
  for (const auto& entry : file.metadata()) {
    const std::string& key = entry.first;  // not a structured binding: clang 14 cannot capture one
    const ff::GgufValue& value = entry.second;
    GGUF_FUZZ_ASSERT(file.find(key) == &value);
    GGUF_FUZZ_ASSERT(value.is_array() || value.items.size() == 1);
    try_call([&] { file.get_u64(key); });
    try_call([&] { file.get_i64(key); });
    try_call([&] { file.get_u32(key); });
    try_call([&] { file.get_i32(key); });
    try_call([&] { file.get_f64(key); });
    try_call([&] { file.get_f32(key); });
    try_call([&] { file.get_bool(key); });
    try_call([&] { file.get_string(key); });
    // An array getter that accepts the value returns every element.
    std::vector<std::string> strings;
    if (try_call([&] { strings = file.get_string_array(key); }))
      GGUF_FUZZ_ASSERT(strings.size() == value.items.size());
    std::vector<int64_t> ints;
    if (try_call([&] { ints = file.get_i64_array(key); }))
      GGUF_FUZZ_ASSERT(ints.size() == value.items.size());
    std::vector<double> floats;
    if (try_call([&] { floats = file.get_f64_array(key); }))
      GGUF_FUZZ_ASSERT(floats.size() == value.items.size());
    ff::gguf_value_type_name(value.type);
    ff::gguf_value_type_name(value.elem_type);
  }
  // Keys the file does not have.
  GGUF_FUZZ_ASSERT(!try_call([&] { file.get_u32("fireflyer.fuzz.absent"); }));
  GGUF_FUZZ_ASSERT(!try_call([&] { file.get_string_array(""); }) || file.find(""));
}

// Dequantizes n elements at element `first` of t (n and first multiples of the block size).
void dequantize_part(const ff::GgufTensor& t, int64_t first, int64_t n, std::vector<float>& out) {
  const int64_t skip = ff::gemm::row_bytes(t.type, first);
  GGUF_FUZZ_ASSERT(uint64_t(skip + ff::gemm::row_bytes(t.type, n)) <= t.nbytes);
  out.assign(size_t(n), 0.0f);
  ff::gemm::dequantize_gguf(t.type, t.data + skip, n, out.data());
}

void walk_tensors(const ff::GgufFile& file, const uint8_t* data, size_t size) {
  int64_t budget = kInputElements;
  std::vector<float> out;
  for (const ff::GgufTensor& t : file.tensors()) {
    GGUF_FUZZ_ASSERT(file.find_tensor(t.name) == &t);
    GGUF_FUZZ_ASSERT(&file.get_tensor(t.name) == &t);
    // Inside the image, aligned, and as large as the dims say.
    GGUF_FUZZ_ASSERT(t.data == data + t.offset);
    GGUF_FUZZ_ASSERT(t.offset >= file.data_offset() && t.offset <= size &&
                     t.nbytes <= size - t.offset);
    GGUF_FUZZ_ASSERT((t.offset - file.data_offset()) % file.alignment() == 0);
    GGUF_FUZZ_ASSERT(t.dims.size() >= 1 && t.dims.size() <= 4);
    const int64_t numel = t.numel();
    GGUF_FUZZ_ASSERT(numel >= 1);
    GGUF_FUZZ_ASSERT(
        uint64_t(ff::gemm::row_bytes(t.type, t.dims[0])) * uint64_t(numel / t.dims[0]) == t.nbytes);
    t.dims_str();
    ff::gemm::gguf_type_name(t.type);
    if (!ff::gemm::gguf_dequantize_supported(t.type) || budget <= 0) continue;
    // Every block size (1, 32, 256) divides kEndElements, and dims[0] is a multiple of it.
    const int64_t n = std::min({numel, kEndElements, budget});
    const int64_t block = ff::gemm::gguf_block_size(t.type);
    const int64_t whole = n / block * block;
    if (whole == 0) continue;
    dequantize_part(t, 0, whole, out);
    dequantize_part(t, numel - whole, whole, out);
    budget -= 2 * whole;
  }
  GGUF_FUZZ_ASSERT(!try_call([&] { file.get_tensor("fireflyer.fuzz.absent"); }) ||
                   file.find_tensor("fireflyer.fuzz.absent"));
}

// What Model::load does with the metadata and the tensor directory before it binds weights: the
// deepseek2 config, then the tensors under HF names; a tensor found under an HF name is the
// file's (same data and size) and a missing one is reported by an ff::Error.
void walk_model(const ff::GgufFile& file) {
  ff::ModelConfig config;
  if (!try_call([&] { config = ff::gguf_model_config(file); })) return;
  GGUF_FUZZ_ASSERT(config.hidden_size > 0 && config.num_hidden_layers > 0 && config.vocab_size > 0);
  // The checkpoint shares the file; this one lives on the caller's stack.
  std::shared_ptr<const ff::GgufFile> shared(&file, [](const ff::GgufFile*) {});
  std::optional<ff::Checkpoint> ck;
  if (!try_call([&] { ck.emplace(ff::gguf_checkpoint(shared)); })) return;
  for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                           "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
                           "model.layers.0.mlp.experts.0.up_proj.weight"}) {
    const ff::TensorInfo* t = ck->find(name);
    if (t == nullptr) {
      GGUF_FUZZ_ASSERT(!try_call([&] { ck->get(name); }));
      continue;
    }
    GGUF_FUZZ_ASSERT(t->data >= file.tensors().front().data && t->nbytes <= file.file_size());
    try_call([&] { ck->get(name, {config.vocab_size, config.hidden_size}); });
  }
}

// The tokenizer a GGUF file's vocabulary describes (what `--model FILE.gguf` builds): when it
// loads, a short text must encode to ids inside the vocabulary and decode without error.
void walk_vocab(const ff::GgufFile& file) {
  ff::GgufVocab vocab;
  if (!try_call([&] { vocab = ff::engine::gguf_vocab(file); })) return;
  std::optional<ff::Tokenizer> tok;
  if (!try_call([&] { tok.emplace(ff::Tokenizer::from_gguf_vocab(vocab, file.path())); })) return;
  std::vector<int32_t> ids;
  GGUF_FUZZ_ASSERT(try_call([&] { ids = tok->encode("Hello, world 123 <｜User｜> ab\n", true); }));
  for (const int32_t id : ids) GGUF_FUZZ_ASSERT(id >= 0 && size_t(id) < tok->vocab_size());
  GGUF_FUZZ_ASSERT(try_call([&] { tok->decode(ids); }));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<ff::GgufFile> parsed;
  try {
    parsed.emplace(std::span<const uint8_t>(data, size), "fuzz.gguf");
  } catch (const ff::Error& e) {
    check_message(e);  // bad input, reported as it should be
    return 0;
  }
  // A file that parsed: from here on only the getters asked for another type may throw (inside
  // try_call); dequantizing a tensor of a supported type must not.
  const ff::GgufFile& file = *parsed;
  GGUF_FUZZ_ASSERT(file.file_size() == size);
  GGUF_FUZZ_ASSERT(file.version() == 2 || file.version() == 3);
  GGUF_FUZZ_ASSERT(file.alignment() != 0 && (file.alignment() & (file.alignment() - 1)) == 0);
  walk_metadata(file);
  walk_tensors(file, data, size);
  walk_model(file);
  walk_vocab(file);
  return 0;
}
