// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_MAPPED_FILE_H_
#define IPITRACE_HOST_AGENT_MAPPED_FILE_H_

#include <cstddef>
#include <span>
#include <string>

#include "result.h"

namespace ipitrace {

// A read-only private mapping of a whole file (move-only, unmaps on
// destruction).  The bytes are untrusted and may change under us if the
// producer is still running; RegionReader copies each field once.
//
// Pages are only read when touched, so mapping a region costs nothing for
// the parts of its rings that were never written.
//
// A file that shrinks while it is mapped makes later reads of the lost
// pages raise SIGBUS.  watch copies live mappings under GuardedCopy.  For
// a mapping that is read directly (an offline snapshot), Open with
// kZeroFill installs a fence: a SIGBUS inside the mapping replaces the
// pages from the fault to the end with zeros (an anonymous mapping), the
// read is retried and sees zeros, and truncated() becomes true, so the
// caller can discard whatever it computed.  The process never dies of it.
class MappedFile {
 public:
  enum class Fence { kNone, kZeroFill };

  static Result<MappedFile> Open(const std::string& path,
                                 Fence fence = Fence::kNone);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(data_), size_};
  }
  // A fenced mapping caught SIGBUS: the file shrank under it, and some
  // pages read as zeros instead of the file's bytes.
  bool truncated() const;

 private:
  MappedFile() = default;
  void Reset();

  void* data_ = nullptr;
  size_t size_ = 0;
  int fence_slot_ = -1;  // index in the fence table, -1 when not fenced
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_MAPPED_FILE_H_
