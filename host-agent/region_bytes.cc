// SPDX-License-Identifier: MIT
#include "region_bytes.h"

#include <sys/stat.h>

#include <cerrno>
#include <utility>

#include <fmt/format.h>

#include "file_bytes.h"

namespace ipitrace {

namespace {
std::string ZstPath(const std::string& path) { return path + ".zst"; }
}  // namespace

bool RegionBytes::Absent(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) != 0 && errno == ENOENT &&
         ::stat(ZstPath(path).c_str(), &st) != 0 && errno == ENOENT;
}

Result<std::shared_ptr<const RegionBytes>> RegionBytes::Open(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    const std::string zpath = ZstPath(path);
    if (::stat(zpath.c_str(), &st) == 0) {
      auto bytes = ReadRegionFile(path);  // decompresses PATH.zst
      if (!bytes.ok()) return bytes.status();
      return FromBuffer(std::move(bytes).value());
    }
  }
  auto map = MappedFile::Open(path, MappedFile::Fence::kZeroFill);
  if (!map.ok()) return map.status();
  const uint64_t size = map.value().bytes().size();
  if (size > kMaxRegionBytes) {
    return Status::Error(ErrorCode::kMalformed,
                         fmt::format("{}: {} bytes is larger than the {} byte limit",
                                     path, size, kMaxRegionBytes));
  }
  std::shared_ptr<RegionBytes> r(new RegionBytes());
  r->map_.emplace(std::move(map).value());
  return std::shared_ptr<const RegionBytes>(std::move(r));
}

std::shared_ptr<const RegionBytes> RegionBytes::FromBuffer(std::vector<std::byte> bytes) {
  std::shared_ptr<RegionBytes> r(new RegionBytes());
  r->buffer_ = std::move(bytes);
  return r;
}

}  // namespace ipitrace
