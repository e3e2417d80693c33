// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_KVM_VM_H_
#define IPITRACE_HOST_AGENT_KVM_VM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kvm_translator.h"
#include "result.h"

namespace ipitrace {

// Where a KVM VM's facts are read from; tests point these at fake trees.
struct KvmHostPaths {
  std::string proc = "/proc";
  std::string debugfs_kvm = "/sys/kernel/debug/kvm";
  std::string sys_module = "/sys/module";
};

// The host's APIC acceleration settings (IPT_HV_ACCEL_*), read from the KVM
// vendor modules' parameters, and what they leave this source able to
// observe.  The hidden stages of each setting are the ABI's rule
// (IPT_HV_ACCEL in abi/ipitrace_abi.h).
struct KvmAccel {
  uint32_t accel = 0;
  uint32_t stages = IPT_HV_STAGE_ALL;
  std::string vendor;  // "intel", "amd" or "" (no vendor module loaded)
  std::vector<std::string> notes;  // one line per setting read
};
KvmAccel ReadKvmAccel(const std::string& sys_module);

// KvmVm finds one VM from its QEMU process: the VM file descriptor (its
// debugfs directory is <pid>-<fd>), the vCPUs' KVM ids (from the vCPU file
// descriptors, ascending = QEMU's vCPU index order), which host thread runs
// which vCPU (QEMU names them "CPU <index>/KVM"; kvm_entry checks it), and
// each vCPU's TSC offset and the VM's TSC scaling from debugfs.
struct KvmVm {
  int32_t pid = 0;
  std::string debugfs_dir;
  KvmVmInfo info;
  std::vector<int32_t> tids;  // every thread of the process
  uint32_t named_threads = 0; // vCPU threads found by name
};
Result<KvmVm> FindKvmVm(int32_t pid, const KvmHostPaths& paths);

// The host TSC rate in kHz, measured against CLOCK_MONOTONIC_RAW.
uint32_t MeasureTscKhz();
uint64_t ReadTsc();

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_KVM_VM_H_
