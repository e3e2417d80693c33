// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_KVM_SOURCE_H_
#define IPITRACE_HOST_AGENT_KVM_SOURCE_H_

#include <csignal>
#include <cstdint>
#include <string>

#include "kvm_vm.h"
#include "result.h"

namespace ipitrace {

struct KvmSourceOptions {
  int32_t pid = 0;             // the VM's QEMU process
  std::string out;             // hypervisor region file (e.g. /dev/shm/...)
  uint32_t capacity = 1u << 19;  // records per ring
  uint32_t buffer_kb = 4096;   // host trace buffer per CPU
  double poll_ms = 100;
  std::string ready_file;      // created once tracing is armed
  KvmHostPaths paths;
  // Settings file tree to read instead of paths.sys_module for the
  // acceleration parameters (tests: simulate APICv on a host without it).
  std::string accel_from;
  bool quiet = false;
  // How the tracepoints are read: "bpf", "tracefs", or "auto" (BPF, else
  // tracefs, saying why).
  std::string backend = "auto";
};

// The KVM source: for one VM (its QEMU pid), reads the host's KVM
// tracepoints (KvmBpf, or KvmTracefs), turns them into hypervisor records
// (KvmTranslator) and writes them into a hypervisor region file
// (HvRegionWriter) that analyze, watch and snapshots read like QEMU's.
// Runs until the VM's process exits or *stop becomes non-zero; then it
// drains the trace buffers, marks the region stopped and detaches its
// programs or removes its tracefs instance (so no KVM event stays enabled).  Everything collected
// stays in the region file.  Errors: ErrorCode kPermission, kNoTracefs,
// kNoDebugfs, kNotKvmVm, kNoBpf (backend "bpf"), kIo (the region file), kUsage.
Status RunKvmSource(const KvmSourceOptions& o, volatile std::sig_atomic_t* stop);

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_KVM_SOURCE_H_
