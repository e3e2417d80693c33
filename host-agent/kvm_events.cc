// SPDX-License-Identifier: MIT
#include "kvm_events.h"

#include <algorithm>
#include <iterator>

#include "bpf/kvm_bpf_event.h"

namespace ipitrace {

#define IPT_STR2(x) #x
#define IPT_STR(x) IPT_STR2(x)

std::span<const KvmEventSpec> KvmEventSpecs() {
  using K = KvmEvent::Kind;
  static constexpr KvmEventSpec k[] = {
      {"kvm_apic_ipi", true, nullptr, false, K::kApicIpi, {"icr_low", "dest_id"}},
      {"kvm_apic_accept_irq", true, nullptr, false, K::kAcceptIrq, {"apicid", "dm", "tm", "vec"}},
      {"kvm_inj_virq", true, nullptr, false, K::kInjVirq, {"vector", "soft", "reinjected"}},
      {"kvm_eoi", true, nullptr, false, K::kEoi, {"apicid", "vector"}},
      {"kvm_vcpu_wakeup", true, nullptr, false, K::kWakeup, {"ns", "waited", "valid"}},
      {"kvm_write_tsc_offset", true, nullptr, false, K::kWriteTscOffset,
       {"vcpu_id", "previous_tsc_offset", "next_tsc_offset"}},
      {"kvm_entry", true, nullptr, true, K::kEntry, {"vcpu_id"}},
      // KVM_HC_SEND_IPI only (the BPF program tests the same constant)
      {"kvm_hypercall", false, "nr == " IPT_STR(IPT_KVM_HC_SEND_IPI), false, K::kHypercall,
       {"nr", "a0", "a1", "a2", "a3"}},
      {"kvm_apicv_accept_irq", false, nullptr, false, K::kApicvAcceptIrq,
       {"apicid", "dm", "tm", "vec"}},
  };
  return k;
}

void KvmEventOrder::Add(std::vector<KvmEvent>* run) {
  // The held events are in order; a stable merge of the (sorted) run into
  // them keeps the whole in order, and a loss marker before the events
  // read after it.
  auto earlier = [](const KvmEvent& a, const KvmEvent& b) { return a.host_tsc < b.host_tsc; };
  // A run is nearly in order (one CPU's ftrace buffer is; the BPF ring
  // interleaves CPUs by reservation, a stamp or two apart): an insertion
  // sort costs a pass plus the few moves, where a full sort would copy
  // every event.  It moves an event only past later ones: stable.  Past a
  // budget of moves (a run far from order) the rest is a stable sort.
  std::vector<KvmEvent>& r = *run;
  size_t budget = 8 * r.size();
  for (size_t i = 1; i < r.size(); ++i) {
    if (!earlier(r[i], r[i - 1])) continue;
    const KvmEvent e = r[i];
    size_t j = i;
    for (; j > 0 && earlier(e, r[j - 1]) && budget > 0; --j, --budget) r[j] = r[j - 1];
    r[j] = e;
    if (budget == 0) {
      std::stable_sort(r.begin(), r.end(), earlier);
      break;
    }
  }
  merged_.clear();
  std::merge(held_.begin(), held_.end(), run->begin(), run->end(), std::back_inserter(merged_),
             earlier);
  held_.swap(merged_);
  run->clear();
}

void KvmEventOrder::Release(uint64_t upto, std::vector<KvmEvent>* out) {
  auto cut = std::partition_point(held_.begin(), held_.end(),
                                  [&](const KvmEvent& e) { return e.host_tsc <= upto; });
  out->insert(out->end(), held_.begin(), cut);
  held_.erase(held_.begin(), cut);
}

}  // namespace ipitrace
