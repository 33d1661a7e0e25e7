// Private to the plan module: flat byte records for the driver's collectives (configurations
// and results travel between ranks of one build on one kind of machine, so plain native-endian
// copies of trivially copyable values suffice).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace ff::plan {

class WireWriter {
 public:
  template <typename P>
  void pod(const P& v) {
    static_assert(std::is_trivially_copyable_v<P>);
    raw(&v, sizeof v);
  }
  template <typename P>
  void vector(const std::vector<P>& v) {
    static_assert(std::is_trivially_copyable_v<P>);
    pod(uint64_t(v.size()));
    raw(v.data(), v.size() * sizeof(P));
  }
  void string(const std::string& s) {
    pod(uint64_t(s.size()));
    raw(s.data(), s.size());
  }
  std::span<const std::byte> bytes() const { return buf_; }
  std::vector<std::byte> take() { return std::move(buf_); }

 private:
  void raw(const void* p, size_t n) {
    const size_t at = buf_.size();
    buf_.resize(at + n);
    if (n) std::memcpy(buf_.data() + at, p, n);
  }
  std::vector<std::byte> buf_;
};

class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> in) : in_(in) {}
  template <typename P>
  P pod() {
    P v;
    raw(&v, sizeof v);
    return v;
  }
  template <typename P>
  std::vector<P> vector() {
    std::vector<P> v(size_t(pod<uint64_t>()));
    raw(v.data(), v.size() * sizeof(P));
    return v;
  }
  std::string string() {
    std::string s(size_t(pod<uint64_t>()), '\0');
    raw(s.data(), s.size());
    return s;
  }

 private:
  void raw(void* p, size_t n) {
    FF_INVARIANT(n <= in_.size() - at_, "a record of {} bytes read past its end", in_.size());
    if (n) std::memcpy(p, in_.data() + at_, n);
    at_ += n;
  }
  std::span<const std::byte> in_;
  size_t at_ = 0;
};

}  // namespace ff::plan
