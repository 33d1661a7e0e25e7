// A read-only memory-mapped file. Weights are used in place from the mapping, never copied.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ff {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps the whole file; throws ff::Error naming the path if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Faults in the pages of [p, p + n) of a read-only file mapping (MADV_POPULATE_READ where the
// kernel has it, else a read of one byte per page), so that later reads of weights find their
// pages mapped instead of taking a page fault each (~4 KiB). Best effort: never throws.
void prefault(const void* p, size_t n);
// Bytes of memory the kernel reports available (MemAvailable), 0 if unknown.
size_t available_memory_bytes();

// Reads a whole (small) file into a string; throws ff::Error naming the path on failure.
std::string read_text_file(const std::string& path);

}  // namespace ff
