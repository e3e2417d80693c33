// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_FILE_BYTES_H_
#define IPITRACE_HOST_AGENT_FILE_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "result.h"

namespace ipitrace {

// Largest region the agent will load or decompress (a guard against
// decompression bombs and absurd files): 4 GiB.
inline constexpr uint64_t kMaxRegionBytes = uint64_t{4} << 30;

// An owned file descriptor (move-only; closed on destruction).
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// A regular file opened read-only, and its size when opened.
struct OpenedFile {
  UniqueFd fd;
  uint64_t size = 0;
};

// Opens PATH read-only and checks that it is a regular file: the one place
// that does open + fstat for region files (ReadRegionFile, MappedFile).
// Errors are kIo: "cannot open PATH: <reason>", "cannot read PATH:
// <reason>" or "cannot read PATH: not a regular file".
Result<OpenedFile> OpenRegularFile(const std::string& path);

// Reads a region file into memory: PATH itself if it exists, else
// PATH.zst (zstd, decompressed transparently).  Uses read(2), never mmap, so
// a file truncated while it is read yields a short (then rejected) region,
// not SIGBUS.  Errors: kIo (missing/unreadable), kMalformed (bad zstd).
Result<std::vector<std::byte>> ReadRegionFile(const std::string& path);

// Decompresses a whole zstd buffer ('name' for messages).
Result<std::vector<std::byte>> ZstdDecompress(const std::vector<std::byte>& in,
                                              const std::string& name);

// Copies n bytes from a mapping that another process may truncate under
// us.  Returns false (and copies an unspecified prefix) if the copy hit
// SIGBUS; the process survives.  Thread-safe; installs a SIGBUS handler on
// first use that passes faults outside a guarded copy on to the previous
// disposition.
bool GuardedCopy(void* dst, const void* src, size_t n);

// The same guard for many copies: the SIGBUS handler is installed for the
// guard's lifetime (one pair of sigaction calls instead of one per copy).
// It holds the guard's process-wide lock: keep it short, and do not call
// GuardedCopy or make a second guard while it lives.
class SigbusGuard {
 public:
  SigbusGuard();
  ~SigbusGuard();
  SigbusGuard(const SigbusGuard&) = delete;
  SigbusGuard& operator=(const SigbusGuard&) = delete;
  // As GuardedCopy.
  bool Copy(void* dst, const void* src, size_t n) const;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_FILE_BYTES_H_
