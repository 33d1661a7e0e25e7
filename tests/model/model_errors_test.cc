// Bad checkpoints give one ff::Error naming the file or tensor, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/model.h"
#include "model_test_util.h"

namespace ff {
namespace {

namespace fs = std::filesystem;
using testing::fixture;
using testing::RawTensor;
using testing::TempDir;

// Loads DIR and returns the error message ("" if it loaded).
std::string load_error(const std::string& dir) {
  try {
    Model::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

class ModelErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::fixture_exists("tiny-v3")) GTEST_SKIP() << "fixture tiny-v3 missing";
    tensors_ = testing::read_all(fixture("tiny-v3"));
    fs::copy_file(fixture("tiny-v3") + "/config.json", dir_.path + "/config.json");
  }
  void write(const std::map<std::string, RawTensor>& t) {
    testing::write_safetensors(dir_.path + "/model.safetensors", t);
  }
  TempDir dir_;
  std::map<std::string, RawTensor> tensors_;
};

TEST_F(ModelErrors, IntactCopyLoads) {
  write(tensors_);
  EXPECT_EQ(load_error(dir_.path), "");
}

TEST_F(ModelErrors, MissingDirectory) {
  const std::string msg = load_error(dir_.path + "/nope");
  EXPECT_CONTAINS(msg, dir_.path + "/nope");
  EXPECT_CONTAINS(msg, "no such file or directory");
}

TEST_F(ModelErrors, MissingConfig) {
  write(tensors_);
  fs::remove(dir_.path + "/config.json");
  EXPECT_CONTAINS(load_error(dir_.path), dir_.path + "/config.json: cannot open");
}

TEST_F(ModelErrors, MissingWeights) {
  EXPECT_CONTAINS(load_error(dir_.path), "no model.safetensors or model.safetensors.index.json");
}

TEST_F(ModelErrors, TruncatedSafetensors) {
  write(tensors_);
  const std::string f = dir_.path + "/model.safetensors";
  fs::resize_file(f, fs::file_size(f) / 2);
  const std::string msg = load_error(dir_.path);
  EXPECT_CONTAINS(msg, f);
  EXPECT_CONTAINS(msg, "truncated");
  fs::resize_file(f, 5);
  EXPECT_CONTAINS(load_error(dir_.path), "truncated");
}

TEST_F(ModelErrors, GarbageHeader) {
  std::ofstream(dir_.path + "/model.safetensors")
      << std::string("\x10\0\0\0\0\0\0\0{not json!!!}xx", 24);
  EXPECT_CONTAINS(load_error(dir_.path), "invalid safetensors header JSON");
}

TEST_F(ModelErrors, ShapeMismatch) {
  auto& t = tensors_["model.layers.0.self_attn.kv_b_proj.weight"];
  std::swap(t.shape[0], t.shape[1]);
  write(tensors_);
  const std::string msg = load_error(dir_.path);
  EXPECT_CONTAINS(msg, "tensor model.layers.0.self_attn.kv_b_proj.weight has shape");
  EXPECT_CONTAINS(msg, "expected");
}

TEST_F(ModelErrors, DtypeMismatch) {
  tensors_["model.layers.1.mlp.experts.2.down_proj.weight"].dtype = "I32";
  write(tensors_);
  const std::string msg = load_error(dir_.path);
  EXPECT_CONTAINS(msg, "model.layers.1.mlp.experts.2.down_proj.weight has dtype I32");
}

TEST_F(ModelErrors, UnknownDtype) {
  tensors_["model.norm.weight"].dtype = "F12";
  write(tensors_);
  EXPECT_CONTAINS(load_error(dir_.path), "tensor model.norm.weight: unknown dtype \"F12\"");
}

TEST_F(ModelErrors, MissingTensor) {
  tensors_.erase("model.layers.2.mlp.experts.3.up_proj.weight");
  write(tensors_);
  EXPECT_CONTAINS(load_error(dir_.path),
                  "missing tensor model.layers.2.mlp.experts.3.up_proj.weight");
}

TEST_F(ModelErrors, UnknownArchitecture) {
  write(tensors_);
  std::ofstream(dir_.path + "/config.json")
      << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 10})";
  const std::string msg = load_error(dir_.path);
  EXPECT_CONTAINS(msg, "config.json: unknown architecture");
  EXPECT_CONTAINS(msg, "LlamaForCausalLM");
}

TEST_F(ModelErrors, MalformedConfig) {
  write(tensors_);
  std::ofstream(dir_.path + "/config.json") << "{\"model_type\": \"deepseek_v3\", ";
  EXPECT_CONTAINS(load_error(dir_.path), "config.json: invalid JSON");
  std::ofstream(dir_.path + "/config.json")
      << R"({"model_type": "deepseek_v3", "hidden_size": "big"})";
  EXPECT_CONTAINS(load_error(dir_.path), "config.json: missing required field");
}

TEST_F(ModelErrors, Fp8WithoutScale) {
  auto& t = tensors_["model.layers.0.self_attn.o_proj.weight"];
  int64_t n = t.shape[0] * t.shape[1];
  t.dtype = "F8_E4M3";
  t.bytes.resize(size_t(n));
  write(tensors_);
  EXPECT_CONTAINS(load_error(dir_.path),
                  "FP8 tensor model.layers.0.self_attn.o_proj.weight has no "
                  "model.layers.0.self_attn.o_proj.weight_scale_inv");
}

TEST_F(ModelErrors, ShardIndexNamesMissingShard) {
  write(tensors_);
  std::ofstream(dir_.path + "/model.safetensors.index.json")
      << R"({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}})";
  EXPECT_CONTAINS(load_error(dir_.path), "model-00002-of-00002.safetensors: cannot open");
}

}  // namespace
}  // namespace ff
