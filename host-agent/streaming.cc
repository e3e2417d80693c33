// SPDX-License-Identifier: MIT
#include "streaming.h"

#include <algorithm>
#include <limits>

namespace ipitrace {
namespace {

constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();
constexpr uint32_t kMax = IPT_MAX_CPUS;

}  // namespace

// ---------------------------------------------------------------- source

SyntheticSource::SyntheticSource(uint64_t requests, uint32_t cpus, uint64_t loss_every)
    : requests_(requests), loss_every_(loss_every), cpus_(std::clamp<uint32_t>(cpus, 2, kMax)),
      seq_(2 * kMax, 0) {}

void SyntheticSource::Fill() {
  const uint64_t i = next_req_++;
  const uint16_t s = static_cast<uint16_t>(i % cpus_);
  const uint16_t t = static_cast<uint16_t>((i + 1) % cpus_);
  const uint64_t base = 1000 + i * 1000;
  const bool lost = loss_every_ && (i + 1) % loss_every_ == 0;
  const uint64_t csd = 0xffff888000000000ULL + (i & 0xfffff) * 64;
  const uint64_t func = 0xffffffff81001000ULL;
  batch_len_ = batch_pos_ = 0;
  auto add = [&](StreamKind k, uint16_t cpu, uint16_t type, uint64_t tsc) -> ipt_record& {
    StreamRecord& r = batch_[batch_len_++];
    r.stream = k;
    r.rec = ipt_record{};
    r.rec.seq = seq_[(k == StreamKind::kHv ? kMax : 0) + cpu]++;
    r.rec.tsc = tsc;
    r.rec.type = type;
    r.rec.cpu = cpu;
    r.rec.target = IPT_CPU_NONE;
    return r.rec;
  };
  ipt_record& q = add(StreamKind::kGuest, s, IPT_G_QUEUE, base);
  q.target = t;
  q.flags = IPT_CSD_SYNC;
  q.a[0] = func;
  q.a[1] = csd;
  ipt_record& send = add(StreamKind::kGuest, s, IPT_G_SEND, base + 10);
  send.target = t;
  send.a[0] = 0xffffffff81100000ULL;
  ipt_record& icr = add(StreamKind::kHv, s, IPT_H_ICR, base + 20);
  icr.vector = kVecSingle;
  icr.a[t / 64] |= uint64_t{1} << (t % 64);
  const uint64_t icr_seq = icr.seq;
  if (lost) return;
  ipt_record& irr = add(StreamKind::kHv, s, IPT_H_IRR, base + 30);
  irr.target = t;
  irr.vector = kVecSingle;
  irr.a[0] = icr_seq;
  add(StreamKind::kHv, t, IPT_H_ACK, base + 40).vector = kVecSingle;
  add(StreamKind::kGuest, t, IPT_G_IRQ_ENTRY, base + 50).vector = kVecSingle;
  ipt_record& fe = add(StreamKind::kGuest, t, IPT_G_FUNC_ENTRY, base + 60);
  fe.a[0] = func;
  fe.a[1] = csd;
  ipt_record& fx = add(StreamKind::kGuest, t, IPT_G_FUNC_EXIT, base + 70);
  fx.a[0] = func;
  fx.a[1] = csd;
}

bool SyntheticSource::Next(StreamRecord* out) {
  if (batch_pos_ == batch_len_) {
    if (next_req_ >= requests_) return false;
    Fill();
  }
  *out = batch_[batch_pos_++];
  ++emitted_;
  return true;
}

// ---------------------------------------------------------------- tracker

StreamTracker::StreamTracker(StreamOptions options)
    : o_(std::move(options)),
      open_by_target_(kMax),
      undecided_(size_t{kMax} * kMax, kNone),
      await_icr_(kMax),
      await_irr_(kMax),
      await_ack_(kMax),
      await_irq_(kMax),
      last_ack_tsc_(kMax, 0),
      loss_queue_tsc_(kMax, std::numeric_limits<uint64_t>::max()) {}

int32_t StreamTracker::Vcpu(uint32_t cpu) const {
  if (cpu >= kMax) return -1;
  if (o_.vcpu_of_cpu.empty()) return static_cast<int32_t>(cpu);
  return cpu < o_.vcpu_of_cpu.size() ? o_.vcpu_of_cpu[cpu] : -1;
}

uint32_t StreamTracker::Alloc() {
  uint32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    id = static_cast<uint32_t>(slab_.size());
    slab_.emplace_back();
  }
  ++open_;
  peak_open_ = std::max(peak_open_, open_);
  return id;
}

void StreamTracker::Erase(std::vector<uint32_t>* v, uint32_t id) {
  auto it = std::find(v->begin(), v->end(), id);
  if (it != v->end()) v->erase(it);
}

void StreamTracker::Advance(uint32_t id, Stage s, uint64_t tsc) {
  Req& r = slab_[id];
  r.stage = s;
  r.stage_tsc = tsc;
  ++r.epoch;
  timeouts_.push_back({tsc + o_.window_ticks, id, r.epoch});
}

void StreamTracker::Resolve(uint32_t id, Verdict v) {
  Req& r = slab_[id];
  ++counts_[static_cast<size_t>(v)];
  Erase(&open_by_target_[r.dst], id);
  const int32_t vs = Vcpu(r.src), vt = Vcpu(r.dst);
  if (vs >= 0) {
    Erase(&await_icr_[vs], id);
    Erase(&await_irr_[vs], id);
  }
  if (vt >= 0) Erase(&await_ack_[vt], id);
  Erase(&await_irq_[r.dst], id);
  uint32_t& u = undecided_[size_t{r.src} * kMax + r.dst];
  if (u == id) u = kNone;
  if (IsLoss(v) && !r.served) loss_queue_tsc_[r.dst] = r.queue_tsc;
  if (!IsLoss(v) && loss_queue_tsc_[r.dst] == r.queue_tsc)
    loss_queue_tsc_[r.dst] = std::numeric_limits<uint64_t>::max();
  r.stage = kFree;
  ++r.epoch;
  free_.push_back(id);
  --open_;
}

void StreamTracker::Expire(uint64_t now) {
  while (!timeouts_.empty() && timeouts_.front().deadline < now) {
    const Timeout t = timeouts_.front();
    timeouts_.pop_front();
    Req& r = slab_[t.id];
    if (r.stage == kFree || r.epoch != t.epoch) continue;
    const int32_t vt = Vcpu(r.dst);
    switch (r.stage) {
      case kDecide: {
        uint32_t& u = undecided_[size_t{r.src} * kMax + r.dst];
        if (u == t.id) u = kNone;
        Advance(t.id, kRider, r.stage_tsc + o_.window_ticks);
        break;
      }
      case kIcr: Resolve(t.id, Verdict::kLostGuestToHypervisor); break;
      case kIrr: Resolve(t.id, Verdict::kLostInRouting); break;
      case kAck:
        Resolve(t.id, vt >= 0 && last_ack_tsc_[vt] > r.stage_tsc
                          ? Verdict::kLostInInjection
                          : Verdict::kTargetBlocked);
        break;
      case kIrq: Resolve(t.id, Verdict::kLostInGuestEntry); break;
      case kServe: Resolve(t.id, Verdict::kHandlerMissedWork); break;
      case kRider: {
        // Unserved without an IPI of its own: behind a lost IPI, behind an
        // earlier outstanding request (handler missed it), or first in the
        // queue with no send at all.
        if (loss_queue_tsc_[r.dst] <= r.queue_tsc) {
          Resolve(t.id, Verdict::kQueuedBehindLoss);
          break;
        }
        bool earlier = false;
        for (uint32_t o : open_by_target_[r.dst]) {
          if (o == t.id) break;
          earlier = true;
          break;
        }
        Resolve(t.id, earlier || r.elided ? Verdict::kHandlerMissedWork
                                          : Verdict::kLostBeforeSend);
        break;
      }
      default:
        break;
    }
  }
}

void StreamTracker::Push(const StreamRecord& sr) {
  const ipt_record& rec = sr.rec;
  ++records_;
  Expire(rec.tsc);
  const uint32_t cpu = rec.cpu;
  if (cpu >= kMax) return;
  if (sr.stream == StreamKind::kGuest) {
    switch (rec.type) {
      case IPT_G_QUEUE: {
        if (rec.target >= kMax || rec.flags == IPT_CSD_IRQ_WORK) return;
        const uint32_t id = Alloc();
        Req& r = slab_[id];
        const uint32_t epoch = r.epoch;  // keeps stale timeouts stale
        r = Req{};
        r.epoch = epoch;
        r.src = static_cast<uint16_t>(cpu);
        r.dst = rec.target;
        r.queue_tsc = rec.tsc;
        r.func = rec.a[0];
        r.csd = (rec.flags == IPT_CSD_TTWU) ? 0 : rec.a[1];
        uint32_t& u = undecided_[size_t{cpu} * kMax + rec.target];
        if (u != kNone) Advance(u, kRider, rec.tsc);  // the next queue decides
        u = id;
        open_by_target_[rec.target].push_back(id);
        Advance(id, kDecide, rec.tsc);
        return;
      }
      case IPT_G_SEND:
      case IPT_G_ELIDE: {
        if (rec.target >= kMax) return;
        if (rec.type == IPT_G_SEND && rec.a[0] == 0) return;  // reschedule
        uint32_t& u = undecided_[size_t{cpu} * kMax + rec.target];
        if (u == kNone) return;
        const uint32_t id = u;
        u = kNone;
        Req& r = slab_[id];
        if (rec.type == IPT_G_ELIDE) {
          r.elided = true;
          if (r.served) Resolve(id, Verdict::kServedWithoutIpi);
          else Advance(id, kRider, rec.tsc);
          return;
        }
        r.vector = (rec.flags & IPT_SEND_F_MASK) ? o_.vec_call_function
                                                 : o_.vec_call_function_single;
        const int32_t vs = Vcpu(cpu);
        if (vs < 0) return;
        Advance(id, kIcr, rec.tsc);
        await_icr_[vs].push_back(id);
        return;
      }
      case IPT_G_IRQ_ENTRY: {
        auto& w = await_irq_[cpu];
        for (size_t k = 0; k < w.size();) {
          const uint32_t id = w[k];
          if (slab_[id].vector != rec.vector) { ++k; continue; }
          w.erase(w.begin() + static_cast<ptrdiff_t>(k));
          if (slab_[id].served) Resolve(id, Verdict::kServedWithoutIpi);
          else Advance(id, kServe, rec.tsc);
        }
        return;
      }
      case IPT_G_FUNC_ENTRY: {
        for (uint32_t id : open_by_target_[cpu]) {
          Req& r = slab_[id];
          if (r.served) continue;
          if (r.csd ? r.csd != rec.a[1] : r.func != rec.a[0]) continue;
          r.served = true;
          if (r.stage == kServe) Resolve(id, Verdict::kServedByIpi);
          else if (r.stage == kRider || r.stage == kDecide) Resolve(id, Verdict::kServedWithoutIpi);
          // else: the IPI chain is still pending; its end decides.
          return;
        }
        return;
      }
      default:
        return;
    }
  }
  // Hypervisor stream.
  switch (rec.type) {
    case IPT_H_ICR: {
      auto& w = await_icr_[cpu];
      for (size_t k = 0; k < w.size();) {
        const uint32_t id = w[k];
        Req& r = slab_[id];
        const int32_t vt = Vcpu(r.dst);
        if (r.vector != rec.vector || vt < 0 || !IcrTargets(rec, static_cast<uint32_t>(vt))) {
          ++k;
          continue;
        }
        w.erase(w.begin() + static_cast<ptrdiff_t>(k));
        r.icr_seq = rec.seq;
        Advance(id, kIrr, rec.tsc);
        await_irr_[cpu].push_back(id);
      }
      return;
    }
    case IPT_H_IRR: {
      if (rec.a[0] == IPT_SEQ_INVALID || rec.target >= kMax) return;
      auto& w = await_irr_[cpu];
      for (size_t k = 0; k < w.size();) {
        const uint32_t id = w[k];
        Req& r = slab_[id];
        if (r.icr_seq != rec.a[0] || Vcpu(r.dst) != rec.target) { ++k; continue; }
        w.erase(w.begin() + static_cast<ptrdiff_t>(k));
        Advance(id, kAck, rec.tsc);
        await_ack_[rec.target].push_back(id);
      }
      return;
    }
    case IPT_H_ACK: {
      last_ack_tsc_[cpu] = rec.tsc;
      auto& w = await_ack_[cpu];
      for (size_t k = 0; k < w.size();) {
        const uint32_t id = w[k];
        Req& r = slab_[id];
        if (r.vector != rec.vector) { ++k; continue; }
        w.erase(w.begin() + static_cast<ptrdiff_t>(k));
        Advance(id, kIrq, rec.tsc);
        await_irq_[r.dst].push_back(id);
      }
      return;
    }
    default:
      return;
  }
}

void StreamTracker::Finish() {
  for (uint32_t id = 0; id < slab_.size(); ++id) {
    Req& r = slab_[id];
    if (r.stage == kFree) continue;
    // A served request whose chain never completed keeps no loss verdict
    // at the end of the stream: the trace ended first.
    Resolve(id, r.served ? Verdict::kServedWithoutIpi : Verdict::kInFlight);
  }
  timeouts_.clear();
}

}  // namespace ipitrace
