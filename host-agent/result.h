// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_RESULT_H_
#define IPITRACE_HOST_AGENT_RESULT_H_

#include <string>
#include <utility>
#include <variant>

// IPT_CHECK guards invariants of the agent itself (never of input data: bad
// input is a Status or a Stats counter).  It is active in release builds.
#define IPT_CHECK(cond)                                                  \
  do {                                                                   \
    if (!(cond)) ::ipitrace::internal::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace ipitrace {
namespace internal {
[[noreturn]] void CheckFailed(const char* cond, const char* file, int line);
}  // namespace internal

// Error codes double as process exit codes (see main.cc).
enum class ErrorCode : int {
  kOk = 0,
  kInternal = 1,
  kUsage = 2,
  kIo = 3,         // unreadable or missing input file
  kMalformed = 4,  // region present but bad magic/version/layout
  // kvm-source: what the KVM source needs and could not have.
  kPermission = 5,  // not root: tracefs, debugfs or /proc/PID/fd unreadable
  kNoTracefs = 6,   // tracefs not mounted, or KVM tracepoints missing
  kNoDebugfs = 7,   // debugfs (KVM's per-vCPU TSC offsets) not mounted
  kNotKvmVm = 8,    // no such process, or it holds no KVM VM
  kNoBpf = 9,       // --backend bpf: the BPF programs would not load or attach
  kForeign = 10,    // claim: the file holds someone else's data
};

// A recoverable error as a value: a code and a one-line message.
class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(ErrorCode code, std::string message) {
    Status s;
    s.code_ = code;
    s.message_ = std::move(message);
    return s;
  }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

// Either a T or a non-ok Status.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    IPT_CHECK(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  const T& value() const& {
    IPT_CHECK(ok());
    return std::get<T>(v_);
  }
  T& value() & {
    IPT_CHECK(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    IPT_CHECK(ok());
    return std::get<T>(std::move(v_));
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_RESULT_H_
