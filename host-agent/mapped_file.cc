// SPDX-License-Identifier: MIT
#include "mapped_file.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <utility>

#include <fmt/format.h>

#include "file_bytes.h"

namespace ipitrace {
namespace {

// The fence table: the address ranges of fenced mappings, read by the
// SIGBUS handler (lock-free loads only); written under g_fence_mu.
constexpr int kFenceSlots = 64;
struct FenceSlot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> hit{false};
};
FenceSlot g_fence[kFenceSlots];
std::mutex g_fence_mu;
int g_fenced = 0;              // live fenced mappings (handler installed if > 0)
struct sigaction g_fence_prev {};  // disposition before the handler
uintptr_t g_page_size = 4096;

void OnFenceSigbus(int sig, siginfo_t* info, void* ctx) {
  const int saved_errno = errno;
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (FenceSlot& s : g_fence) {
    const uintptr_t begin = s.begin.load(std::memory_order_acquire);
    const uintptr_t end = s.end.load(std::memory_order_acquire);
    if (begin == 0 || addr < begin || addr >= end) continue;
    // The file ends before this page, so it ends before every later page
    // of the mapping too: zero-fill them all at once.
    const uintptr_t page = addr & ~(g_page_size - 1);
    void* p = ::mmap(reinterpret_cast<void*>(page), end - page, PROT_READ,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != MAP_FAILED) {
      s.hit.store(true, std::memory_order_relaxed);
      errno = saved_errno;
      return;  // the faulting read is retried and now reads zeros
    }
  }
  errno = saved_errno;
  // Not ours: the previous disposition.
  if (g_fence_prev.sa_flags & SA_SIGINFO) {
    if (g_fence_prev.sa_sigaction) {
      g_fence_prev.sa_sigaction(sig, info, ctx);
      return;
    }
  } else if (g_fence_prev.sa_handler != SIG_DFL && g_fence_prev.sa_handler != SIG_IGN) {
    g_fence_prev.sa_handler(sig);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);
  ::raise(SIGBUS);
}

// Registers [p, p + n); returns the slot or -1 when the table is full.
int AddFence(void* p, size_t n) {
  std::lock_guard<std::mutex> lock(g_fence_mu);
  for (int i = 0; i < kFenceSlots; ++i) {
    FenceSlot& s = g_fence[i];
    if (s.begin.load(std::memory_order_relaxed) != 0) continue;
    if (g_fenced++ == 0) {
      g_page_size = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
      struct sigaction sa {};
      sa.sa_sigaction = OnFenceSigbus;
      sa.sa_flags = SA_SIGINFO;
      sigemptyset(&sa.sa_mask);
      ::sigaction(SIGBUS, &sa, &g_fence_prev);
    }
    s.hit.store(false, std::memory_order_relaxed);
    s.end.store(reinterpret_cast<uintptr_t>(p) + n, std::memory_order_release);
    s.begin.store(reinterpret_cast<uintptr_t>(p), std::memory_order_release);
    return i;
  }
  return -1;
}

void RemoveFence(int slot) {
  std::lock_guard<std::mutex> lock(g_fence_mu);
  g_fence[slot].begin.store(0, std::memory_order_release);
  g_fence[slot].end.store(0, std::memory_order_release);
  if (--g_fenced == 0) ::sigaction(SIGBUS, &g_fence_prev, nullptr);
}

}  // namespace

Result<MappedFile> MappedFile::Open(const std::string& path, Fence fence) {
  auto opened = OpenRegularFile(path);
  if (!opened.ok()) return opened.status();
  MappedFile file;
  file.size_ = static_cast<size_t>(opened.value().size);
  if (file.size_ > 0) {
    void* p = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE,
                     opened.value().fd.get(), 0);
    if (p == MAP_FAILED) {
      return Status::Error(ErrorCode::kIo, fmt::format("cannot map {}: {}",
                                                       path, std::strerror(errno)));
    }
    file.data_ = p;
    if (fence == Fence::kZeroFill) {
      file.fence_slot_ = AddFence(p, file.size_);
      if (file.fence_slot_ < 0) {
        return Status::Error(ErrorCode::kInternal,
                             fmt::format("cannot map {}: more than {} fenced "
                                         "mappings open",
                                         path, kFenceSlots));
      }
    }
  }
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fence_slot_(std::exchange(other.fence_slot_, -1)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    fence_slot_ = std::exchange(other.fence_slot_, -1);
  }
  return *this;
}

MappedFile::~MappedFile() { Reset(); }

bool MappedFile::truncated() const {
  return fence_slot_ >= 0 && g_fence[fence_slot_].hit.load(std::memory_order_relaxed);
}

void MappedFile::Reset() {
  if (fence_slot_ >= 0) RemoveFence(fence_slot_);
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  fence_slot_ = -1;
}

}  // namespace ipitrace
