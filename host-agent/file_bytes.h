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

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_FILE_BYTES_H_
