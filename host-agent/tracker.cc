// SPDX-License-Identifier: MIT
#include "tracker.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "result.h"

namespace ipitrace {
namespace {

constexpr uint64_t kNoTsc = std::numeric_limits<uint64_t>::max();

struct VerdictInfo {
  std::string_view name;
  bool loss;
};
constexpr VerdictInfo kVerdictInfo[] = {
#define IPT_VERDICT_INFO(e, name, loss) {name, loss},
    IPT_VERDICTS(IPT_VERDICT_INFO)
#undef IPT_VERDICT_INFO
};
static_assert(sizeof(kVerdictInfo) / sizeof(kVerdictInfo[0]) == kNumVerdicts);

template <typename Map, typename Key>
const std::vector<uint32_t>* Lookup(const Map& m, const Key& k) {
  auto it = m.find(k);
  return it == m.end() ? nullptr : &it->second;
}

// Index into 'p' of the first position whose record has tsc >= tsc.
std::optional<size_t> FirstAtOrAfterTsc(const Ring& r,
                                        const std::vector<uint32_t>* p,
                                        uint64_t tsc) {
  if (!p) return std::nullopt;
  auto it = std::partition_point(p->begin(), p->end(), [&](uint32_t pos) {
    return r.records[pos].tsc < tsc;
  });
  if (it == p->end()) return std::nullopt;
  return static_cast<size_t>(it - p->begin());
}

// Index into 'p' of the first position > pos.
std::optional<size_t> FirstAfterPos(const std::vector<uint32_t>* p,
                                    uint32_t pos) {
  if (!p) return std::nullopt;
  auto it = std::upper_bound(p->begin(), p->end(), pos);
  if (it == p->end()) return std::nullopt;
  return static_cast<size_t>(it - p->begin());
}

Evidence Ev(StreamKind s, const Ring& r, uint32_t pos) {
  return Evidence{s, r.index, r.records[pos], pos};
}

// Position of the first record of 'r' with tsc >= tsc (rings are in TSC
// order; a ring whose TSC went backwards is counted in Stats and searched
// anyway: the answer is then approximate but always in bounds).
size_t RingLowerBound(const Ring& r, uint64_t tsc) {
  auto it = std::partition_point(r.records.begin(), r.records.end(),
                                 [&](const ipt_record& rec) { return rec.tsc < tsc; });
  return static_cast<size_t>(it - r.records.begin());
}

std::string VcpuName(int32_t v) {
  return v < 0 ? std::string("?") : std::to_string(v);
}

}  // namespace

std::string_view VerdictName(Verdict v) {
  IPT_CHECK(static_cast<size_t>(v) < kNumVerdicts);
  return kVerdictInfo[static_cast<size_t>(v)].name;
}

bool IsNormal(Verdict v) {
  return v == Verdict::kServedByIpi || v == Verdict::kServedWithoutIpi;
}

bool IsLoss(Verdict v) {
  IPT_CHECK(static_cast<size_t>(v) < kNumVerdicts);
  return kVerdictInfo[static_cast<size_t>(v)].loss;
}

Tracker::Tracker(const Snapshot* snap, const CpuMap* map, Stats* stats)
    : snap_(snap), map_(map), stats_(stats) {
  vec_cf_ = snap_->guest.header.vec_call_function;
  vec_cfs_ = snap_->guest.header.vec_call_function_single;
  BuildIndexes();
}

void Tracker::BuildIndexes() {
  guest_index_.resize(snap_->guest.rings.size());
  for (const Ring& r : snap_->guest.rings) {
    GuestIndex& gi = guest_index_[r.index];
    for (uint32_t i = 0; i < r.records.size(); ++i) {
      const ipt_record& rec = r.records[i];
      switch (rec.type) {
        case IPT_G_QUEUE:
          gi.queues.push_back(i);
          gi.decisions_by_target[rec.target].push_back(i);
          break;
        case IPT_G_SEND:
          if (rec.a[0] != 0) {  // call-function send (not reschedule)
            gi.decisions_by_target[rec.target].push_back(i);
            gi.sends_by_target[rec.target].push_back(i);
          }
          break;
        case IPT_G_ELIDE:
          gi.decisions_by_target[rec.target].push_back(i);
          break;
        case IPT_G_IRQ_ENTRY:
          gi.irq_by_vector[rec.vector].push_back(i);
          if (rec.vector == vec_cf_ || rec.vector == vec_cfs_)
            gi.callfunc_points.push_back(i);
          break;
        case IPT_G_FUNC_ENTRY:
          gi.func_by_csd[rec.a[1]].push_back(i);
          gi.func_by_func[rec.a[0]].push_back(i);
          gi.callfunc_points.push_back(i);
          break;
        case IPT_G_FUNC_EXIT:
          gi.exit_by_csd[rec.a[1]].push_back(i);
          gi.exit_by_func[rec.a[0]].push_back(i);
          break;
        default:
          break;
      }
    }
    if (!r.empty()) snapshot_end_tsc_ = std::max(snapshot_end_tsc_, r.last_tsc());
  }
  hv_index_.resize(snap_->hv.rings.size());
  for (const Ring& r : snap_->hv.rings) {
    HvIndex& hi = hv_index_[r.index];
    for (uint32_t i = 0; i < r.records.size(); ++i) {
      const ipt_record& rec = r.records[i];
      switch (rec.type) {
        case IPT_H_ICR:
          hi.icr_by_vector[rec.vector].push_back(i);
          break;
        case IPT_H_IRR:
          if (rec.a[0] != IPT_SEQ_INVALID) hi.irr_by_icr_seq[rec.a[0]].push_back(i);
          if (!(rec.flags & IPT_IRR_F_COALESCED))
            irr_sets_[rec.target].push_back({rec.tsc, rec.vector});
          break;
        case IPT_H_ACK:
          hi.ack_by_vector[rec.vector].push_back(i);
          hi.acks.push_back(i);
          break;
        case IPT_H_KICK:
          kicks_[rec.target].push_back({rec.tsc, rec.flags});
          break;
        default:
          break;
      }
    }
    if (!r.empty()) snapshot_end_tsc_ = std::max(snapshot_end_tsc_, r.last_tsc());
  }
  for (auto& [t, v] : kicks_) std::sort(v.begin(), v.end());
  for (auto& [t, v] : irr_sets_) std::sort(v.begin(), v.end());
}

std::vector<Request> Tracker::Run() {
  std::vector<Request> requests;
  for (const Ring& s_ring : snap_->guest.rings) {
    for (uint32_t pos : guest_index_[s_ring.index].queues) {
      const ipt_record& q = s_ring.records[pos];
      if (!snap_->guest.RingForCpu(q.target) ||
          snap_->guest.RingForCpu(s_ring.cpu) != &s_ring) {
        stats_->Increment(StatId::request_bad_target);
        continue;
      }
      requests.push_back(Follow(s_ring, pos));
    }
  }
  // Report order: queue TSC (one clock), ties by source CPU.
  std::stable_sort(requests.begin(), requests.end(),
                   [](const Request& a, const Request& b) {
                     return a.queue_tsc != b.queue_tsc ? a.queue_tsc < b.queue_tsc
                                                       : a.source_cpu < b.source_cpu;
                   });
  ResolveRiders(&requests);
  ResolveBeforeSend(&requests);
  for (Request& r : requests)
    if (!IsNormal(r.verdict)) ComputeActivity(&r);
  return requests;
}

void Tracker::CheckCallbackExit(const Ring& t_ring, const ipt_record& queue,
                                Request* req) const {
  if (!IsNormal(req->verdict) || req->evidence.empty()) return;
  const Evidence& svc = req->evidence.back();
  if (svc.stream != StreamKind::kGuest || svc.rec.type != IPT_G_FUNC_ENTRY ||
      svc.ring != t_ring.index)
    return;
  const GuestIndex& gi = guest_index_[t_ring.index];
  const bool by_func = queue.flags == IPT_CSD_TTWU || queue.a[1] == 0;
  const std::vector<uint32_t>* p = by_func
                                       ? Lookup(gi.exit_by_func, svc.rec.a[0])
                                       : Lookup(gi.exit_by_csd, svc.rec.a[1]);
  const std::vector<uint32_t>* entries =
      by_func ? Lookup(gi.func_by_func, svc.rec.a[0])
              : Lookup(gi.func_by_csd, svc.rec.a[1]);
  if (auto e = FirstAfterPos(p, svc.pos)) {
    // The exit must come before the next entry with the same key (csd
    // reuse), else it belongs to a later run.
    const auto next = FirstAfterPos(entries, svc.pos);
    if (!next || (*entries)[*next] > (*p)[*e]) {
      req->evidence.push_back(Ev(StreamKind::kGuest, t_ring, (*p)[*e]));
      return;
    }
  }
  if (svc.pos + 1 >= t_ring.records.size()) return;  // ring ends: running
  req->verdict = Verdict::kCallbackStuck;
  req->reason = fmt::format(
      "CPU {} entered the function at tsc {} and never left it, although its "
      "ring goes on ({} later records)",
      req->target_cpu, svc.rec.tsc, t_ring.records.size() - svc.pos - 1);
}

void Tracker::ResolveBeforeSend(std::vector<Request>* requests) {
  // Unserved requests without an IPI of their own that did not ride on a
  // lost IPI: if no earlier request to the same target was still
  // outstanding at their queue time (any source), the queue was empty, the
  // guest had to send (or elide), and did neither: lost-before-send.
  std::unordered_map<uint32_t, std::vector<size_t>> by_target;
  for (size_t i = 0; i < requests->size(); ++i) {
    const Request& r = (*requests)[i];
    if (r.rode_on == -3) by_target[r.target_cpu];
  }
  if (by_target.empty()) return;
  for (size_t i = 0; i < requests->size(); ++i) {
    auto it = by_target.find((*requests)[i].target_cpu);
    if (it != by_target.end()) it->second.push_back(i);  // queue-tsc order
  }
  for (auto& [t, idx] : by_target) {
    for (size_t k = 0; k < idx.size(); ++k) {
      Request& r = (*requests)[idx[k]];
      if (r.rode_on != -3) continue;
      r.rode_on = -1;
      bool earlier_outstanding = false;
      for (size_t j = 0; j < k; ++j) {
        const Request& e = (*requests)[idx[j]];
        if (e.queue_tsc > r.queue_tsc) break;
        if (!e.served_tsc || *e.served_tsc >= r.queue_tsc) {
          earlier_outstanding = true;
          break;
        }
      }
      if (earlier_outstanding) continue;  // stays handler-missed-work
      const Evidence& q = r.evidence.front();
      const Ring* s_ring = snap_->guest.RingForCpu(r.source_cpu);
      if (!s_ring || q.pos + 1 >= s_ring->records.size()) {
        r.verdict = Verdict::kInFlight;
        r.reason = "end of trace: the sender's ring ends right after the queue";
        continue;
      }
      r.verdict = Verdict::kLostBeforeSend;
      r.reason = fmt::format(
          "first in CPU {}'s queue (no earlier request outstanding), target "
          "not polling, yet CPU {} wrote neither G_SEND nor G_ELIDE for it "
          "while its ring went on",
          r.target_cpu, r.source_cpu);
    }
  }
}

void Tracker::ComputeActivity(Request* req) const {
  TargetActivity& a = req->activity;
  a.computed = true;
  a.window_start = req->queue_tsc;
  a.outstanding = !req->served_tsc;
  a.window_end = req->served_tsc ? *req->served_tsc : snapshot_end_tsc_;
  if (a.window_end < a.window_start) a.window_end = a.window_start;
  a.wait_ticks = a.window_end - a.window_start;
  if (const Ring* g = snap_->guest.RingForCpu(req->target_cpu)) {
    std::vector<std::pair<uint16_t, uint64_t>> counts;
    for (size_t i = RingLowerBound(*g, a.window_start);
         i < g->records.size() && g->records[i].tsc < a.window_end + (a.outstanding ? 1 : 0); ++i) {
      const uint16_t type = g->records[i].type;
      auto c = std::find_if(counts.begin(), counts.end(),
                            [&](const auto& e) { return e.first == type; });
      if (c == counts.end())
        counts.push_back({type, 1});
      else
        ++c->second;
    }
    std::sort(counts.begin(), counts.end());
    a.guest_events = std::move(counts);
  }
  if (req->target_vcpu >= 0) {
    if (const Ring* h = snap_->hv.RingForCpu(static_cast<uint32_t>(req->target_vcpu))) {
      std::array<uint64_t, 256> acks{};
      for (size_t i = RingLowerBound(*h, a.window_start);
           i < h->records.size() && h->records[i].tsc < a.window_end + (a.outstanding ? 1 : 0); ++i) {
        ++a.hv_records;
        if (h->records[i].type == IPT_H_ACK) ++acks[h->records[i].vector];
      }
      for (size_t v = 0; v < acks.size(); ++v)
        if (acks[v]) a.acks_by_vector.push_back({static_cast<uint8_t>(v), acks[v]});
    }
    auto k = kicks_.find(static_cast<uint16_t>(req->target_vcpu));
    if (k != kicks_.end()) {
      for (const auto& [tsc, flags] : k->second) {
        if (tsc < a.window_start) continue;
        if (tsc > a.window_end) break;
        ++a.kicks;
        if (flags & IPT_KICK_F_HALTED) ++a.kicks_halted;
      }
    }
  }
}

std::optional<Evidence> Tracker::FindService(const Ring& t_ring,
                                             const ipt_record& queue) const {
  const GuestIndex& gi = guest_index_[t_ring.index];
  const std::vector<uint32_t>* p = nullptr;
  if (queue.flags == IPT_CSD_IRQ_WORK) {
    // irq_work has no function record: the first call-function IRQ or
    // function entry on T after q serves it.
    p = &gi.callfunc_points;
  } else if (queue.flags == IPT_CSD_TTWU || queue.a[1] == 0) {
    p = Lookup(gi.func_by_func, queue.a[0]);
  } else {
    p = Lookup(gi.func_by_csd, queue.a[1]);
  }
  auto i = FirstAtOrAfterTsc(t_ring, p, queue.tsc);
  if (!i) return std::nullopt;
  return Ev(StreamKind::kGuest, t_ring, (*p)[*i]);
}

std::string Tracker::FindGap(const Request& req) const {
  struct Relevant {
    const Ring* ring;
    std::string name;
  };
  auto hv_ring = [&](int32_t v) {
    return v < 0 ? nullptr : snap_->hv.RingForCpu(static_cast<uint32_t>(v));
  };
  const Relevant rings[] = {
      {snap_->guest.RingForCpu(req.source_cpu),
       fmt::format("guest ring of CPU {}", req.source_cpu)},
      {snap_->guest.RingForCpu(req.target_cpu),
       fmt::format("guest ring of CPU {}", req.target_cpu)},
      {hv_ring(req.source_vcpu),
       fmt::format("hv ring of vCPU {}", VcpuName(req.source_vcpu))},
      {hv_ring(req.target_vcpu),
       fmt::format("hv ring of vCPU {}", VcpuName(req.target_vcpu))},
  };
  for (const Relevant& r : rings) {
    if (!r.ring) {
      stats_->Increment(StatId::missing_ring);
      return fmt::format("{} is missing", r.name);
    }
    if (r.ring->overwritten > 0 &&
        (r.ring->empty() || r.ring->first_tsc() > req.queue_tsc)) {
      return fmt::format("{} overwrote {} records; first retained tsc {} is "
                         "after the queue",
                         r.name, r.ring->overwritten, r.ring->first_tsc());
    }
    for (const RingGap& g : r.ring->gaps) {
      if (g.tsc_bound >= req.queue_tsc) {
        return fmt::format("{} has a torn/rejected record (index {}) after "
                           "the queue",
                           r.name, g.index);
      }
    }
  }
  return {};
}

Request Tracker::Follow(const Ring& s_ring, uint32_t pos) {
  const ipt_record& q = s_ring.records[pos];
  const Ring& t_ring = *snap_->guest.RingForCpu(q.target);
  Request req;
  req.source_cpu = s_ring.cpu;
  req.target_cpu = q.target;
  req.source_vcpu = map_->VcpuOf(s_ring.cpu);
  req.target_vcpu = map_->VcpuOf(q.target);
  req.queue_tsc = q.tsc;
  req.func = q.a[0];
  req.csd = q.a[1];
  req.csd_type = q.flags;
  req.evidence.push_back(Ev(StreamKind::kGuest, s_ring, pos));

  const std::optional<Evidence> service = FindService(t_ring, q);
  if (service) req.served_tsc = service->rec.tsc;

  // Stage 1: send decision.
  const GuestIndex& si = guest_index_[s_ring.index];
  const auto* decisions = Lookup(si.decisions_by_target, q.target);
  const auto d = FirstAfterPos(decisions, pos);
  if (d && s_ring.records[(*decisions)[*d]].type == IPT_G_SEND) {
    const uint32_t send_pos = (*decisions)[*d];
    req.owns_ipi = true;
    FollowIpi(s_ring, t_ring, s_ring.records[send_pos], send_pos, service,
              &req);
    return req;
  }

  // No IPI of its own: elided, or rode on a pending IPI.
  if (d) {
    const uint32_t dpos = (*decisions)[*d];
    req.elided = s_ring.records[dpos].type == IPT_G_ELIDE;
    req.evidence.push_back(Ev(StreamKind::kGuest, s_ring, dpos));
  }
  if (service) {
    req.verdict = Verdict::kServedWithoutIpi;
    req.reason = req.elided ? "IPI elided (target polling); served on wakeup"
                            : "no IPI of its own (rode on a pending IPI); "
                              "served by a flush";
    req.evidence.push_back(*service);
    CheckCallbackExit(t_ring, q, &req);
    return req;
  }
  Break b{Verdict::kHandlerMissedWork, t_ring.last_tsc() > q.tsc,
          req.elided ? "IPI elided (target polling) but the target never ran "
                       "the function although its ring continues"
                     : "rode on a pending IPI, never served although the "
                       "target's ring continues"};
  Conclude(b, service, &req);
  if (req.verdict == Verdict::kHandlerMissedWork && !req.elided)
    req.rode_on = -2;  // resolved against the owning IPI in ResolveRiders
  return req;
}

void Tracker::FollowIpi(const Ring& s_ring, const Ring& t_ring,
                        const ipt_record& send, uint32_t send_pos,
                        const std::optional<Evidence>& service, Request* req) {
  req->evidence.push_back(Ev(StreamKind::kGuest, s_ring, send_pos));
  const uint8_t vector = (send.flags & IPT_SEND_F_MASK) ? vec_cf_ : vec_cfs_;
  req->vector = vector;
  const int32_t vs = req->source_vcpu;
  const int32_t vt = req->target_vcpu;
  const Ring* hv_s = vs < 0 ? nullptr : snap_->hv.RingForCpu(static_cast<uint32_t>(vs));
  const Ring* hv_t = vt < 0 ? nullptr : snap_->hv.RingForCpu(static_cast<uint32_t>(vt));
  if (!hv_s || !hv_t) {
    Conclude({Verdict::kInconclusiveGap, true, "no hv ring for the vCPU"},
             service, req);
    return;
  }

  // Stage 2: H_ICR on vCPU(S) at/after the send, before S's next send batch
  // to T of the same kind (single or mask, i.e. the same vector), with the
  // vector and vCPU(T) in its bitmap.  A send of the other kind does not
  // bound the search: an interrupt on S between the mask send's tracepoint
  // and its APIC write may itself queue and send a single IPI to T (seen in
  // a clean soak: the mask ICR landed after the nested single send's ICR).
  const GuestIndex& si = guest_index_[s_ring.index];
  const auto* sends = Lookup(si.sends_by_target, static_cast<uint16_t>(req->target_cpu));
  uint64_t next_send_tsc = kNoTsc;
  if (auto n = FirstAfterPos(sends, send_pos)) {
    for (size_t k = *n; k < sends->size(); ++k) {
      const ipt_record& next = s_ring.records[(*sends)[k]];
      if (next.tsc == send.tsc || next.a[0] == 0) continue;  // same batch / resched
      if ((next.flags & IPT_SEND_F_MASK) != (send.flags & IPT_SEND_F_MASK)) continue;
      next_send_tsc = next.tsc;
      break;
    }
  }

  const HvIndex& hs = hv_index_[hv_s->index];
  const auto* icrs = Lookup(hs.icr_by_vector, vector);
  std::optional<uint32_t> icr_pos;
  if (auto i = FirstAtOrAfterTsc(*hv_s, icrs, send.tsc)) {
    for (size_t k = *i; k < icrs->size(); ++k) {
      const ipt_record& icr = hv_s->records[(*icrs)[k]];
      if (icr.tsc >= next_send_tsc) break;
      if (IcrTargets(icr, static_cast<uint32_t>(vt))) {
        icr_pos = (*icrs)[k];
        break;
      }
    }
  }
  if (!icr_pos) {
    Conclude({Verdict::kLostGuestToHypervisor, hv_s->last_tsc() > send.tsc,
              fmt::format("G_SEND to CPU {} has no H_ICR (vector {:#x}, "
                          "vCPU {} in bitmap) on vCPU {}'s ring",
                          req->target_cpu, vector, vt, vs)},
             service, req);
    return;
  }
  const ipt_record& icr = hv_s->records[*icr_pos];
  req->evidence.push_back(Ev(StreamKind::kHv, *hv_s, *icr_pos));

  // Stage 3: H_IRR on the same ring caused by that ICR, for vCPU(T).
  std::optional<uint32_t> irr_pos;
  if (const auto* irrs = Lookup(hs.irr_by_icr_seq, icr.seq)) {
    for (uint32_t p : *irrs) {
      const ipt_record& irr = hv_s->records[p];
      if (irr.type == IPT_H_IRR && irr.target == static_cast<uint32_t>(vt)) {
        irr_pos = p;
        break;
      }
    }
  }
  if (!irr_pos) {
    Conclude({Verdict::kLostInRouting, *icr_pos + 1 < hv_s->records.size(),
              fmt::format("H_ICR seq {} on vCPU {} has no H_IRR for vCPU {}",
                          icr.seq, vs, vt)},
             service, req);
    return;
  }
  const ipt_record& irr = hv_s->records[*irr_pos];
  req->evidence.push_back(Ev(StreamKind::kHv, *hv_s, *irr_pos));

  // Stage 4: H_ACK of the vector on vCPU(T) at/after the IRR.
  const HvIndex& ht = hv_index_[hv_t->index];
  const auto* acks = Lookup(ht.ack_by_vector, vector);
  const auto ack_i = FirstAtOrAfterTsc(*hv_t, acks, irr.tsc);
  if (!ack_i) {
    const auto other = FirstAtOrAfterTsc(*hv_t, &ht.acks, irr.tsc + 1);
    if (other) {
      Conclude({Verdict::kLostInInjection, true,
                fmt::format("IRR set on vCPU {} (vector {:#x}) never "
                            "acknowledged; it acknowledged other vectors later",
                            vt, vector)},
               service, req);
    } else {
      Conclude({Verdict::kTargetBlocked, hv_t->last_tsc() > irr.tsc,
                fmt::format("IRR set on vCPU {} (vector {:#x}); vCPU "
                            "acknowledged nothing afterwards",
                            vt, vector)},
               service, req);
    }
    return;
  }
  const uint32_t ack_pos = (*acks)[*ack_i];
  const ipt_record& ack = hv_t->records[ack_pos];
  // The first ACK after our IRR may belong to a later IPI: if a later IRR
  // set of this vector on vCPU(T) found the bit clear (not coalesced) before
  // that ACK, our pending bit vanished without being acknowledged.
  if (auto it = irr_sets_.find(static_cast<uint16_t>(vt)); it != irr_sets_.end()) {
    const auto& sets = it->second;
    auto k = std::upper_bound(sets.begin(), sets.end(),
                              std::pair<uint64_t, uint8_t>{irr.tsc, 0xff});
    for (; k != sets.end() && k->first < ack.tsc; ++k) {
      if (k->second != vector) continue;
      Conclude({Verdict::kLostInInjection, true,
                fmt::format("IRR set on vCPU {} (vector {:#x}) at tsc {} was "
                            "never acknowledged: the next IRR set of that "
                            "vector at tsc {} found the bit clear, before any "
                            "H_ACK of it (at tsc {})",
                            vt, vector, irr.tsc, k->first, ack.tsc)},
               service, req);
      return;
    }
  }
  req->evidence.push_back(Ev(StreamKind::kHv, *hv_t, ack_pos));

  // Stage 5: guest IRQ entry of the vector on T at/after the ACK and before
  // the next ACK of that vector on vCPU(T).  The handler's entry record is
  // written with interrupts off, before it returns, so a later ACK of the
  // vector cannot precede the entry of this one: an entry only after the
  // next ACK belongs to the next IPI, and this acknowledged one never
  // entered the guest.
  const GuestIndex& ti = guest_index_[t_ring.index];
  const auto* irqs = Lookup(ti.irq_by_vector, vector);
  auto irq_i = FirstAtOrAfterTsc(t_ring, irqs, ack.tsc);
  if (irq_i && *ack_i + 1 < acks->size()) {
    const uint64_t next_ack_tsc = hv_t->records[(*acks)[*ack_i + 1]].tsc;
    if (t_ring.records[(*irqs)[*irq_i]].tsc >= next_ack_tsc) irq_i.reset();
  }
  if (!irq_i) {
    Conclude({Verdict::kLostInGuestEntry, t_ring.last_tsc() > ack.tsc,
              fmt::format("vCPU {} acknowledged vector {:#x} but CPU {} never "
                          "entered its handler",
                          vt, vector, req->target_cpu)},
             service, req);
    return;
  }
  const uint32_t irq_pos = (*irqs)[*irq_i];
  const ipt_record& irq = t_ring.records[irq_pos];
  req->evidence.push_back(Ev(StreamKind::kGuest, t_ring, irq_pos));

  // Stage 6: service.
  if (service) {
    req->evidence.push_back(*service);
    if (service->rec.tsc < irq.tsc) {
      req->verdict = Verdict::kServedWithoutIpi;
      req->reason = "served by a flush before its IPI arrived";
    } else {
      req->verdict = Verdict::kServedByIpi;
      req->reason = "full chain";
    }
    CheckCallbackExit(t_ring, snap_->guest.rings[req->evidence.front().ring]
                                  .records[req->evidence.front().pos],
                      req);
    return;
  }
  Conclude({Verdict::kHandlerMissedWork, t_ring.last_tsc() > irq.tsc,
            fmt::format("CPU {} entered the call-function handler but never "
                        "ran the request's function",
                        req->target_cpu)},
           service, req);
}

void Tracker::Conclude(const Break& b, const std::optional<Evidence>& service,
                       Request* req) {
  if (!b.continues) {
    if (service) {
      req->verdict = Verdict::kServedWithoutIpi;
      req->reason = "served; its IPI's fate is past the end of the trace";
      req->evidence.push_back(*service);
    } else {
      req->verdict = Verdict::kInFlight;
      req->reason = "end of trace: " + b.reason;
    }
    return;
  }
  std::string gap = b.loss == Verdict::kInconclusiveGap ? b.reason : FindGap(*req);
  if (!gap.empty()) {
    req->verdict = Verdict::kInconclusiveGap;
    req->reason = gap;
  } else {
    req->verdict = b.loss;
    req->reason = b.reason;
  }
  if (service) {
    req->served_late = IsLoss(req->verdict);
    req->evidence.push_back(*service);
  }
}

void Tracker::ResolveRiders(std::vector<Request>* requests) {
  // Requests that own an IPI, per target, by send TSC.
  std::unordered_map<uint32_t, std::vector<std::pair<uint64_t, size_t>>> owners;
  for (size_t i = 0; i < requests->size(); ++i) {
    const Request& r = (*requests)[i];
    if (r.owns_ipi && r.evidence.size() >= 2)
      owners[r.target_cpu].push_back({r.evidence[1].rec.tsc, i});
  }
  for (auto& [cpu, v] : owners) std::sort(v.begin(), v.end());
  for (Request& r : *requests) {
    if (r.rode_on != -2) continue;
    r.rode_on = -3;  // ResolveBeforeSend looks at it next
    auto it = owners.find(r.target_cpu);
    if (it == owners.end()) continue;
    const auto& v = it->second;
    auto o = std::partition_point(v.begin(), v.end(), [&](const auto& e) {
      return e.first <= r.queue_tsc;
    });
    if (o == v.begin()) continue;
    --o;
    const Request& owner = (*requests)[o->second];
    if (!IsLoss(owner.verdict)) continue;
    // Not a loss of its own: the guest correctly sent no IPI (the queue
    // was not empty); the blame belongs to the owner's lost IPI alone.
    r.verdict = Verdict::kQueuedBehindLoss;
    r.rode_on = static_cast<int64_t>(o->second);
    r.reason = fmt::format("queued behind the request queued at tsc {} by "
                           "CPU {}, whose IPI was lost ({}): {}",
                           owner.queue_tsc, owner.source_cpu,
                           VerdictName(owner.verdict), owner.reason);
    for (const Evidence& e : owner.evidence) r.evidence.push_back(e);
  }
}

}  // namespace ipitrace
