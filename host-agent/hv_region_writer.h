// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_HV_REGION_WRITER_H_
#define IPITRACE_HOST_AGENT_HV_REGION_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ipitrace_abi.h"
#include "result.h"

namespace ipitrace {

// HvRegionWriter lays out and fills a hypervisor region (abi/ipitrace_abi.h)
// as the patched QEMU does: one flight-recorder ring per vCPU (ring k written
// only for vCPU k) and one extra ring (cpu = IPT_CPU_NONE) for work outside
// a vCPU thread.  It is how the agent's own KVM source becomes a hypervisor
// producer like QEMU, so analyze, watch, snapshots and the harness read one
// format.
//
// The region lives in memory the caller provides: a shared file mapped with
// MAP_SHARED (Create) so that watch and snapshots read it live, or a plain
// buffer (tests).  There is one writer (the collector's thread); readers
// follow the ring protocol of the ABI: a slot's seq is invalidated, the
// fields written, then seq set to its index and the ring head published with
// release ordering.
class HvRegionWriter {
 public:
  struct Layout {
    uint32_t vcpus = 0;             // rings 0..vcpus-1, then the extra ring
    uint32_t capacity = 1u << 16;   // records per ring, a power of two
    uint32_t tsc_khz = 0;           // guest TSC rate
    std::vector<uint32_t> apic_id;  // vCPU index -> APIC ID
    std::string release;            // kernel_release field (source + host)
    uint16_t producer = IPT_PRODUCER_KVM;
  };

  // Bytes a region with this layout needs.
  static uint64_t SizeFor(const Layout& l);
  // Checks a layout (vCPU count, capacity, APIC-ID table).
  static Status Check(const Layout& l);

  // Writes the header into 'mem' (SizeFor(l) bytes, zeroed) and prepares the
  // rings.  The region is READY and TRACING afterwards.
  HvRegionWriter(std::span<std::byte> mem, const Layout& l, uint64_t start_tsc);

  // Appends 'rec' to the ring of vCPU 'vcpu' (IPT_CPU_NONE: the extra ring);
  // rec.seq and rec.cpu are set here.  Returns the seq given to it.
  uint64_t Append(uint32_t vcpu, ipt_record rec);
  // The seq the next Append on that ring will give.
  uint64_t NextSeq(uint32_t vcpu) const;

  // The header extension: what the source observes, and its losses.
  void SetSource(uint32_t stages, uint32_t stages_partial, uint32_t accel,
                 const char* name);
  void AddLost(uint32_t cause, uint64_t n);
  // Clears TRACING, sets STOPPED and stop_tsc.
  void Stop(uint64_t stop_tsc);

  uint32_t vcpus() const { return vcpus_; }

 private:
  ipt_ring_header* RingHeader(uint32_t ring) const;
  ipt_record* Slots(uint32_t ring) const;
  uint32_t RingOf(uint32_t vcpu) const { return vcpu < vcpus_ ? vcpu : vcpus_; }

  std::span<std::byte> mem_;
  uint32_t vcpus_ = 0;
  uint32_t capacity_ = 0;
  uint64_t stride_ = 0;
  std::vector<uint64_t> heads_;  // the writer's own copy of each head
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_HV_REGION_WRITER_H_
