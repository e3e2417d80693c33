// SPDX-License-Identifier: MIT
#include "cpu_map.h"

namespace ipitrace {

CpuMap::CpuMap(const Region& guest, const Region& hv, Stats* stats) {
  vcpu_of_cpu_.fill(-1);
  cpu_of_vcpu_.fill(-1);
  const uint32_t hv_n = hv.header.cpu_count;  // validated <= IPT_MAX_CPUS
  const uint32_t guest_n = guest.header.cpu_count;
  for (uint32_t c = 0; c < IPT_MAX_CPUS; ++c) {
    if (!guest.RingForCpu(c)) continue;
    Entry e;
    e.cpu = c;
    if (c < guest_n) e.apic_id = guest.header.apic_id[c];
    if (e.apic_id != IPT_APIC_ID_NONE) {
      for (uint32_t i = 0; i < hv_n; ++i) {
        if (hv.header.apic_id[i] == e.apic_id && cpu_of_vcpu_[i] < 0) {
          e.vcpu = static_cast<int32_t>(i);
          e.matched = true;
          break;
        }
      }
    }
    if (hv.source.guest_only) {
      // No hypervisor stream: no vCPU to join (and no guess to count).
    } else if (!e.matched) {
      stats->Increment(StatId::unmatched_cpu_map);
      if (cpu_of_vcpu_[c] < 0) e.vcpu = static_cast<int32_t>(c);
    }
    if (e.vcpu >= 0) {
      vcpu_of_cpu_[c] = e.vcpu;
      cpu_of_vcpu_[static_cast<uint32_t>(e.vcpu)] = static_cast<int32_t>(c);
    }
    entries_.push_back(e);
  }
}

}  // namespace ipitrace
