// A check the metadata tests share: the store holds no trace of a half-done operation.
#pragma once
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "fs/fs.h"

namespace ff::fs::testing {

// Every entry names an existing inode of its type, every directory's parent pointer is the
// directory whose entry names it, and every inode but the root is named as often as it has
// links (directories once): what a half-done operation would break.
inline void expect_consistent(TxnStore& store) {
  auto t = store.begin_read();
  std::map<uint64_t, std::string> inodes;  // id -> value
  for (const auto& [k, v] : t->range("I", "J")) {
    uint64_t id = 0;
    for (size_t i = 1; i < 9; ++i) id = id << 8 | uint8_t(k[i]);
    inodes[id] = v;
  }
  std::map<uint64_t, int> named;
  MetaStore m(store);
  for (const auto& [k, v] : t->range("D", "E")) {
    uint64_t parent = 0, child = 0;
    for (size_t i = 1; i < 9; ++i) parent = parent << 8 | uint8_t(k[i]);
    for (size_t i = 0; i < 8; ++i) child = child << 8 | uint8_t(v[i]);
    ASSERT_TRUE(inodes.count(parent)) << "an entry in a directory that does not exist";
    ASSERT_TRUE(inodes.count(child)) << "entry " << k.substr(9) << " names no inode";
    const Inode n = m.stat(child).inode;
    EXPECT_EQ(uint8_t(n.type), uint8_t(v[8]));
    if (n.type == FileType::Directory) {
      EXPECT_EQ(n.parent, parent) << k.substr(9);
    }
    ++named[child];
  }
  for (const auto& [id, v] : inodes) {
    if (id == kRootInode) continue;
    const Inode n = m.stat(id).inode;
    EXPECT_EQ(named[id], n.type == FileType::Directory ? 1 : int(n.nlink)) << "inode " << id;
  }
}

}  // namespace ff::fs::testing
