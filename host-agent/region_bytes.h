// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_REGION_BYTES_H_
#define IPITRACE_HOST_AGENT_REGION_BYTES_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mapped_file.h"
#include "result.h"

namespace ipitrace {

// RegionBytes owns the bytes of one region file for as long as anything
// points into them (a Region's rings, a Request's evidence): shared and
// never modified by the agent.
//
// Open(PATH) maps PATH read-only (MappedFile with the SIGBUS fence): a
// snapshot region of hundreds of MiB costs no copy, and only the pages of
// the rings' written parts are ever touched (RegionReader reads each ring
// from its oldest retained record up to its head).  When PATH does not
// exist, PATH.zst is read and decompressed into memory.
//
// A mapping can change under us if another process writes the file (a
// live VM's region, a hostile guest): RegionReader still reads every field
// of its validation pass once, and everything downstream bounds-checks the
// values it reads again, so such a file can make a result wrong but never
// make the agent read out of bounds.  If the file shrinks while mapped,
// truncated() turns true and the result must be discarded.
class RegionBytes {
 public:
  static Result<std::shared_ptr<const RegionBytes>> Open(const std::string& path);
  // Neither PATH nor PATH.zst exists: nothing for Open to read.
  static bool Absent(const std::string& path);
  static std::shared_ptr<const RegionBytes> FromBuffer(std::vector<std::byte> bytes);

  std::span<const std::byte> bytes() const {
    return map_ ? map_->bytes() : std::span<const std::byte>(buffer_);
  }
  bool truncated() const { return map_ && map_->truncated(); }

 private:
  RegionBytes() = default;

  std::optional<MappedFile> map_;
  std::vector<std::byte> buffer_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_REGION_BYTES_H_
