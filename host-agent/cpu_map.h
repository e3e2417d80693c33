// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_CPU_MAP_H_
#define IPITRACE_HOST_AGENT_CPU_MAP_H_

#include <array>
#include <cstdint>
#include <vector>

#include "ipitrace_abi.h"
#include "region_reader.h"
#include "stats.h"

namespace ipitrace {

// CpuMap joins guest CPU numbers to vCPU indexes.  The guest numbers CPUs
// its own way; QEMU numbers vCPUs by creation order.  Both headers publish
// an index -> APIC ID table, and guest CPU c is vCPU i when
// guest.apic_id[c] == hv.apic_id[i].  When a guest CPU has no match (table
// missing or inconsistent) the identity map is used and unmatched_cpu_map is
// counted, so the report shows that the join is a guess.
class CpuMap {
 public:
  struct Entry {
    uint32_t cpu = 0;
    int32_t vcpu = -1;  // -1: none
    uint32_t apic_id = IPT_APIC_ID_NONE;
    bool matched = false;  // joined by APIC ID (not identity fallback)
  };

  CpuMap(const Region& guest, const Region& hv, Stats* stats);

  // -1 when the CPU/vCPU is unknown.
  int32_t VcpuOf(uint32_t cpu) const {
    return cpu < IPT_MAX_CPUS ? vcpu_of_cpu_[cpu] : -1;
  }
  int32_t CpuOf(uint32_t vcpu) const {
    return vcpu < IPT_MAX_CPUS ? cpu_of_vcpu_[vcpu] : -1;
  }
  // One entry per guest ring, ascending cpu.
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::array<int32_t, IPT_MAX_CPUS> vcpu_of_cpu_{};
  std::array<int32_t, IPT_MAX_CPUS> cpu_of_vcpu_{};
  std::vector<Entry> entries_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_CPU_MAP_H_
