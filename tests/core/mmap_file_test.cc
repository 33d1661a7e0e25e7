// MappedFile and read_text_file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/core.h"

namespace ff {
namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "ff_mmap_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    EXPECT_NE(::mkdtemp(buf.data()), nullptr);
    path_ = buf.data();
  }
  ~TempDir() {
    for (const auto& f : files_) std::remove(f.c_str());
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) ::rmdir(it->c_str());
    ::rmdir(path_.c_str());
  }
  std::string write(const std::string& name, const std::string& content) {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    files_.push_back(p);
    return p;
  }
  std::string mkdir(const std::string& name) {
    const std::string p = path_ + "/" + name;
    EXPECT_EQ(::mkdir(p.c_str(), 0755), 0);
    dirs_.push_back(p);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_, dirs_;
};

void expect_error_naming(const std::function<void()>& f, const std::string& path,
                         const std::string& also = "") {
  try {
    f();
    ADD_FAILURE() << "no ff::Error for " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    if (!also.empty()) {
      EXPECT_NE(msg.find(also), std::string::npos) << msg;
    }
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
}

TEST(MappedFile, MapsAFileAndReadsIt) {
  TempDir dir;
  std::string content;
  for (int i = 0; i < 300000; ++i) content.push_back(char(i * 7 + (i >> 8)));
  const std::string p = dir.write("weights.bin", content);
  MappedFile f(p);
  ASSERT_EQ(f.size(), content.size());
  ASSERT_NE(f.data(), nullptr);
  EXPECT_EQ(f.path(), p);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.data()), f.size()), content);
}

TEST(MappedFile, EmptyFileIsFine) {
  TempDir dir;
  const std::string p = dir.write("empty", "");
  MappedFile f(p);
  EXPECT_EQ(f.size(), 0u);
  EXPECT_EQ(f.data(), nullptr);
  EXPECT_EQ(read_text_file(p), "");
}

TEST(MappedFile, MissingFileIsAnErrorNamingThePath) {
  TempDir dir;
  const std::string p = dir.path() + "/no/such/model.safetensors";
  expect_error_naming([&] { MappedFile f(p); }, p, "No such file");
  expect_error_naming([&] { read_text_file(p); }, p, "No such file");
}

TEST(MappedFile, DirectoryIsAnError) {
  TempDir dir;
  const std::string d = dir.mkdir("a_directory");
  expect_error_naming([&] { MappedFile f(d); }, d, "directory");
  expect_error_naming([&] { read_text_file(d); }, d, "directory");
}

TEST(MappedFile, MoveTransfersTheMapping) {
  TempDir dir;
  const std::string p = dir.write("a", "hello mmap");
  MappedFile a(p);
  const uint8_t* data = a.data();
  MappedFile b(std::move(a));
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(b.size(), 10u);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(a.size(), 0u);
  MappedFile c;
  EXPECT_EQ(c.data(), nullptr);
  c = std::move(b);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(c.data()), c.size()), "hello mmap");
  const std::string q = dir.write("b", "second");
  c = MappedFile(q);  // the old mapping is released, the new one taken
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(c.data()), c.size()), "second");
  EXPECT_EQ(c.path(), q);
}

TEST(MappedFile, ReadTextFile) {
  TempDir dir;
  std::string content = "line one\nline two\n";
  content.push_back('\0');
  content += std::string(200000, 'x');  // more than one read() buffer
  const std::string p = dir.write("t.txt", content);
  EXPECT_EQ(read_text_file(p), content);
}

}  // namespace
}  // namespace ff
