// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_KVM_TRANSLATOR_H_
#define IPITRACE_HOST_AGENT_KVM_TRANSLATOR_H_

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "hv_region_writer.h"

namespace ipitrace {

// One KVM tracepoint hit of the traced VM, decoded from the host's trace
// buffer (KvmTracefs) or made up by a test.  host_tsc is the host TSC the
// event was stamped with (trace_clock x86-tsc), tid the host thread that
// hit it.  Fields by kind, as arch/x86/kvm/trace.h names them:
//   kApicIpi        f0 icr_low, f1 dest_id              (sender's thread)
//   kHypercall      f0 nr, f1 a0, f2 a1, f3 a2, f4 a3    (sender's thread)
//   kAcceptIrq      f0 apicid (target vcpu_id), f1 dm, f2 tm, f3 vec
//   kApicvAcceptIrq same fields (posted to the target's vAPIC)
//   kWakeup         f0 ns, f1 waited, f2 valid          (woken vCPU's thread)
//   kInjVirq        f0 vector, f1 soft, f2 reinjected   (target's thread)
//   kEoi            f0 apicid, f1 vector                (that vCPU's thread)
//   kWriteTscOffset f0 vcpu_id, f1 previous, f2 next offset
//   kEntry          f0 vcpu_id                          (that vCPU's thread)
//   kLost           f0 events lost (UINT64_MAX: unknown), f1 host TSC of the
//                   last event read before the loss; host_tsc: the first
//                   event after it
struct KvmEvent {
  enum class Kind : uint8_t {
    kApicIpi,
    kHypercall,
    kAcceptIrq,
    kApicvAcceptIrq,
    kWakeup,
    kInjVirq,
    kEoi,
    kWriteTscOffset,
    kEntry,
    kLost,
  };
  Kind kind = Kind::kApicIpi;
  int32_t tid = -1;
  uint64_t host_tsc = 0;
  std::array<uint64_t, 5> f{};
};

// The traced VM as the translator needs it: vCPU index -> KVM vcpu_id (the
// APIC ID under QEMU), host thread -> vCPU index, per-vCPU TSC offset and
// the VM's TSC scaling, and the stages the host's settings let us observe.
struct KvmVmInfo {
  std::vector<uint32_t> vcpu_id;
  std::unordered_map<int32_t, uint32_t> thread_vcpu;
  std::vector<int64_t> tsc_offset;  // by vCPU index
  uint64_t tsc_ratio = 0;           // 0: no scaling
  uint32_t tsc_frac_bits = 0;
  uint32_t stages = IPT_HV_STAGE_ALL;
};

// KvmTranslator turns the VM's KVM events, in host-TSC order, into
// hypervisor records, as the patched QEMU's LAPIC hooks would have written
// them (docs/streams.md), stamped with the guest TSC of the vCPU whose ring
// gets the record: guest = ((host * ratio) >> frac) + offset, following
// kvm_write_tsc_offset.
//
//   kvm_apic_ipi        -> H_ICR on the sender's ring, the destination
//                          resolved against the APIC IDs (physical and
//                          shorthands; logical destinations are marked
//                          IPT_ICR_F_UNRESOLVED: the LDRs are not visible)
//   kvm_hypercall nr 10 -> one H_ICR per target the PV mask names
//                          (IPT_ICR_F_PV)
//   kvm_apic_accept_irq -> H_IRR (H_NMI/H_INIT/H_SIPI) on the ring of the
//                          thread that set it; a[0] = seq of the H_ICR of
//                          that thread's ICR write naming the target when it
//                          directly precedes (the same call), else invalid
//   kvm_vcpu_wakeup     -> H_KICK on the woken vCPU's ring (target = itself)
//   kvm_inj_virq        -> H_ACK on the target's ring (not soft, not
//                          re-injected: a re-injection is the same interrupt)
//   kvm_eoi             -> H_EOI on that vCPU's ring (a PV EOI traces
//                          kvm_eoi too; its kvm_pv_eoi is not read)
//   a trace-buffer loss -> H_GAP on every vCPU ring
//
// Records of a stage the host's settings hide (KvmVmInfo::stages) are not
// written, so the region never holds a partial view of a stage it says it
// cannot see.
//
// No H_IRR says "coalesced": KVM's tracepoints do not show whether the bit
// was already set, and a model built from accepts and injections would
// have to assume that KVM loses no bit, which is what the trace is for.
// The region says so (no IPT_HV_STAGE_COALESCE, see ReadKvmAccel).
// vCPU 'vcpu's guest TSC at host TSC 'host_tsc': ((host x ratio) >> frac)
// + offset, as KVM computes it (kvm_read_l1_tsc).
uint64_t GuestTscOf(const KvmVmInfo& vm, uint32_t vcpu, uint64_t host_tsc);

// KvmTranslator: the KVM events -> hypervisor records mapping described
// above, with the per-thread ICR context it needs to pair an accept with
// the ICR write that caused it, and the thread map kvm_entry checks.
class KvmTranslator {
 public:
  struct Counts {
    uint64_t events = 0;
    uint64_t records = 0;
    uint64_t unmapped_thread = 0;  // events on a thread with no vCPU
    uint64_t unknown_vcpu = 0;     // events naming a vcpu_id not in the VM
    uint64_t reinjected = 0;       // kvm_inj_virq re-injections, skipped
    uint64_t soft = 0;             // soft interrupts, skipped
    uint64_t map_fixed = 0;        // kvm_entry moved a thread to another vCPU
    uint64_t map_learned = 0;      // kvm_entry mapped an unnamed thread
    uint64_t lost = 0;             // trace events lost (known counts)
    uint64_t gaps = 0;             // H_GAP markers written (per loss)
    uint64_t hidden = 0;           // events of stages the region says are
                                   // not observed, not written
  };

  KvmTranslator(HvRegionWriter* out, KvmVmInfo vm);

  void Push(const KvmEvent& ev);

  const Counts& counts() const { return counts_; }
  // True once kvm_entry showed, for every vCPU, the thread that runs it.
  bool ThreadMapChecked() const { return checked_count_ == vm_.vcpu_id.size(); }
  const KvmVmInfo& vm() const { return vm_; }
  // Guest TSC of vCPU 'vcpu' at host TSC 'host_tsc'.
  uint64_t GuestTsc(uint32_t vcpu, uint64_t host_tsc) const { return GuestTscOf(vm_, vcpu, host_tsc); }

 private:
  static constexpr uint32_t kNoVcpu = 0xffffffffu;
  // The H_ICRs of one thread's latest ICR write, while its accepts follow.
  struct IcrContext {
    struct Icr {
      uint64_t seq;
      uint32_t target;  // kNoVcpu: see bitmap
      std::array<uint64_t, 4> bitmap;
      bool unresolved;
    };
    std::vector<Icr> icrs;
  };

  uint32_t VcpuOfThread(int32_t tid) const;
  uint32_t VcpuOfId(uint64_t vcpu_id) const;
  void Emit(uint32_t ring_vcpu, uint32_t clock_vcpu, uint64_t host_tsc, ipt_record rec);
  void OnApicIpi(const KvmEvent& ev, uint32_t self);
  void OnPvIpi(const KvmEvent& ev, uint32_t self);
  void OnAccept(const KvmEvent& ev, uint32_t self);
  void OnInjVirq(const KvmEvent& ev, uint32_t self);
  void OnEntry(const KvmEvent& ev);
  void OnLost(const KvmEvent& ev);
  void ResolveDestination(uint32_t icr_low, uint32_t dest, uint32_t self,
                          std::array<uint64_t, 4>* bitmap, uint8_t* flags) const;

  HvRegionWriter* out_;
  KvmVmInfo vm_;
  // vCPU index by KVM vcpu_id: an array below IPT_MAX_CPUS (every event
  // looks one up), a map above.  And a direct-mapped cache of the thread
  // map (refilled from vm_.thread_vcpu on a miss, dropped at kvm_entry).
  std::unordered_map<uint64_t, uint32_t> index_of_id_;
  std::array<uint32_t, IPT_MAX_CPUS> index_of_small_id_;
  struct ThreadSlot {
    int32_t tid = -1;
    uint32_t vcpu = 0;
  };
  mutable std::array<ThreadSlot, 64> thread_cache_{};
  // The ICR writes a thread made since its last other event: per vCPU for
  // vCPU threads (cleared, not freed: no allocation per event), by tid
  // for the others.
  IcrContext& ContextOf(int32_t tid, uint32_t self);
  const IcrContext* FindContext(int32_t tid, uint32_t self) const;
  std::vector<IcrContext> vcpu_context_;
  std::unordered_map<int32_t, IcrContext> other_context_;
  std::vector<bool> checked_;  // by vCPU: kvm_entry seen on its thread
  size_t checked_count_ = 0;
  Counts counts_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_KVM_TRANSLATOR_H_
