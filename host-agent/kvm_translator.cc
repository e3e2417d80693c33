// SPDX-License-Identifier: MIT
#include "kvm_translator.h"

#include <limits>

namespace ipitrace {
namespace {

__extension__ typedef unsigned __int128 U128;

constexpr uint32_t kApicDmFixed = 0, kApicDmLowest = 1, kApicDmNmi = 4, kApicDmInit = 5,
                   kApicDmSipi = 6;
constexpr uint64_t kHcSendIpi = 10;  // KVM_HC_SEND_IPI

void SetBit(std::array<uint64_t, 4>* bm, uint32_t i) {
  if (i < IPT_MAX_CPUS) (*bm)[i / 64] |= uint64_t{1} << (i % 64);
}
bool TestBit(const std::array<uint64_t, 4>& bm, uint32_t i) {
  return i < IPT_MAX_CPUS && ((bm[i / 64] >> (i % 64)) & 1u);
}

}  // namespace

KvmTranslator::KvmTranslator(HvRegionWriter* out, KvmVmInfo vm)
    : out_(out), vm_(std::move(vm)) {
  index_of_small_id_.fill(kNoVcpu);
  for (uint32_t i = 0; i < vm_.vcpu_id.size(); ++i) {
    if (vm_.vcpu_id[i] < IPT_MAX_CPUS)
      index_of_small_id_[vm_.vcpu_id[i]] = i;
    else
      index_of_id_[vm_.vcpu_id[i]] = i;
  }
  vm_.tsc_offset.resize(vm_.vcpu_id.size(), 0);
  checked_.assign(vm_.vcpu_id.size(), false);
  vcpu_context_.resize(vm_.vcpu_id.size());
}

uint64_t GuestTscOf(const KvmVmInfo& vm, uint32_t vcpu, uint64_t host_tsc) {
  uint64_t scaled = host_tsc;
  if (vm.tsc_ratio != 0) {
    const U128 p = static_cast<U128>(host_tsc) * vm.tsc_ratio;
    scaled = static_cast<uint64_t>(p >> vm.tsc_frac_bits);
  }
  const int64_t off = vcpu < vm.tsc_offset.size() ? vm.tsc_offset[vcpu] : 0;
  return scaled + static_cast<uint64_t>(off);
}

KvmTranslator::IcrContext& KvmTranslator::ContextOf(int32_t tid, uint32_t self) {
  return self != kNoVcpu ? vcpu_context_[self] : other_context_[tid];
}

const KvmTranslator::IcrContext* KvmTranslator::FindContext(int32_t tid, uint32_t self) const {
  if (self != kNoVcpu) return &vcpu_context_[self];
  const auto it = other_context_.find(tid);
  return it == other_context_.end() ? nullptr : &it->second;
}

uint32_t KvmTranslator::VcpuOfThread(int32_t tid) const {
  ThreadSlot& slot = thread_cache_[static_cast<uint32_t>(tid) % thread_cache_.size()];
  if (slot.tid == tid && tid >= 0) return slot.vcpu;
  const auto it = vm_.thread_vcpu.find(tid);
  const uint32_t v = it == vm_.thread_vcpu.end() ? kNoVcpu : it->second;
  slot = {tid, v};
  return v;
}

uint32_t KvmTranslator::VcpuOfId(uint64_t vcpu_id) const {
  if (vcpu_id < IPT_MAX_CPUS) return index_of_small_id_[vcpu_id];
  const auto it = index_of_id_.find(vcpu_id);
  return it == index_of_id_.end() ? kNoVcpu : it->second;
}

void KvmTranslator::Emit(uint32_t ring_vcpu, uint32_t clock_vcpu, uint64_t host_tsc,
                         ipt_record rec) {
  // A stage the region says this source does not observe carries no
  // records (with APICv, IPIv or AVIC on, KVM sees only some of them).
  uint32_t stage = 0;
  switch (rec.type) {
    case IPT_H_ICR: stage = IPT_HV_STAGE_ICR; break;
    case IPT_H_IRR: case IPT_H_NMI: case IPT_H_INIT: case IPT_H_SIPI: stage = IPT_HV_STAGE_IRR; break;
    case IPT_H_KICK: stage = IPT_HV_STAGE_KICK; break;
    case IPT_H_ACK: stage = IPT_HV_STAGE_ACK; break;
    case IPT_H_EOI: stage = IPT_HV_STAGE_EOI; break;
    default: break;
  }
  if (stage && !(vm_.stages & stage)) {
    ++counts_.hidden;
    return;
  }
  rec.tsc = GuestTsc(clock_vcpu, host_tsc);
  out_->Append(ring_vcpu == kNoVcpu ? IPT_CPU_NONE : ring_vcpu, rec);
  ++counts_.records;
}

void KvmTranslator::Push(const KvmEvent& ev) {
  ++counts_.events;
  const uint32_t self = VcpuOfThread(ev.tid);
  // An accept continues the thread's ICR write; anything else ends it.
  if (ev.kind != KvmEvent::Kind::kAcceptIrq && ev.kind != KvmEvent::Kind::kApicvAcceptIrq) {
    if (self != kNoVcpu)
      vcpu_context_[self].icrs.clear();
    else if (!other_context_.empty())
      other_context_.erase(ev.tid);
  }
  switch (ev.kind) {
    case KvmEvent::Kind::kApicIpi:
      OnApicIpi(ev, self);
      break;
    case KvmEvent::Kind::kHypercall:
      if (ev.f[0] == kHcSendIpi) OnPvIpi(ev, self);
      break;
    case KvmEvent::Kind::kAcceptIrq:
      OnAccept(ev, self);
      break;
    case KvmEvent::Kind::kApicvAcceptIrq:
      // Posted into the target's vAPIC: the accept was recorded already;
      // the injection will not be seen (APICv hides the ACK stage).
      break;
    case KvmEvent::Kind::kWakeup: {
      if (self == kNoVcpu) {
        ++counts_.unmapped_thread;
        out_->AddLost(IPT_HV_LOST_UNMAPPED, 1);
        break;
      }
      ipt_record r{};
      r.type = IPT_H_KICK;
      r.target = static_cast<uint16_t>(self);
      r.flags = ev.f[1] ? IPT_KICK_F_HALTED : 0;
      r.arg0 = static_cast<uint32_t>(std::min<uint64_t>(ev.f[0] / 1000, UINT32_MAX));
      Emit(self, self, ev.host_tsc, r);
      break;
    }
    case KvmEvent::Kind::kInjVirq:
      OnInjVirq(ev, self);
      break;
    case KvmEvent::Kind::kEoi: {
      const uint32_t v = VcpuOfId(ev.f[0]);
      if (v == kNoVcpu) {
        ++counts_.unknown_vcpu;
        out_->AddLost(IPT_HV_LOST_UNKNOWN_VCPU, 1);
        break;
      }
      ipt_record r{};
      r.type = IPT_H_EOI;
      r.target = IPT_CPU_NONE;
      r.vector = static_cast<uint8_t>(ev.f[1]);
      Emit(v, v, ev.host_tsc, r);
      break;
    }
    case KvmEvent::Kind::kWriteTscOffset: {
      const uint32_t v = VcpuOfId(ev.f[0]);
      if (v != kNoVcpu) vm_.tsc_offset[v] = static_cast<int64_t>(ev.f[2]);
      break;
    }
    case KvmEvent::Kind::kEntry:
      OnEntry(ev);
      break;
    case KvmEvent::Kind::kLost:
      OnLost(ev);
      break;
  }
}

void KvmTranslator::ResolveDestination(uint32_t icr_low, uint32_t dest, uint32_t self,
                                       std::array<uint64_t, 4>* bitmap,
                                       uint8_t* flags) const {
  const uint32_t n = static_cast<uint32_t>(vm_.vcpu_id.size());
  const uint32_t shorthand = (icr_low >> 18) & 3;
  const bool logical = icr_low & (1u << 11);
  auto all = [&](bool with_self) {
    for (uint32_t i = 0; i < n; ++i)
      if (with_self || i != self) SetBit(bitmap, i);
    if (n > IPT_MAX_CPUS) *flags |= IPT_ICR_F_MORE;
  };
  switch (shorthand) {
    case 1:  // self
      if (self != kNoVcpu) SetBit(bitmap, self);
      return;
    case 2:
      all(true);
      return;
    case 3:
      all(false);
      return;
    default:
      break;
  }
  if (logical) {
    // The LDRs (xAPIC) or the x2APIC mode itself are not in the trace.
    *flags |= IPT_ICR_F_UNRESOLVED;
    return;
  }
  const bool have_ff = VcpuOfId(0xff) != kNoVcpu;
  if (dest == 0xffffffffu || (dest == 0xff && !have_ff)) {
    all(true);
    return;
  }
  const uint32_t v = VcpuOfId(dest);
  if (v != kNoVcpu) SetBit(bitmap, v);
}

void KvmTranslator::OnApicIpi(const KvmEvent& ev, uint32_t self) {
  const auto icr_low = static_cast<uint32_t>(ev.f[0]);
  const auto dest = static_cast<uint32_t>(ev.f[1]);
  ipt_record r{};
  r.type = IPT_H_ICR;
  r.target = IPT_CPU_NONE;
  r.vector = static_cast<uint8_t>(icr_low & 0xff);
  r.arg0 = icr_low;
  r.arg1 = dest;
  std::array<uint64_t, 4> bm{};
  uint8_t flags = dest > 0xff ? IPT_ICR_F_X2APIC : 0;
  ResolveDestination(icr_low, dest, self, &bm, &flags);
  r.flags = flags;
  for (int i = 0; i < 4; ++i) r.a[i] = bm[static_cast<size_t>(i)];
  const uint32_t ring = self;
  const uint64_t seq = out_->NextSeq(ring == kNoVcpu ? IPT_CPU_NONE : ring);
  Emit(ring, self == kNoVcpu ? 0 : self, ev.host_tsc, r);
  ContextOf(ev.tid, self).icrs.push_back({seq, kNoVcpu, bm, (flags & IPT_ICR_F_UNRESOLVED) != 0});
}

void KvmTranslator::OnPvIpi(const KvmEvent& ev, uint32_t self) {
  // kvm_pv_send_ipi(bitmap_low, bitmap_high, min, icr): bit b of the low
  // word names APIC ID min + b, of the high word min + 64 + b.
  const uint64_t words[2] = {ev.f[1], ev.f[2]};
  const uint64_t min = ev.f[3];
  const auto icr_low = static_cast<uint32_t>(ev.f[4]);
  IcrContext& ctx = ContextOf(ev.tid, self);
  for (int w = 0; w < 2; ++w) {
    for (uint32_t b = 0; b < 64; ++b) {
      if (!((words[w] >> b) & 1u)) continue;
      const uint64_t apic = min + uint64_t{64} * static_cast<uint64_t>(w) + b;
      const uint32_t v = VcpuOfId(apic);
      if (v == kNoVcpu) {
        ++counts_.unknown_vcpu;
        continue;  // KVM skips it too: no such vCPU
      }
      ipt_record r{};
      r.type = IPT_H_ICR;
      r.target = IPT_CPU_NONE;
      r.vector = static_cast<uint8_t>(icr_low & 0xff);
      r.flags = IPT_ICR_F_PV | (apic > 0xff ? IPT_ICR_F_X2APIC : 0);
      r.arg0 = icr_low;
      r.arg1 = static_cast<uint32_t>(apic);
      std::array<uint64_t, 4> bm{};
      SetBit(&bm, v);
      for (int i = 0; i < 4; ++i) r.a[i] = bm[static_cast<size_t>(i)];
      const uint64_t seq = out_->NextSeq(self == kNoVcpu ? IPT_CPU_NONE : self);
      Emit(self, self == kNoVcpu ? v : self, ev.host_tsc, r);
      ctx.icrs.push_back({seq, v, bm, false});
    }
  }
}

void KvmTranslator::OnAccept(const KvmEvent& ev, uint32_t self) {
  const uint32_t t = VcpuOfId(ev.f[0]);
  if (t == kNoVcpu) {
    ++counts_.unknown_vcpu;
    out_->AddLost(IPT_HV_LOST_UNKNOWN_VCPU, 1);
    return;
  }
  const auto dm = static_cast<uint32_t>(ev.f[1]);
  const auto vec = static_cast<uint8_t>(ev.f[3]);
  ipt_record r{};
  switch (dm) {
    case kApicDmFixed:
    case kApicDmLowest:
      r.type = IPT_H_IRR;
      break;
    case kApicDmNmi:
      r.type = IPT_H_NMI;
      break;
    case kApicDmInit:
      r.type = IPT_H_INIT;
      break;
    case kApicDmSipi:
      r.type = IPT_H_SIPI;
      break;
    default:
      return;  // SMI, ExtINT: not interrupts the tracker follows
  }
  r.target = static_cast<uint16_t>(t);
  r.vector = vec;
  r.a[0] = IPT_SEQ_INVALID;
  if (const IcrContext* ctx = FindContext(ev.tid, self)) {
    for (const IcrContext::Icr& icr : ctx->icrs) {
      if (icr.target == t || (icr.target == kNoVcpu && (icr.unresolved || TestBit(icr.bitmap, t)))) {
        r.a[0] = icr.seq;
        break;
      }
    }
  }
  // On the thread's own ring and clock (the sender's, for an IPI); from a
  // thread that is no vCPU, the extra ring on the target's clock.
  Emit(self, self == kNoVcpu ? t : self, ev.host_tsc, r);
}

void KvmTranslator::OnInjVirq(const KvmEvent& ev, uint32_t self) {
  if (self == kNoVcpu) {
    ++counts_.unmapped_thread;
    out_->AddLost(IPT_HV_LOST_UNMAPPED, 1);
    return;
  }
  if (ev.f[1]) {
    ++counts_.soft;
    return;
  }
  if (ev.f[2]) {
    ++counts_.reinjected;
    return;
  }
  const auto vec = static_cast<uint8_t>(ev.f[0]);
  ipt_record r{};
  r.type = IPT_H_ACK;
  r.target = IPT_CPU_NONE;
  r.vector = vec;
  Emit(self, self, ev.host_tsc, r);
}

void KvmTranslator::OnEntry(const KvmEvent& ev) {
  const uint32_t v = VcpuOfId(ev.f[0]);
  if (v == kNoVcpu) {
    ++counts_.unknown_vcpu;
    return;
  }
  auto it = vm_.thread_vcpu.find(ev.tid);
  if (it == vm_.thread_vcpu.end()) {
    vm_.thread_vcpu[ev.tid] = v;
    ++counts_.map_learned;
  } else if (it->second != v) {
    it->second = v;
    ++counts_.map_fixed;
  }
  // The cached entry may hold the old answer.
  thread_cache_[static_cast<uint32_t>(ev.tid) % thread_cache_.size()] = {};
  if (!checked_[v]) {
    checked_[v] = true;
    ++checked_count_;
  }
}

void KvmTranslator::OnLost(const KvmEvent& ev) {
  const bool known = ev.f[0] != std::numeric_limits<uint64_t>::max();
  if (known) counts_.lost += ev.f[0];
  out_->AddLost(IPT_HV_LOST_OVERRUN, known ? ev.f[0] : 1);
  ++counts_.gaps;
  for (uint32_t v = 0; v < vm_.vcpu_id.size(); ++v) {
    ipt_record r{};
    r.type = IPT_H_GAP;
    r.target = IPT_CPU_NONE;
    r.arg0 = known ? static_cast<uint32_t>(std::min<uint64_t>(ev.f[0], 0xfffffffeu)) : 0xffffffffu;
    r.arg1 = IPT_HV_LOST_OVERRUN;
    r.a[0] = GuestTsc(v, ev.f[1]);
    Emit(v, v, ev.host_tsc, r);
  }
}

}  // namespace ipitrace
