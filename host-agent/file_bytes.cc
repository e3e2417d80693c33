// SPDX-License-Identifier: MIT
#include "file_bytes.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <zstd.h>

namespace ipitrace {
namespace {

Result<std::vector<std::byte>> ReadWhole(const std::string& path) {
  auto opened = OpenRegularFile(path);
  if (!opened.ok()) return opened.status();
  const int fd = opened.value().fd.get();
  const uint64_t size = opened.value().size;
  if (size > kMaxRegionBytes) {
    return Status::Error(ErrorCode::kMalformed,
                         fmt::format("{}: {} bytes is larger than the {} byte limit",
                                     path, size, kMaxRegionBytes));
  }
  std::vector<std::byte> buf(static_cast<size_t>(size));
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Status::Error(ErrorCode::kIo, fmt::format("cannot read {}: {}", path,
                                                       std::strerror(errno)));
    }
    if (n == 0) break;  // truncated while reading: keep what we have
    got += static_cast<size_t>(n);
  }
  buf.resize(got);
  return buf;
}

// volatile: the compiler must not sink or drop the stores around memcpy
// (it knows memcpy does not read t_guard; the signal handler does).
thread_local sigjmp_buf* volatile t_guard = nullptr;
struct sigaction g_prev_bus {};

void OnSigbus(int sig, siginfo_t* info, void* ctx) {
  if (t_guard) siglongjmp(*t_guard, 1);
  // Not ours: restore the previous disposition and re-raise.
  if (g_prev_bus.sa_flags & SA_SIGINFO) {
    if (g_prev_bus.sa_sigaction) {
      g_prev_bus.sa_sigaction(sig, info, ctx);
      return;
    }
  } else if (g_prev_bus.sa_handler != SIG_DFL && g_prev_bus.sa_handler != SIG_IGN) {
    g_prev_bus.sa_handler(sig);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);
  ::raise(SIGBUS);
}

// No C++ objects with destructors live in this frame across the jump.
bool CopyUnderGuard(void* dst, const void* src, size_t n) {
  sigjmp_buf jb;
  // The mask need not be saved (a system call per copy): the handler runs
  // with SA_NODEFER and an empty sa_mask, so a jump out of it leaves the
  // mask as it was at the fault, which is the mask here.
  if (sigsetjmp(jb, 0) != 0) {
    t_guard = nullptr;
    return false;
  }
  t_guard = &jb;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memcpy(dst, src, n);  // a fault inside jumps back above
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_guard = nullptr;
  return true;
}

std::mutex g_guard_mu;

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

Result<OpenedFile> OpenRegularFile(const std::string& path) {
  OpenedFile f;
  f.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd.get() < 0) {
    return Status::Error(ErrorCode::kIo, fmt::format("cannot open {}: {}", path,
                                                     std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(f.fd.get(), &st) != 0) {
    return Status::Error(ErrorCode::kIo, fmt::format("cannot read {}: {}", path,
                                                     std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::Error(ErrorCode::kIo,
                         fmt::format("cannot read {}: not a regular file", path));
  }
  f.size = static_cast<uint64_t>(st.st_size);
  return f;
}

// The handler is installed around each guarded stretch (and the previous
// one put back), so test frameworks or embedders that install their own
// SIGBUS handler later do not disarm the guard.
SigbusGuard::SigbusGuard() {
  g_guard_mu.lock();
  struct sigaction sa {};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, &g_prev_bus);
}

SigbusGuard::~SigbusGuard() {
  ::sigaction(SIGBUS, &g_prev_bus, nullptr);
  g_guard_mu.unlock();
}

bool SigbusGuard::Copy(void* dst, const void* src, size_t n) const {
  return CopyUnderGuard(dst, src, n);
}

bool GuardedCopy(void* dst, const void* src, size_t n) {
  const SigbusGuard guard;
  return guard.Copy(dst, src, n);
}

Result<std::vector<std::byte>> ZstdDecompress(const std::vector<std::byte>& in,
                                              const std::string& name) {
  const unsigned long long declared = ZSTD_getFrameContentSize(in.data(), in.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) {
    return Status::Error(ErrorCode::kMalformed,
                         fmt::format("{}: not a zstd frame", name));
  }
  std::vector<std::byte> out;
  if (declared != ZSTD_CONTENTSIZE_UNKNOWN) {
    if (declared > kMaxRegionBytes)
      return Status::Error(ErrorCode::kMalformed,
                           fmt::format("{}: declares {} bytes, over the limit", name, declared));
    out.reserve(static_cast<size_t>(declared));
  }
  ZSTD_DStream* ds = ZSTD_createDStream();
  if (!ds) return Status::Error(ErrorCode::kInternal, "zstd: out of memory");
  ZSTD_initDStream(ds);
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  std::vector<std::byte> chunk(ZSTD_DStreamOutSize());
  size_t ret = 1;
  for (;;) {
    ZSTD_outBuffer ob{chunk.data(), chunk.size(), 0};
    ret = ZSTD_decompressStream(ds, &ob, &ib);
    if (ZSTD_isError(ret)) {
      const std::string err = ZSTD_getErrorName(ret);
      ZSTD_freeDStream(ds);
      return Status::Error(ErrorCode::kMalformed,
                           fmt::format("{}: corrupt zstd data: {}", name, err));
    }
    if (out.size() + ob.pos > kMaxRegionBytes) {
      ZSTD_freeDStream(ds);
      return Status::Error(ErrorCode::kMalformed,
                           fmt::format("{}: decompresses past the limit", name));
    }
    out.insert(out.end(), chunk.begin(), chunk.begin() + static_cast<ptrdiff_t>(ob.pos));
    const bool input_done = ib.pos == ib.size;
    if (ret == 0 && input_done) break;                // last frame complete
    if (input_done && ob.pos < ob.size) break;        // wants more input
  }
  ZSTD_freeDStream(ds);
  if (ret != 0) {
    return Status::Error(ErrorCode::kMalformed,
                         fmt::format("{}: truncated zstd data", name));
  }
  return out;
}

Result<std::vector<std::byte>> ReadRegionFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    const std::string zpath = path + ".zst";
    if (::stat(zpath.c_str(), &st) == 0) {
      auto z = ReadWhole(zpath);
      if (!z.ok()) return z.status();
      return ZstdDecompress(z.value(), zpath);
    }
  }
  return ReadWhole(path);
}

}  // namespace ipitrace
