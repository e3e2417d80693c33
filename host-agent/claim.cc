// SPDX-License-Identifier: MIT
#include "claim.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "ipitrace_abi.h"

namespace ipitrace {

Status ClaimGuestRegion(const std::string& path, uint64_t size) {
  auto io = [&](const char* what) {
    return Status::Error(ErrorCode::kIo,
                         fmt::format("{}: cannot {}: {}", path, what, std::strerror(errno)));
  };
  if (size < IPT_HEADER_SIZE) {
    return Status::Error(ErrorCode::kUsage, fmt::format("{}: a region needs at least {} bytes",
                                                        path, IPT_HEADER_SIZE));
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return io("open it");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io("stat it");
  if (!S_ISREG(st.st_mode))
    return Status::Error(ErrorCode::kForeign, fmt::format("{}: not a regular file", path));
  std::array<std::byte, IPT_HEADER_SIZE> head{};
  const ssize_t n = ::pread(fd, head.data(), head.size(), 0);
  if (n < 0) return io("read it");
  uint64_t magic = 0;
  std::memcpy(&magic, head.data(), sizeof(magic));
  const bool zero = std::all_of(head.begin(), head.begin() + n,
                                [](std::byte b) { return b == std::byte{0}; });
  if (magic != IPT_MAGIC && !zero) {
    return Status::Error(ErrorCode::kForeign,
                         fmt::format("{}: holds data that is not an ipitrace region (first "
                                     "bytes {:#018x}); not claiming it",
                                     path, magic));
  }
  if (static_cast<uint64_t>(st.st_size) < size && ::ftruncate(fd, static_cast<off_t>(size)) != 0)
    return io("extend it");
  if (magic != IPT_MAGIC) {
    const uint64_t m = IPT_MAGIC;
    if (::pwrite(fd, &m, sizeof(m), 0) != static_cast<ssize_t>(sizeof(m))) return io("write it");
  }
  if (::fchmod(fd, 0666) != 0) return io("share it (chmod 0666)");
  return Status::Ok();
}

}  // namespace ipitrace
