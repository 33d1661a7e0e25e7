#include "model/gguf_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "model/safetensors.h"

namespace ff {

namespace {

using VT = GgufValueType;

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kDefaultAlignment = 32;
constexpr uint32_t kGgufMaxDims = 4;  // GGML_MAX_DIMS

// Bytes of one scalar of type t on disk; 0 for STRING, ARRAY and unknown ids.
size_t scalar_size(VT t) {
  switch (t) {
    case VT::U8:
    case VT::I8:
    case VT::BOOL:
      return 1;
    case VT::U16:
    case VT::I16:
      return 2;
    case VT::U32:
    case VT::I32:
    case VT::F32:
      return 4;
    case VT::U64:
    case VT::I64:
    case VT::F64:
      return 8;
    default:
      return 0;
  }
}

bool is_integer(VT t) {
  return t == VT::U8 || t == VT::I8 || t == VT::U16 || t == VT::I16 || t == VT::U32 ||
         t == VT::I32 || t == VT::U64 || t == VT::I64;
}

bool is_float(VT t) {
  return t == VT::F32 || t == VT::F64;
}

// A key or tensor name as messages show it: control bytes (a newline, say) as \xNN, so that a
// message stays one line whatever the file holds; everything else, UTF-8 included, as is.
// Reads the header front to back; every read is bounds-checked against the mapping and a short
// read fails with "PATH: truncated GGUF file: <what> ...".
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    FF_CHECK(n <= left(), "{}: truncated GGUF file: {} needs {} bytes at offset {}, file has {}",
             path_, what, n, pos_, size_);
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    FF_CHECK(n <= left(),
             "{}: {}: string length {} at offset {} runs past the end of the file ({} bytes)",
             path_, what, n, pos_ - 8, size_);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += n;
    return s;
  }

  GgufValue::Item read_item(VT t, const std::string& what) {
    switch (t) {
      case VT::U8:
        return uint64_t(read<uint8_t>(what));
      case VT::I8:
        return int64_t(read<int8_t>(what));
      case VT::U16:
        return uint64_t(read<uint16_t>(what));
      case VT::I16:
        return int64_t(read<int16_t>(what));
      case VT::U32:
        return uint64_t(read<uint32_t>(what));
      case VT::I32:
        return int64_t(read<int32_t>(what));
      case VT::U64:
        return read<uint64_t>(what);
      case VT::I64:
        return read<int64_t>(what);
      case VT::F32:
        return double(read<float>(what));
      case VT::F64:
        return read<double>(what);
      case VT::BOOL: {
        const uint8_t b = read<uint8_t>(what);
        FF_CHECK(b <= 1, "{}: {}: bool value {} is not 0 or 1", path_, what, b);
        return b == 1;
      }
      case VT::STRING:
        return read_string(what);
      default:
        fail("{}: {}: unknown value type {}", path_, what, uint32_t(t));
    }
  }

  GgufValue read_value(const std::string& what) {
    GgufValue v;
    v.type = VT(read<uint32_t>(what + " type"));
    if (v.type != VT::ARRAY) {
      FF_CHECK(v.type == VT::STRING || scalar_size(v.type) > 0, "{}: {}: unknown value type {}",
               path_, what, uint32_t(v.type));
      v.items.push_back(read_item(v.type, what));
      return v;
    }
    v.elem_type = VT(read<uint32_t>(what + " array element type"));
    FF_CHECK(v.elem_type != VT::ARRAY, "{}: {}: arrays of arrays are not supported", path_, what);
    FF_CHECK(v.elem_type == VT::STRING || scalar_size(v.elem_type) > 0,
             "{}: {}: unknown array element type {}", path_, what, uint32_t(v.elem_type));
    const uint64_t count = read<uint64_t>(what + " array length");
    // A string takes at least its 8-byte length, so a count the file cannot hold fails here,
    // before anything is allocated.
    const uint64_t min_size = v.elem_type == VT::STRING ? 8 : scalar_size(v.elem_type);
    FF_CHECK(count <= left() / min_size,
             "{}: {}: array of {} {} elements runs past the end of the file ({} bytes)", path_,
             what, count, gguf_value_type_name(v.elem_type), size_);
    // Parsed, an element takes ~40 bytes whatever its size in the file: a bound on all arrays
    // together keeps a hostile file from growing 40-fold in memory (real vocabularies, the
    // largest arrays, have well under a million entries each).
    array_items_ += count;
    FF_CHECK(array_items_ <= kMaxArrayItems,
             "{}: {}: array of {} elements: the metadata arrays hold more than {} elements in all",
             path_, what, count, kMaxArrayItems);
    v.items.reserve(size_t(count));
    for (uint64_t i = 0; i < count; ++i) v.items.push_back(read_item(v.elem_type, what));
    return v;
  }

  static constexpr uint64_t kMaxArrayItems = uint64_t(1) << 24;

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t array_items_ = 0;
};

std::string item_str(const GgufValue::Item& it) {
  return std::visit(
      [](const auto& x) -> std::string {
        using X = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<X, std::string>)
          return "\"" + x + "\"";
        else if constexpr (std::is_same_v<X, bool>)
          return x ? "true" : "false";
        else
          return fmt::format("{}", x);
      },
      it);
}

// An integer item as int64 / uint64 with a range check; false when it does not fit.
bool to_i64(const GgufValue::Item& it, int64_t* out) {
  if (auto* s = std::get_if<int64_t>(&it)) return *out = *s, true;
  const uint64_t u = std::get<uint64_t>(it);
  if (u > uint64_t(std::numeric_limits<int64_t>::max())) return false;
  return *out = int64_t(u), true;
}

bool to_u64(const GgufValue::Item& it, uint64_t* out) {
  if (auto* u = std::get_if<uint64_t>(&it)) return *out = *u, true;
  const int64_t s = std::get<int64_t>(it);
  if (s < 0) return false;
  return *out = uint64_t(s), true;
}

}  // namespace

std::string gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case VT::U8:
      return "u8";
    case VT::I8:
      return "i8";
    case VT::U16:
      return "u16";
    case VT::I16:
      return "i16";
    case VT::U32:
      return "u32";
    case VT::I32:
      return "i32";
    case VT::F32:
      return "f32";
    case VT::BOOL:
      return "bool";
    case VT::STRING:
      return "string";
    case VT::ARRAY:
      return "array";
    case VT::U64:
      return "u64";
    case VT::I64:
      return "i64";
    case VT::F64:
      return "f64";
  }
  return "unknown(" + std::to_string(uint32_t(t)) + ")";
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string GgufTensor::dims_str() const {
  return shape_to_string(dims);
}

GgufFile::GgufFile(const std::string& path)
    : file_(path), name_(path), data_(file_.data()), size_(file_.size()) {
  parse();
}

GgufFile::GgufFile(std::span<const uint8_t> bytes, std::string name)
    : name_(std::move(name)), data_(bytes.data()), size_(bytes.size()) {
  parse();
}

void GgufFile::parse() {
  const std::string& path = name_;
  const uint64_t size = size_;
  Reader r(path, data_, size);
  const uint32_t magic = r.read<uint32_t>("magic");
  FF_CHECK(magic == kMagic, "{}: not a GGUF file (magic {:#010x}, expected \"GGUF\")", path, magic);
  version_ = r.read<uint32_t>("version");
  FF_CHECK(version_ == 2 || version_ == 3, "{}: unsupported GGUF version {} (expected 2 or 3)",
           path, version_);
  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  // Smallest records: a key (8-byte length) + type + a 1-byte value; a tensor info with an empty
  // name, one dim, type and offset. Counts the file cannot hold fail before any allocation.
  FF_CHECK(n_kv <= r.left() / 13, "{}: metadata count {} is too large for a {}-byte file", path,
           n_kv, size);
  FF_CHECK(n_tensors <= r.left() / 32, "{}: tensor count {} is too large for a {}-byte file", path,
           n_tensors, size);

  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.read_string(fmt::format("metadata key #{}", i));
    const std::string what = "metadata key " + printable(key);
    FF_CHECK(!metadata_.count(key), "{}: duplicate {}", path, what);
    metadata_.emplace(key, r.read_value(what));
  }

  if (const GgufValue* a = find("general.alignment")) {
    FF_CHECK(a->type == VT::U32, "{}: metadata key general.alignment is {}, expected u32", path,
             gguf_value_type_name(a->type));
    const uint64_t al = std::get<uint64_t>(a->items[0]);
    FF_CHECK(al != 0 && (al & (al - 1)) == 0,
             "{}: metadata key general.alignment = {} is not a power of two", path, al);
    alignment_ = uint32_t(al);
  } else {
    alignment_ = kDefaultAlignment;
  }

  tensors_.reserve(size_t(n_tensors));
  std::vector<uint64_t> rel_offsets;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = r.read_string(fmt::format("tensor #{} name", i));
    const std::string name = printable(t.name);
    const std::string what = "tensor " + name;
    FF_CHECK(!tensor_index_.count(t.name), "{}: duplicate {}", path, what);
    const uint32_t n_dims = r.read<uint32_t>(what + " n_dims");
    FF_CHECK(n_dims >= 1 && n_dims <= kGgufMaxDims, "{}: tensor {}: {} dims (expected 1 to {})",
             path, name, n_dims, kGgufMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = r.read<uint64_t>(what + " dims");
      FF_CHECK(dim >= 1 && dim <= uint64_t(std::numeric_limits<int64_t>::max()) / numel,
               "{}: tensor {}: dim {} = {} is zero or makes the element count overflow", path, name,
               d, dim);
      numel *= dim;
      t.dims.push_back(int64_t(dim));
    }
    const uint32_t type = r.read<uint32_t>(what + " type");
    FF_CHECK(gemm::gguf_type_known(type), "{}: tensor {}: unknown tensor type id {}", path, name,
             type);
    t.type = gemm::GgufType(type);
    const int64_t block = gemm::gguf_block_size(t.type);
    FF_CHECK(t.dims[0] % block == 0,
             "{}: tensor {}: dims {}: dims[0] is not a multiple of the {} block size {}", path,
             name, t.dims_str(), gemm::gguf_type_name(t.type), block);
    // Up to 8 bytes per element: even one row's byte count can overflow (dims[0] = 2^62 of F32),
    // so each factor is checked against the file size before it is multiplied.
    const uint64_t row_blocks = uint64_t(t.dims[0] / block);
    const uint64_t block_bytes = uint64_t(gemm::gguf_type_size(t.type));
    const uint64_t rows = numel / uint64_t(t.dims[0]);
    FF_CHECK(row_blocks <= size / block_bytes && rows <= size / (row_blocks * block_bytes),
             "{}: tensor {}: dims {} of {} need more bytes than the file has", path, name,
             t.dims_str(), gemm::gguf_type_name(t.type));
    t.nbytes = row_blocks * block_bytes * rows;
    const uint64_t off = r.read<uint64_t>(what + " offset");
    FF_CHECK(off % alignment_ == 0,
             "{}: tensor {}: data offset {} is not a multiple of the alignment {}", path, name, off,
             alignment_);
    rel_offsets.push_back(off);
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  const uint64_t end = r.pos();
  data_offset_ = end + (alignment_ - end % alignment_) % alignment_;
  if (!tensors_.empty()) {
    FF_CHECK(data_offset_ <= size,
             "{}: truncated GGUF file: data section starts at {}, file has {} bytes", path,
             data_offset_, size);
  }
  const uint64_t data_size = size - std::min(data_offset_, size);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensor& t = tensors_[i];
    const uint64_t off = rel_offsets[i];
    FF_CHECK(off <= data_size && t.nbytes <= data_size - off,
             "{}: truncated GGUF file: tensor {} needs bytes [{}, {}) of a {}-byte data section",
             path, printable(t.name), off, off + t.nbytes, data_size);
    t.offset = data_offset_ + off;
    t.data = data_ + t.offset;
  }
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensor& a = *by_offset[i - 1];
    const GgufTensor& b = *by_offset[i];
    FF_CHECK(a.offset + a.nbytes <= b.offset,
             "{}: tensor {} (bytes [{}, {})) overlaps tensor {} (from byte {})", path,
             printable(a.name), a.offset, a.offset + a.nbytes, printable(b.name), b.offset);
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::get_tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  FF_CHECK(t, "{}: missing tensor {}", path(), printable(name));
  return *t;
}

const GgufValue& GgufFile::get_scalar(const std::string& key) const {
  const GgufValue* v = find(key);
  FF_CHECK(v, "{}: missing metadata key {}", path(), printable(key));
  return *v;
}

namespace {

[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                             const char* want) {
  const std::string have = v.is_array() ? "an array of " + gguf_value_type_name(v.elem_type)
                                        : gguf_value_type_name(v.type);
  fail("{}: metadata key {} is {}, expected {}", path, printable(key), have, want);
}

template <typename T>
T get_int(const std::string& path, const std::string& key, const GgufValue& v, const char* want) {
  if (v.is_array() || !is_integer(v.type)) wrong_type(path, key, v, want);
  const auto& it = v.items[0];
  if constexpr (std::is_signed_v<T>) {
    int64_t x = 0;
    FF_CHECK(
        to_i64(it, &x) && x >= std::numeric_limits<T>::min() && x <= std::numeric_limits<T>::max(),
        "{}: metadata key {} = {} does not fit {}", path, printable(key), item_str(it), want);
    return T(x);
  } else {
    uint64_t x = 0;
    FF_CHECK(to_u64(it, &x) && x <= std::numeric_limits<T>::max(),
             "{}: metadata key {} = {} does not fit {}", path, printable(key), item_str(it), want);
    return T(x);
  }
}

}  // namespace

uint64_t GgufFile::get_u64(const std::string& key) const {
  return get_int<uint64_t>(path(), key, get_scalar(key), "u64");
}
int64_t GgufFile::get_i64(const std::string& key) const {
  return get_int<int64_t>(path(), key, get_scalar(key), "i64");
}
uint32_t GgufFile::get_u32(const std::string& key) const {
  return get_int<uint32_t>(path(), key, get_scalar(key), "u32");
}
int32_t GgufFile::get_i32(const std::string& key) const {
  return get_int<int32_t>(path(), key, get_scalar(key), "i32");
}

double GgufFile::get_f64(const std::string& key) const {
  const GgufValue& v = get_scalar(key);
  if (v.is_array() || !is_float(v.type)) wrong_type(path(), key, v, "a float");
  return std::get<double>(v.items[0]);
}

float GgufFile::get_f32(const std::string& key) const {
  return float(get_f64(key));
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = get_scalar(key);
  if (v.type != VT::BOOL) wrong_type(path(), key, v, "bool");
  return std::get<bool>(v.items[0]);
}

const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = get_scalar(key);
  if (v.type != VT::STRING) wrong_type(path(), key, v, "string");
  return std::get<std::string>(v.items[0]);
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = get_scalar(key);
  if (!v.is_array() || v.elem_type != VT::STRING) wrong_type(path(), key, v, "an array of string");
  std::vector<std::string> out;
  out.reserve(v.items.size());
  for (const auto& it : v.items) out.push_back(std::get<std::string>(it));
  return out;
}

std::vector<int64_t> GgufFile::get_i64_array(const std::string& key) const {
  const GgufValue& v = get_scalar(key);
  if (!v.is_array() || !is_integer(v.elem_type)) wrong_type(path(), key, v, "an integer array");
  std::vector<int64_t> out(v.items.size());
  for (size_t i = 0; i < out.size(); ++i)
    FF_CHECK(to_i64(v.items[i], &out[i]), "{}: metadata key {}: element {} = {} does not fit i64",
             path(), printable(key), i, item_str(v.items[i]));
  return out;
}

std::vector<double> GgufFile::get_f64_array(const std::string& key) const {
  const GgufValue& v = get_scalar(key);
  if (!v.is_array() || !is_float(v.elem_type)) wrong_type(path(), key, v, "a float array");
  std::vector<double> out;
  out.reserve(v.items.size());
  for (const auto& it : v.items) out.push_back(std::get<double>(it));
  return out;
}

}  // namespace ff
