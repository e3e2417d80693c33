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
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::string& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(data_), size_};
  }

 private:
  MappedFile() = default;
  void Reset();

  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_MAPPED_FILE_H_
