// Tokenizers for the model paths Model::load accepts: an HF directory or a GGUF file.
#include "engine/engine.h"

namespace ff::engine {

GgufVocab gguf_vocab(const GgufFile& f) {
  GgufVocab v;
  v.model = f.get_string("tokenizer.ggml.model");
  v.pre = f.find("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
  v.tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (f.find("tokenizer.ggml.token_type")) {
    for (int64_t t : f.get_i64_array("tokenizer.ggml.token_type")) {
      FF_CHECK(t >= INT32_MIN && t <= INT32_MAX,
               "{}: tokenizer.ggml.token_type: value {} is out "
               "of range",
               f.path(), t);
      v.token_types.push_back(int32_t(t));
    }
  }
  if (f.find("tokenizer.ggml.merges")) v.merges = f.get_string_array("tokenizer.ggml.merges");
  auto id = [&](const char* k) -> int32_t {
    if (!f.find(k)) return -1;
    const uint64_t x = f.get_u64(k);
    FF_CHECK(x <= uint64_t(INT32_MAX), "{}: {} = {} is out of range", f.path(), k, x);
    return int32_t(x);
  };
  v.bos = id("tokenizer.ggml.bos_token_id");
  v.eos = id("tokenizer.ggml.eos_token_id");
  if (f.find("tokenizer.ggml.add_bos_token"))
    v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token");
  if (f.find("tokenizer.ggml.add_eos_token"))
    v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token");
  if (f.find("tokenizer.chat_template")) v.chat_template = f.get_string("tokenizer.chat_template");
  return v;
}

Tokenizer load_tokenizer(const std::string& model_path) {
  if (is_gguf_path(model_path)) {
    const GgufFile f(model_path);
    return Tokenizer::from_gguf_vocab(gguf_vocab(f), f.path());
  }
  return Tokenizer::from_dir(model_path);
}

}  // namespace ff::engine
