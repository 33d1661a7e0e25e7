#include "model/safetensors.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

namespace ff {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  return shape_to_string(shape);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  FF_CHECK(size >= 8, "{}: truncated safetensors file ({} bytes, no header)", path, size);
  uint64_t header_len = 0;
  std::memcpy(&header_len, file_.data(), 8);
  FF_CHECK(header_len <= size - 8, "{}: truncated safetensors file (header of {} bytes, file {})",
           path, header_len, size);
  json header;
  try {
    header = json::parse(file_.data() + 8, file_.data() + 8 + header_len);
  } catch (const json::exception& e) {
    fail("{}: invalid safetensors header JSON: {}", path, e.what());
  }
  FF_CHECK(header.is_object(), "{}: safetensors header is not a JSON object", path);
  const uint8_t* base = file_.data() + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const json& t = it.value();
    FF_CHECK(
        t.is_object() && t.contains("dtype") && t.contains("shape") && t.contains("data_offsets"),
        "{}: tensor {}: header entry needs dtype, shape and data_offsets", path, name);
    TensorInfo info;
    info.name = name;
    const std::string dt = t["dtype"].is_string() ? t["dtype"].get<std::string>() : "";
    FF_CHECK(parse_dtype(dt, &info.dtype), "{}: tensor {}: unknown dtype \"{}\"", path, name, dt);
    FF_CHECK(t["shape"].is_array(), "{}: tensor {}: shape is not a list", path, name);
    uint64_t numel = 1;
    for (const auto& d : t["shape"]) {
      FF_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, "{}: tensor {}: bad shape {}", path,
               name, t["shape"].dump());
      info.shape.push_back(d.get<int64_t>());
      numel *= uint64_t(d.get<int64_t>());
    }
    const json& off = t["data_offsets"];
    FF_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                 off[1].is_number_unsigned(),
             "{}: tensor {}: bad data_offsets {}", path, name, off.dump());
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    FF_CHECK(b <= e, "{}: tensor {}: data_offsets [{}, {}) are reversed", path, name, b, e);
    FF_CHECK(e <= data_size,
             "{}: truncated safetensors file: tensor {} needs bytes [{}, {}) of a {}-byte data "
             "region",
             path, name, b, e, data_size);
    FF_CHECK(e - b == numel * dtype_size(info.dtype),
             "{}: tensor {}: {} bytes of data for shape {} of {} (expected {})", path, name, e - b,
             info.shape_str(), dt, numel * dtype_size(info.dtype));
    info.data = base + b;
    info.nbytes = size_t(e - b);
    info.file = &file_.path();
    tensors_.emplace(name, std::move(info));
  }
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Checkpoint Checkpoint::open_files(const std::vector<std::string>& paths) {
  Checkpoint c;
  for (const auto& p : paths) {
    c.files_.push_back(std::make_unique<SafetensorsFile>(p));
    for (const auto& [name, info] : c.files_.back()->tensors()) {
      FF_CHECK(!c.index_.count(name), "{}: tensor {} also appears in {}", p, name,
               *c.index_[name]->file);
      c.index_[name] = &info;
    }
  }
  if (!paths.empty()) c.dir_ = fs::path(paths[0]).parent_path().string();
  return c;
}

Checkpoint Checkpoint::open(const std::string& dir) {
  FF_CHECK(fs::is_directory(dir), "{}: not a directory (expected an HF checkpoint directory)", dir);
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  Checkpoint c;
  if (fs::exists(index_path)) {
    json idx;
    try {
      idx = json::parse(read_text_file(index_path.string()));
    } catch (const json::exception& e) {
      fail("{}: invalid JSON: {}", index_path.string(), e.what());
    }
    FF_CHECK(idx.is_object() && idx.contains("weight_map") && idx["weight_map"].is_object(),
             "{}: missing \"weight_map\"", index_path.string());
    std::set<std::string> shards;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      FF_CHECK(it.value().is_string(), "{}: weight_map entry {} is not a file name",
               index_path.string(), it.key());
      shards.insert(it.value().get<std::string>());
    }
    std::vector<std::string> paths;
    for (const auto& s : shards) {
      FF_CHECK(s.find('/') == std::string::npos && s != ".." && !s.empty(),
               "{}: shard name \"{}\" must be a plain file name", index_path.string(), s);
      paths.push_back((fs::path(dir) / s).string());
    }
    c = open_files(paths);
    // Every tensor the index names must be in the shard it names.
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      const TensorInfo* t = c.find(it.key());
      FF_CHECK(t != nullptr, "{}: tensor {} listed in {} is missing from {}",
               (fs::path(dir) / it.value().get<std::string>()).string(), it.key(),
               index_path.filename().string(), it.value().get<std::string>());
    }
  } else if (fs::exists(single)) {
    c = open_files({single.string()});
  } else {
    fail("{}: no model.safetensors or model.safetensors.index.json", dir);
  }
  c.dir_ = dir;
  return c;
}

Checkpoint Checkpoint::from_tensors(std::string source,
                                    std::vector<std::pair<std::string, TensorInfo>> tensors,
                                    std::shared_ptr<const void> owner,
                                    std::function<std::string(const std::string&)> file_name) {
  Checkpoint c;
  c.dir_ = std::move(source);
  c.owner_ = std::move(owner);
  c.file_name_ = std::move(file_name);
  for (auto& [key, info] : tensors) {
    FF_CHECK(!c.index_.count(key), "{}: tensor {} appears twice", c.dir_, key);
    c.own_.push_back(std::make_unique<TensorInfo>(std::move(info)));
    c.index_[key] = c.own_.back().get();
  }
  return c;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) {
    if (file_name_) fail("{}: missing tensor {} ({})", dir_, file_name_(name), name);
    fail("{}: missing tensor {}", dir_, name);
  }
  return *t;
}

const TensorInfo& Checkpoint::get(const std::string& name,
                                  const std::vector<int64_t>& shape) const {
  const TensorInfo& t = get(name);
  FF_CHECK(t.shape == shape, "{}: tensor {} has shape {}, expected {}", *t.file, t.name,
           t.shape_str(), shape_to_string(shape));
  return t;
}

size_t Checkpoint::prefault(const std::function<bool(const std::string&)>& wanted) const {
  std::vector<const TensorInfo*> tensors;
  size_t bytes = 0;
  for (const auto& [name, t] : index_) {
    if (wanted && !wanted(name)) continue;
    tensors.push_back(t);
    bytes += t->nbytes;
  }
  const size_t avail = available_memory_bytes();
  if (avail == 0 || double(bytes) > 0.8 * double(avail)) return 0;
  parallel_for(int64_t(tensors.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      ff::prefault(tensors[size_t(i)]->data, tensors[size_t(i)]->nbytes);
  });
  return bytes;
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : index_) n += t->nbytes;
  return n;
}

}  // namespace ff
