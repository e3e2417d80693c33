// SPDX-License-Identifier: MIT
#include "tracker.h"

#include <algorithm>
#include <limits>
#include <span>
#include <tuple>

#include <fmt/format.h>

#include "result.h"
#include "ring_merge.h"
#include "served_rule.h"

namespace ipitrace {
namespace {

constexpr uint64_t kNoTsc = std::numeric_limits<uint64_t>::max();

size_t RingLowerBound(const Ring& r, uint64_t tsc) {
  auto it = std::partition_point(r.records.begin(), r.records.end(),
                                 [&](const ipt_record& rec) { return rec.tsc < tsc; });
  return static_cast<size_t>(it - r.records.begin());
}

std::string VcpuName(int32_t v) {
  return v < 0 ? std::string("?") : std::to_string(v);
}

}  // namespace

Tracker::Tracker(std::shared_ptr<const TrackerInputs> inputs, Stats* stats)
    : inputs_(std::move(inputs)),
      snap_(&inputs_->snapshot),
      map_(&inputs_->map),
      index_(inputs_->index.get()),
      stats_(stats) {
  vec_cf_ = snap_->guest.header.vec_call_function;
  vec_cfs_ = snap_->guest.header.vec_call_function_single;
  func_observed_ = snap_->guest.stages.Observes(IPT_G_STAGE_FUNC);
  store_ = std::make_shared<const RecordStore>(*snap_);
}

void Tracker::FollowNoting(const Ring& s_ring, uint32_t k, uint32_t pos, const ipt_record& q,
                           const Ring& t_ring, Request* req) {
  Stats* const stats = stats_;
  Stats scratch;
  stats_ = &scratch;
  refollowing_ = true;
  record_evidence_ = true;
  Follow(s_ring, k, pos, q, t_ring, req);
  record_evidence_ = false;
  refollowing_ = false;
  stats_ = stats;
}

namespace {

constexpr uint32_t kQueuePrefetch = 16;  // uint32_t entries: one cache line

// A source ring and its G_QUEUE positions.
struct Source {
  const Ring* ring;
  const std::vector<uint32_t>* queues;
};

// Calls f(source index, k) for every queue, in report order: queue TSC (one
// clock), ties by source CPU.  Every source ring has its own CPU and its
// queues in TSC order, so the one merge (MergeLanes, ring_merge.h) on
// (tsc, cpu) gives exactly that order, and the requests are followed as
// they come out of it.
template <typename F>
void MergeByQueueTsc(const std::vector<Source>& sources, const RingIndex& index, F&& f) {
  std::vector<MergeLane> lanes;
  lanes.reserve(sources.size());
  for (const Source& src : sources)
    lanes.push_back({src.ring->cpu, static_cast<uint32_t>(src.queues->size())});
  MergeLanes(
      lanes,
      [&](uint32_t lane, uint32_t k) {
        const Source& src = sources[lane];
        const std::vector<uint32_t>& queues = *src.queues;
        if (k + 1 < queues.size()) __builtin_prefetch(&src.ring->records[queues[k + 1]]);
        // The per-ring queue arrays are read in order, one entry per
        // request of this ring, among more streams than the hardware
        // prefetchers track: ask for them a cache line ahead.
        if (k + kQueuePrefetch < queues.size()) {
          const RingIndex::Guest& gi = index.guest(src.ring->index);
          __builtin_prefetch(&queues[k + kQueuePrefetch]);
          __builtin_prefetch(&gi.next_decision[k + kQueuePrefetch]);
          __builtin_prefetch(&gi.decision_send[k + kQueuePrefetch]);
        }
        return src.ring->records[queues[k]].tsc;
      },
      f);
}

// The same order where some ring's queues went back in TSC: a sort on
// (tsc, cpu, ring order then position).
template <typename F>
void SortByQueueTsc(const std::vector<Source>& sources, size_t total, F&& f) {
  struct Key {
    uint64_t tsc;
    uint32_t cpu;
    uint32_t seq;  // enumeration order: ring order, then position
    uint32_t src;
    uint32_t k;
  };
  std::vector<Key> keys;
  keys.reserve(total);
  for (uint32_t i = 0; i < sources.size(); ++i)
    for (uint32_t k = 0; k < sources[i].queues->size(); ++k)
      keys.push_back({sources[i].ring->records[(*sources[i].queues)[k]].tsc,
                      sources[i].ring->cpu, static_cast<uint32_t>(keys.size()), i, k});
  std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return std::tie(a.tsc, a.cpu, a.seq) < std::tie(b.tsc, b.cpu, b.seq);
  });
  for (const Key& key : keys) f(key.src, key.k);
}

// Clears what following one request sets, for the next (the scratch
// Request is reused: a normal request leaves only its row behind).
void ResetScratch(Request* req) {
  req->vector = 0;
  req->owns_ipi = false;
  req->elided = false;
  req->verdict = Verdict::kInFlight;
  req->served_tsc.reset();
  req->served_late = false;
  req->rode_on = -1;
  req->pending = Request::Pending::kNone;
  req->reached = Stage::kQueue;
  req->reason.clear();
}

}  // namespace

RequestTable Tracker::Run(DetailPolicy details) {
  for (auto& v : latency_samples_) v.clear();
  details_ = details;
  kept_without_ipi_ = 0;
  // Source rings: guest rings named by their CPU id (RegionReader keeps a
  // ring with a duplicate or out-of-range id as an empty slot).
  std::vector<Source> sources;
  size_t total = 0;
  bool sorted = true;  // every source ring's queues in TSC order
  for (const Ring& s_ring : snap_->guest.rings) {
    const std::vector<uint32_t>& queues = index_->guest(s_ring.index).queues;
    if (queues.empty()) continue;
    if (snap_->guest.RingForCpu(s_ring.cpu) != &s_ring) {
      stats_->Increment(StatId::request_bad_target, queues.size());
      continue;
    }
    if (!s_ring.tsc_sorted) {
      for (size_t k = 1; k < queues.size() && sorted; ++k)
        sorted = s_ring.records[queues[k - 1]].tsc <= s_ring.records[queues[k]].tsc;
    }
    total += queues.size();
    sources.push_back({&s_ring, &queues});
  }

  RequestTable table;
  table.inputs_ = inputs_;
  table.rows_.reserve(total);
  for (auto& v : latency_samples_) v.small.reserve(total);
  Request req;
  req.evidence = EvidenceChain(store_);
  auto follow = [&](uint32_t src, uint32_t k) {
    FollowInto(*sources[src].ring, k, (*sources[src].queues)[k], &req, &table);
  };
  if (sorted)
    MergeByQueueTsc(sources, *index_, follow);
  else
    SortByQueueTsc(sources, total, follow);
  ResolveRiders(&table);
  ResolveBeforeSend(&table);
  if (!func_observed_) UnblameService(&table);
  for (size_t i = 0; i < table.details_.size(); ++i) {
    Request& r = table.details_[i];
    if (!IsNormal(r.verdict)) ComputeActivity(&r);
  }
  // Only rows with a detail change (not a pass over every row).
  for (const uint32_t i : table.detail_rows_) table.SyncRow(i);
  return table;
}

[[gnu::always_inline]] inline void Tracker::FollowInto(const Ring& s_ring, uint32_t k, uint32_t pos, Request* req,
                         RequestTable* table) {
  const ipt_record q = s_ring.records[pos];
  const Ring* t_ring = snap_->guest.RingForCpu(q.target);
  if (!t_ring) {
    stats_->Increment(StatId::request_bad_target);
    return;
  }
  ResetScratch(req);
  reason_ = NormalReason::kNone;
  Follow(s_ring, k, pos, q, *t_ring, req);
  const bool whole = !RequestTable::RowSuffices(*req, reason_) || details_.all ||
                     (req->verdict == Verdict::kServedWithoutIpi &&
                      kept_without_ipi_ < details_.served_without_ipi);
  if (whole) {
    // The table keeps this request whole (a verdict other than
    // served-by-ipi / served-without-ipi, mostly): follow it again, the
    // same way, now noting its evidence.  It counted in Stats and the
    // latency samples the first time.
    kept_without_ipi_ += req->verdict == Verdict::kServedWithoutIpi;
    ResetScratch(req);
    reason_ = NormalReason::kNone;
    req->evidence.clear();
    FollowNoting(s_ring, k, pos, q, *t_ring, req);
  }
  table->Add(*req, static_cast<uint16_t>(s_ring.index), k, reason_, whole);
}

void Tracker::CheckCallbackExit(const Ring& t_ring, const ipt_record& queue,
                                const Service& service, Request* req) {
  if (!IsNormal(req->verdict)) return;
  const Hit& svc = service.hit;
  if (svc.type != IPT_G_FUNC_ENTRY || svc.ring != t_ring.index) return;
  // The run of the function that served the request: the entry's exit is
  // the first exit of its csd (or function) after it, provided the next
  // entry of that key does not come first (csd reuse: that exit ends a
  // later run).
  const bool by_func = ServedKeyOf(queue, func_observed_).by == ServedBy::kFunc;
  const uint64_t key = by_func ? svc.func : svc.csd;
  EntryLists::List list = service.list;
  size_t i = service.index;
  const uint64_t found_key = service.by_func ? queue.a[0] : queue.a[1];
  if (!list.entries.empty() && service.by_func == by_func && found_key == key) {
    // The service came from this key's list: it is entry i.
  } else {
    const RingIndex::Guest& gi = index_->guest(t_ring.index);
    list = by_func ? gi.FuncByFunc(t_ring).Get(key) : gi.func_by_csd.Get(key);
    const uint32_t* at = std::lower_bound(list.entries.begin(), list.entries.end(), svc.pos);
    i = at != list.entries.end() && *at == svc.pos
            ? static_cast<size_t>(at - list.entries.begin())
            : list.entries.size();
  }
  if (i < list.entries.size()) {
    const uint32_t exit = list.exit_after[i];
    const bool next_entry = i + 1 < list.entries.size();
    if (exit != EntryLists::kNone && (!next_entry || list.entries[i + 1] > exit)) {
      Note(req, {StreamKind::kGuest, t_ring.index, exit});
      return;
    }
  }
  if (svc.pos + 1 >= t_ring.records.size()) return;  // ring ends: running
  if (!Settled(svc.tsc)) return;  // entered within the settle window: running
  req->verdict = Verdict::kCallbackStuck;
  reason_ = NormalReason::kNone;
  req->reason = fmt::format(
      "CPU {} entered the function at tsc {} and never left it, although its "
      "ring goes on ({} later records)",
      req->target_cpu, svc.tsc, t_ring.records.size() - svc.pos - 1);
}

bool Tracker::JoinedAList(const RequestTable& t, const std::vector<size_t>& idx, size_t k,
                          Request* req) const {
  Request& r = *req;
  // Earlier requests to the target still outstanding at its queue:
  // whether any, whether one of them was never served, and when the last
  // of the served ones was.
  bool earlier_outstanding = false;
  bool unserved = false;
  uint64_t last_served = 0;
  for (size_t j = 0; j < k; ++j) {
    const RequestTable::Row& e = t.rows_[idx[j]];
    if (e.queue_tsc > r.queue_tsc) break;
    if (!e.served()) {
      earlier_outstanding = unserved = true;
    } else if (e.served_tsc >= r.queue_tsc) {
      earlier_outstanding = true;
      last_served = std::max(last_served, e.served_tsc);
    }
  }
  if (!earlier_outstanding) return false;
  // It joined a list that was not empty; the flush of that list serves
  // every request in it.  Handler-missed-work only when every earlier
  // request outstanding at its queue was served and the target is past the
  // flush that served the last of them; else it waits with them (in
  // flight).
  const Ring* t_ring = snap_->guest.RingForCpu(r.target_cpu);
  // The last service's position, for the handler-return walk: the last
  // record at or before its TSC (a ring in TSC order only).
  uint32_t served_pos = RingIndex::kNoPosition;
  if (!unserved && t_ring && t_ring->tsc_sorted) {
    const size_t after = RingLowerBound(*t_ring, last_served + 1);
    if (after > 0) served_pos = static_cast<uint32_t>(after - 1);
  }
  if (unserved || !t_ring || !FlushOver(*t_ring, r.target_vcpu, last_served, served_pos)) {
    r.verdict = Verdict::kInFlight;
    r.reason = unserved ? "end of trace: queued behind an earlier request to "
                          "the same CPU that is still outstanding"
                        : "end of trace: the target was still running the "
                          "flush that served the requests queued before it";
  }
  return true;
}

void Tracker::ResolveBeforeSend(RequestTable* t) {
  // Unserved requests without an IPI of their own that did not ride on a
  // lost IPI: if no earlier request to the same target was still
  // outstanding at their queue time (any source), the queue was empty, the
  // guest had to send (or elide), and did neither: lost-before-send.
  // (Such requests are non-normal, so they have a detail.)
  std::vector<bool> wanted(IPT_MAX_CPUS, false);
  bool any = false;
  for (const Request& r : t->details_) {
    if (r.pending == Request::Pending::kBeforeSend && r.target_cpu < IPT_MAX_CPUS) {
      wanted[r.target_cpu] = true;
      any = true;
    }
  }
  if (!any) return;
  std::vector<std::vector<size_t>> by_target(IPT_MAX_CPUS);
  for (size_t i = 0; i < t->rows_.size(); ++i) {
    const uint32_t target = t->rows_[i].target_cpu;
    if (target < IPT_MAX_CPUS && wanted[target]) by_target[target].push_back(i);  // queue-tsc order
  }
  for (const std::vector<size_t>& idx : by_target) {
    for (size_t k = 0; k < idx.size(); ++k) {
      const uint32_t d = t->rows_[idx[k]].detail;
      if (d == RequestTable::kNoDetail ||
          t->details_[d].pending != Request::Pending::kBeforeSend)
        continue;
      Request& r = t->details_[d];
      r.pending = Request::Pending::kNone;
      if (JoinedAList(*t, idx, k, &r)) continue;  // else stays handler-missed-work
      const EvidenceChain::Ref q = r.evidence.ref(0);
      const Ring* s_ring = snap_->guest.RingForCpu(r.source_cpu);
      if (!s_ring || q.pos + 1 >= s_ring->records.size()) {
        r.verdict = Verdict::kInFlight;
        r.reason = "end of trace: the sender's ring ends right after the queue";
        continue;
      }
      // An interrupt may cut in between the queue and the send.
      if (!Settled(r.queue_tsc)) {
        r.verdict = Verdict::kInFlight;
        r.reason = "end of trace: no send or elision yet; " + UnsettledNote(r.queue_tsc);
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
  uint64_t window_end = req->served_tsc ? *req->served_tsc : index_->snapshot_end_tsc();
  if (window_end < a.window_start) window_end = a.window_start;
  a.wait_ticks = window_end - a.window_start;
  if (const Ring* g = snap_->guest.RingForCpu(req->target_cpu)) {
    std::vector<std::pair<uint16_t, uint64_t>> counts;
    for (size_t i = RingLowerBound(*g, a.window_start);
         i < g->records.size() && g->records[i].tsc < window_end + (a.outstanding ? 1 : 0); ++i) {
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
           i < h->records.size() && h->records[i].tsc < window_end + (a.outstanding ? 1 : 0); ++i) {
        ++a.hv_records;
        const ipt_record rec = h->records[i];
        if (rec.type == IPT_H_ACK) ++acks[rec.vector];
      }
      for (size_t v = 0; v < acks.size(); ++v)
        if (acks[v]) a.acks_by_vector.push_back({static_cast<uint8_t>(v), acks[v]});
    }
    // Sorted by (tsc, flags): skip to the window, count until past its end.
    const RingIndex::TscEvents& kicks = index_->kicks(snap_->hv, static_cast<uint32_t>(req->target_vcpu));
    auto k = std::partition_point(kicks.begin(), kicks.end(), [&](const auto& e) {
      return e.first < a.window_start;
    });
    for (; k != kicks.end() && k->first <= window_end; ++k) {
      ++a.kicks;
      if (k->second & IPT_KICK_F_HALTED) ++a.kicks_halted;
    }
  }
}

bool Tracker::FindService(const Ring& t_ring, const ipt_record& queue, Service* svc) const {
  // The served rule (served_rule.h), through the target's index: a list
  // of the records that carry the request's key.
  const RingIndex::Guest& gi = index_->guest(t_ring.index);
  const ServedKey key = ServedKeyOf(queue, func_observed_);
  svc->by_func = key.by == ServedBy::kFunc;
  switch (key.by) {
    case ServedBy::kCallfunc:
      svc->list = {gi.CallfuncPoints(t_ring), nullptr};
      break;
    case ServedBy::kFunc:
      svc->list = gi.FuncByFunc(t_ring).Get(key.value);
      break;
    case ServedBy::kCsd:
      svc->list = gi.func_by_csd.Get(key.value);
      break;
  }
  const PositionList& p = svc->list.entries;
  const size_t i = p.FirstAtOrAfterTscIndex(t_ring, queue.tsc);
  if (i == p.size()) return false;
  svc->index = i;
  const uint32_t pos = p[i];
  const ipt_record& rec = t_ring.records[pos];
  svc->hit = Hit{t_ring.index, pos, rec.tsc, rec.type, rec.a[0], rec.a[1]};
  if (!svc->list.exit_after) svc->list = {};  // not an entry list
  return true;
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
  // Guest-only: the first two, the guest's; there are no hv rings to lose.
  for (const Relevant& r : std::span(rings).first(snap_->hv.source.guest_only ? 2 : 4)) {
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

void Tracker::Follow(const Ring& s_ring, uint32_t k, uint32_t pos, const ipt_record& q,
                     const Ring& t_ring, Request* out) {
  Request& req = *out;
  req.source_cpu = s_ring.cpu;
  req.target_cpu = q.target;
  req.source_vcpu = map_->VcpuOf(s_ring.cpu);
  req.target_vcpu = map_->VcpuOf(q.target);
  req.queue_tsc = q.tsc;
  req.func = q.a[0];
  req.csd = q.a[1];
  req.csd_type = q.flags;
  Note(&req, {StreamKind::kGuest, s_ring.index, pos});

  Service found;
  const Service* service = FindService(t_ring, q, &found) ? &found : nullptr;
  if (service) req.served_tsc = service->hit.tsc;

  // Stage 1: send decision.
  const RingIndex::Guest& si = index_->guest(s_ring.index);
  const uint32_t dpos = k < si.next_decision.size() ? si.next_decision[k] : RingIndex::kNoPosition;
  // The next queue's decision is read by the next request from this ring.
  if (k + 1 < si.next_decision.size() && si.next_decision[k + 1] < s_ring.records.size())
    __builtin_prefetch(&s_ring.records[si.next_decision[k + 1]]);
  const ipt_record* decision = dpos < s_ring.records.size() ? &s_ring.records[dpos] : nullptr;
  // A send or an elision is R's decision; the next G_QUEUE(T) means R made
  // none (it rode on a pending IPI).
  if (decision && decision->type != IPT_G_QUEUE) req.reached = Stage::kSendDecision;
  if (decision && decision->type == IPT_G_SEND) {
    req.owns_ipi = true;
    FollowIpi(s_ring, t_ring, q, *decision, dpos, si.decision_send[k], service, &req);
    return;
  }

  // No IPI of its own: elided, or rode on a pending IPI.
  if (decision) {
    req.elided = decision->type == IPT_G_ELIDE;
    Note(&req, {StreamKind::kGuest, s_ring.index, dpos});
  }
  if (service) {
    req.reached = Stage::kService;
    req.verdict = Verdict::kServedWithoutIpi;
    reason_ = req.elided ? NormalReason::kElidedServedOnWakeup
                         : NormalReason::kRodeOnPendingIpi;
    Note(&req, {StreamKind::kGuest, service->hit.ring, service->hit.pos});
    CheckCallbackExit(t_ring, q, *service, &req);
    return;
  }
  // An elided request waits for the polling target to leave its idle
  // loop and flush (an interrupt may come first): the settle window.  A
  // rider waits for its list's flush (ResolveRiders, ResolveBeforeSend).
  const bool t_goes_on = t_ring.last_tsc() > q.tsc;
  Break b = req.elided ? Absent(Verdict::kHandlerMissedWork, t_goes_on, q.tsc,
                                "IPI elided (target polling) but the target never "
                                "ran the function although its ring continues")
                       : Break{Verdict::kHandlerMissedWork, t_goes_on,
                               "rode on a pending IPI, never served although the "
                               "target's ring continues"};
  Conclude(b, service, &req);
  if (req.verdict == Verdict::kHandlerMissedWork && !req.elided)
    req.pending = Request::Pending::kOwner;
}

void Tracker::FollowIpi(const Ring& s_ring, const Ring& t_ring, const ipt_record& q,
                        const ipt_record& send, uint32_t send_pos, uint32_t send_index,
                        const Service* service, Request* req) {
  Note(req, {StreamKind::kGuest, s_ring.index, send_pos});
  const uint8_t vector = (send.flags & IPT_SEND_F_MASK) ? vec_cf_ : vec_cfs_;
  req->vector = vector;
  const HvSource& src = snap_->hv.source;
  if (src.guest_only) {
    // Guest-only: from the send straight to the target's handler entry.
    FollowUnobserved(t_ring, q, send.tsc, "G_SEND", IPT_HV_STAGE_ICR | IPT_HV_STAGE_IRR | IPT_HV_STAGE_ACK,
                     service, req);
    return;
  }
  const int32_t vs = req->source_vcpu;
  const int32_t vt = req->target_vcpu;
  const Ring* hv_s = vs < 0 ? nullptr : snap_->hv.RingForCpu(static_cast<uint32_t>(vs));
  const Ring* hv_t = vt < 0 ? nullptr : snap_->hv.RingForCpu(static_cast<uint32_t>(vt));
  if (!hv_s || !hv_t) {
    Conclude({Verdict::kInconclusiveGap, true, "no hv ring for the vCPU"},
             service, req);
    return;
  }

  // Stage 2: this send's H_ICR on vCPU(S).
  if (!src.Observes(IPT_HV_STAGE_ICR)) {
    FollowUnobserved(t_ring, q, send.tsc, "G_SEND", IPT_HV_STAGE_ICR | IPT_HV_STAGE_IRR | IPT_HV_STAGE_ACK,
                     service, req);
    return;
  }
  const uint32_t icr_pos =
      MatchIcr(s_ring, *hv_s, send, send_pos, send_index, vector, req->target_cpu, vt);
  if (icr_pos == RingIndex::kNoPosition) {
    // An interrupt may cut in between the send's tracepoint and its APIC
    // write: the vCPU's ring goes on (its H_ACK) before the H_ICR.
    Conclude(Absent(Verdict::kLostGuestToHypervisor, hv_s->last_tsc() > send.tsc, send.tsc,
              fmt::format("G_SEND to CPU {} has no H_ICR (vector {:#x}, "
                          "vCPU {} in bitmap) on vCPU {}'s ring",
                          req->target_cpu, vector, vt, vs)),
             service, req);
    return;
  }
  Note(req, {StreamKind::kHv, hv_s->index, icr_pos});
  req->reached = Stage::kIcr;

  // Stage 3: routing, the H_IRR that names that ICR.
  const ipt_record& icr_rec = hv_s->records[icr_pos];
  const uint32_t irr_pos = MatchIrr(*hv_s, icr_pos, vt);
  if (irr_pos == RingIndex::kNoPosition &&
      ((icr_rec.flags & IPT_ICR_F_UNRESOLVED) || !src.Observes(IPT_HV_STAGE_IRR))) {
    // The source saw the ICR write but cannot say where it was routed.
    FollowUnobserved(t_ring, q, icr_rec.tsc,
                     (icr_rec.flags & IPT_ICR_F_UNRESOLVED) ? "H_ICR (destination not resolvable "
                                                              "by the source)"
                                                            : "H_ICR",
                     IPT_HV_STAGE_IRR | IPT_HV_STAGE_ACK, service, req);
    return;
  }
  if (irr_pos == RingIndex::kNoPosition) {
    Conclude({Verdict::kLostInRouting, icr_pos + 1 < hv_s->records.size(),
              fmt::format("H_ICR seq {} on vCPU {} has no H_IRR for vCPU {}",
                          icr_rec.seq, vs, vt)},
             service, req);
    return;
  }
  Note(req, {StreamKind::kHv, hv_s->index, irr_pos});
  req->reached = Stage::kRouting;
  const uint64_t irr_tsc = hv_s->records[irr_pos].tsc;

  // Stage 4: the acknowledge of the vector on vCPU(T).
  if (!src.Observes(IPT_HV_STAGE_ACK)) {
    FollowUnobserved(t_ring, q, irr_tsc, "H_IRR", IPT_HV_STAGE_ACK, service, req);
    return;
  }
  AckMatch ack;
  if (!MatchAck(*hv_s, irr_pos, *hv_t, vt, vector, service, req, &ack)) return;
  Note(req, {StreamKind::kHv, hv_t->index, ack.pos});
  req->reached = Stage::kAcknowledge;
  FollowAcked(t_ring, *hv_t, q, send.tsc, irr_tsc, ack, service, req);
}

[[gnu::always_inline]] inline void Tracker::FollowAcked(const Ring& t_ring, const Ring& hv_t,
                                                        const ipt_record& q, uint64_t send_tsc,
                                                        uint64_t irr_tsc, const AckMatch& ack,
                                                        const Service* service, Request* req) {
  // Stage 5: the guest's IRQ entry of the vector on T.
  const uint32_t irq_pos = MatchEntry(t_ring, hv_t, ack, req->vector);
  if (irq_pos == RingIndex::kNoPosition) {
    Conclude({Verdict::kLostInGuestEntry, t_ring.last_tsc() > ack.tsc,
              fmt::format("vCPU {} acknowledged vector {:#x} but CPU {} never "
                          "entered its handler",
                          req->target_vcpu, req->vector, req->target_cpu)},
             service, req);
    return;
  }
  const uint64_t chain[3] = {send_tsc, irr_tsc, ack.tsc};
  ConcludeEntered(t_ring, req->target_vcpu, q, irq_pos, service,
                  ack.later_set_unproven ? nullptr : chain, req);
  if (ack.later_set_unproven && req->verdict == Verdict::kServedByIpi) {
    req->verdict = Verdict::kServedWithoutIpi;
    reason_ = NormalReason::kLaterIpiCoalesceUnobserved;
  }
}

[[gnu::always_inline]] inline uint32_t Tracker::MatchIcr(const Ring& s_ring, const Ring& hv_s, const ipt_record& send,
                           uint32_t send_pos, uint32_t send_index, uint8_t vector,
                           uint32_t target_cpu, int32_t vt) const {
  // At/after the send, with the vector and vCPU(T) in its bitmap.  Later
  // sends from S to T of the same kind (single or mask, i.e. the same
  // vector; not batch mates of this send, not reschedules) pair with those
  // ICRs as nested brackets: walking forward in TSC order, a send opens
  // one, an ICR closes the innermost open one, and an ICR with none open is
  // this send's.  Usually that is simply the first such ICR before the next
  // such send.  A send can also come from an interrupt taken between this
  // send's tracepoint and its APIC write, so its ICR lands first (seen in a
  // fault run: a timer interrupt on S queued an async call to T); the
  // brackets pair that too.  Sequential sends whose ICR was lost never
  // leave one over, so they stay lost.  A send of the other kind does not
  // take part: an interrupt between a mask send's tracepoint and its APIC
  // write may queue and send a single IPI to T (seen in a clean soak).  The
  // walk is capped; past the cap the send counts as lost.
  const RingIndex::Guest& si = index_->guest(s_ring.index);
  const PositionList sends = si.sends_by_target.Get(target_cpu);
  // The send is entry send_index of this list (linked by the index); the
  // next sends follow it.
  size_t si_k;
  if (send_index < sends.size() && sends[send_index] == send_pos)
    si_k = send_index + 1;
  else
    si_k = sends.FirstAfter(send_pos).value_or(sends.size());
  sends.Prefetch(s_ring, si_k + 1);

  const PositionList icrs = index_->hv(hv_s.index).icr_by_vector.Get(vector);
  constexpr int kMaxNestingWalk = 256;
  size_t ic_k = icrs.FirstAtOrAfterTscIndex(hv_s, send.tsc);
  // Every later send sits at a position after send_pos: on a ring in TSC
  // order none is stamped before the record right after the send (written
  // after the send's APIC write in the usual case), so an ICR stamped before
  // that record comes before every later send, and the walk need not load
  // the next send's record (far ahead in the ring: a cache miss).
  const uint64_t sends_after =
      s_ring.tsc_sorted && send_pos + 1 < s_ring.records.size() ? s_ring.records[send_pos + 1].tsc
                                                                 : 0;
  int open = 0;
  for (int steps = 0; steps < kMaxNestingWalk; ++steps) {
    // the next ICR of the vector with vCPU(T) in its bitmap
    uint64_t i_tsc = kNoTsc;
    for (; ic_k < icrs.size(); ++ic_k) {
      const ipt_record& rec = hv_s.records[icrs[ic_k]];
      if (IcrTargets(rec, static_cast<uint32_t>(vt))) {
        i_tsc = rec.tsc;
        break;
      }
    }
    if (i_tsc == kNoTsc) break;  // no ICR left: lost
    // the next send of the same kind to T
    uint64_t s_tsc = kNoTsc;
    if (i_tsc >= sends_after) {
      for (; si_k < sends.size(); ++si_k) {
        const ipt_record& next = s_ring.records[sends[si_k]];
        if (next.tsc != send.tsc && next.a[0] != 0 &&
            (next.flags & IPT_SEND_F_MASK) == (send.flags & IPT_SEND_F_MASK)) {
          s_tsc = next.tsc;
          break;
        }
      }
    }
    if (s_tsc != kNoTsc && s_tsc <= i_tsc) {
      ++open;  // a send comes first (at a tie: a send precedes its ICR)
      ++si_k;
      continue;
    }
    if (open == 0) return icrs[ic_k];
    --open;
    ++ic_k;
  }
  return RingIndex::kNoPosition;
}

[[gnu::always_inline]] inline uint32_t Tracker::MatchIrr(const Ring& hv_s, uint32_t icr_pos, int32_t vt) const {
  // The first H_IRR after the ICR on the same ring that names it (a[0] =
  // its seq), for vCPU(T).  The vCPU writes an ICR's H_IRRs (and kicks)
  // right after its H_ICR, so the records that follow are looked at first;
  // the ring's index by ICR seq only when the H_IRR is not among them (a
  // lost IPI, or a broadcast to many vCPUs).
  const uint64_t icr_seq = hv_s.records[icr_pos].seq;
  auto names_ours = [&](const ipt_record& rec) {
    return rec.type == IPT_H_IRR && rec.a[0] == icr_seq && icr_seq != IPT_SEQ_INVALID &&
           rec.target == static_cast<uint32_t>(vt);
  };
  constexpr size_t kIrrWalk = 16;
  const size_t n = hv_s.records.size();
  const size_t walk_end = std::min(n, size_t{icr_pos} + 1 + kIrrWalk);
  for (size_t p = size_t{icr_pos} + 1; p < walk_end; ++p)
    if (names_ours(hv_s.records[p])) return static_cast<uint32_t>(p);
  if (walk_end < n) {
    for (uint32_t p : index_->hv(hv_s.index).IrrByIcrSeq(hv_s).Get(icr_seq))
      if (p >= walk_end && names_ours(hv_s.records[p])) return p;
  }
  return RingIndex::kNoPosition;
}

[[gnu::always_inline]] inline bool Tracker::MatchAck(const Ring& hv_s, uint32_t irr_pos, const Ring& hv_t, int32_t vt,
                       uint8_t vector, const Service* service, Request* req, AckMatch* out) {
  // The first H_ACK of the vector on vCPU(T) at/after the IRR set, unless
  // the streams prove the set's bit was gone before it.
  const HvSource& src = snap_->hv.source;
  const uint64_t irr_tsc = hv_s.records[irr_pos].tsc;
  const RingIndex::Hv& ht = index_->hv(hv_t.index);
  out->acks = ht.ack_by_vector.Get(vector);
  const PositionList& acks = out->acks;
  out->index = acks.FirstAtOrAfterTscIndex(hv_t, irr_tsc);
  const uint64_t ack_tsc_or_end =
      out->index < acks.size() ? hv_t.records[acks[out->index]].tsc : ~uint64_t{0};
  if (std::string proof = LowerVectorChosen(hv_s, irr_pos, hv_t, vt, vector, ack_tsc_or_end);
      !proof.empty()) {
    Conclude({Verdict::kLostInInjection, true, std::move(proof)}, service, req);
    return false;
  }
  if (out->index == acks.size()) {
    ConcludeNeverAcked(hv_t, vt, vector, irr_tsc, service, req);
    return false;
  }
  out->pos = acks[out->index];
  out->tsc = hv_t.records[out->pos].tsc;
  // The first ACK after our IRR may belong to a later IPI: if a later IRR
  // set of this vector on vCPU(T) found the bit clear (not coalesced) before
  // that ACK, our pending bit vanished without being acknowledged.  Only a
  // source that observes coalescing can say the bit was found clear.
  // Without coalescing shown, a later IRR set of the vector before that
  // ACK leaves two readings: our bit was still set (coalesced, and this
  // ACK serves both) or it vanished and the ACK is the later IPI's.  The
  // request is then served by that ACK, its own IPI's arrival unproven.
  const std::optional<uint64_t> later_set = LaterIrrSet(vt, vector, irr_tsc, out->tsc);
  out->later_set_unproven = later_set && !src.Observes(IPT_HV_STAGE_COALESCE);
  if (later_set && !out->later_set_unproven) {
    Conclude({Verdict::kLostInInjection, true,
              fmt::format("IRR set on vCPU {} (vector {:#x}) at tsc {} was "
                          "never acknowledged: the next IRR set of that "
                          "vector at tsc {} found the bit clear, before any "
                          "H_ACK of it (at tsc {})",
                          vt, vector, irr_tsc, *later_set, out->tsc)},
             service, req);
    return false;
  }
  return true;
}

void Tracker::ConcludeNeverAcked(const Ring& hv_t, int32_t vt, uint8_t vector, uint64_t irr_tsc,
                                 const Service* service, Request* req) {
  if (index_->hv(hv_t.index).Acks(hv_t).FirstAtOrAfterTsc(hv_t, irr_tsc + 1)) {
    // Another vector acknowledged later is evidence only where the source
    // shows coalescing (the bit's state is then known); otherwise it must
    // have lasted the settle window (a higher vector may hold this one back
    // for a while).
    std::string why = fmt::format("IRR set on vCPU {} (vector {:#x}) never "
                                  "acknowledged; it acknowledged other vectors later",
                                  vt, vector);
    if (snap_->hv.source.Observes(IPT_HV_STAGE_COALESCE))
      Conclude({Verdict::kLostInInjection, true, std::move(why)}, service, req);
    else
      Conclude(Absent(Verdict::kLostInInjection, true, irr_tsc, std::move(why)), service, req);
    return;
  }
  // Silence is the only evidence: it must have lasted the settle window, on
  // the hypervisor's clock, to the end of the trace.
  std::string why = fmt::format("IRR set on vCPU {} (vector {:#x}); vCPU "
                                "acknowledged nothing since",
                                vt, vector);
  if (Settled(irr_tsc)) why += fmt::format(", {:.1f} ms to the end of the trace", MsAfter(irr_tsc));
  Conclude(Absent(Verdict::kTargetBlocked, true, irr_tsc, std::move(why)), service, req);
}

[[gnu::always_inline]] inline uint32_t Tracker::MatchEntry(const Ring& t_ring, const Ring& hv_t, const AckMatch& ack,
                             uint8_t vector) const {
  // The guest IRQ entry of the vector on T at/after the ACK and before the
  // next ACK of that vector on vCPU(T).  The handler's entry record is
  // written with interrupts off, before it returns, so a later ACK of the
  // vector cannot precede the entry of this one: an entry only after the
  // next ACK belongs to the next IPI, and this acknowledged one never
  // entered the guest.
  const PositionList irqs = index_->guest(t_ring.index).irq_by_vector.Get(vector);
  const size_t irq_i = irqs.FirstAtOrAfterTscIndex(t_ring, ack.tsc);
  if (irq_i == irqs.size()) return RingIndex::kNoPosition;
  if (ack.index + 1 < ack.acks.size()) {
    // The next ACK sits after ack.pos: on a ring in TSC order it is stamped
    // no earlier than the record right after this ACK (usually its EOI, in
    // cache), which spares loading the next ACK when that already settles it.
    const uint64_t irq_entry_tsc = t_ring.records[irqs[irq_i]].tsc;
    if (!(hv_t.tsc_sorted && hv_t.records[ack.pos + 1].tsc > irq_entry_tsc) &&
        irq_entry_tsc >= hv_t.records[ack.acks[ack.index + 1]].tsc)
      return RingIndex::kNoPosition;
  }
  return irqs[irq_i];
}

std::optional<uint64_t> Tracker::LaterIrrSet(int32_t vt, uint8_t vector, uint64_t after_tsc,
                                            uint64_t before_tsc) const {
  if (vt < 0) return std::nullopt;
  const auto t = static_cast<uint32_t>(vt);
  const RingIndex::TscEvents& sets = index_->irr_sets(t);
  for (size_t k = index_->FirstIrrSetAfter(t, after_tsc);
       k < sets.size() && sets[k].first < before_tsc; ++k)
    if (sets[k].second == vector) return sets[k].first;
  return std::nullopt;
}

std::string Tracker::LowerVectorChosen(const Ring& hv_s, uint32_t irr_pos, const Ring& hv_t,
                                       int32_t vt, uint8_t vector, uint64_t until_tsc) const {
  // A LAPIC gives the highest pending vector first: a lower one chosen for
  // vCPU T while ours was set proves ours was no longer set.  Records of a
  // vCPU ring come from that vCPU's thread, in its program order, so: the
  // set had completed by the next record the setting thread wrote (the
  // tracepoint fires before the bit is set), and the lower vector was
  // chosen after the record the target's thread wrote before its H_ACK
  // (the choice is made right before the acknowledge is traced).  Only a
  // vector that came through the LAPIC (an H_IRR of it on T, not yet
  // acknowledged) counts: an ExtINT is given before any LAPIC vector.
  if (vt < 0 || !hv_s.tsc_sorted || !hv_t.tsc_sorted || size_t{irr_pos} + 1 >= hv_s.records.size())
    return {};
  const uint64_t irr_tsc = hv_s.records[irr_pos].tsc;
  const uint64_t set_done = hv_s.records[irr_pos + 1].tsc;
  const auto t = static_cast<uint32_t>(vt);
  const RingIndex::Hv& ht = index_->hv(hv_t.index);
  const PositionList all = ht.Acks(hv_t);
  constexpr size_t kAckWalk = 64;
  size_t i = all.FirstAtOrAfterTscIndex(hv_t, set_done + 1);
  for (size_t n = 0; i < all.size() && n < kAckWalk; ++i, ++n) {
    const uint32_t p = all[i];
    const ipt_record& ack = hv_t.records[p];
    if (ack.tsc >= until_tsc) break;
    if (ack.vector >= vector || p == 0 || hv_t.records[p - 1].tsc <= set_done) continue;
    // The lower vector's own LAPIC set: the last H_IRR of it on T before
    // this ACK, with no ACK of it in between.
    const RingIndex::TscEvents& sets = index_->irr_sets(t);
    size_t k = index_->FirstIrrSetAfter(t, ack.tsc - 1);
    bool lapic = false;
    for (size_t back = 0; k > 0 && back < kAckWalk && !lapic; ++back) {
      --k;
      if (sets[k].first >= ack.tsc || sets[k].second != ack.vector) continue;
      const PositionList same = ht.ack_by_vector.Get(ack.vector);
      const size_t j = same.FirstAtOrAfterTscIndex(hv_t, sets[k].first);
      lapic = j < same.size() && same[j] == p;
      break;
    }
    if (!lapic) continue;
    return fmt::format("IRR set on vCPU {} (vector {:#x}) at tsc {} was never acknowledged: "
                       "vCPU {} was given the lower vector {:#x} at tsc {}, chosen after "
                       "that set had completed (tsc {}); a LAPIC gives the highest "
                       "pending vector first, so the bit was gone",
                       vt, vector, irr_tsc, vt, ack.vector, ack.tsc, set_done);
  }
  return {};
}

void Tracker::FollowUnobserved(const Ring& t_ring, const ipt_record& q, uint64_t from_tsc,
                               std::string_view from, uint32_t hidden, const Service* service,
                               Request* req) {
  // The next stage the streams can show is the guest's IRQ entry on T.
  const RingIndex::Guest& ti = index_->guest(t_ring.index);
  const PositionList irqs = ti.irq_by_vector.Get(req->vector);
  const size_t i = irqs.FirstAtOrAfterTscIndex(t_ring, from_tsc);
  if (i < irqs.size()) {
    // Without the acknowledge, an entry after a later IRR set of the vector
    // on T may be that later IPI's: this one's arrival is unproven, and the
    // request was served by a later IPI (or a flush), not shown by its own.
    const uint64_t entry_tsc = t_ring.records[irqs[i]].tsc;
    const bool later_ipi = snap_->hv.source.Observes(IPT_HV_STAGE_IRR) &&
                           LaterIrrSet(req->target_vcpu, req->vector, from_tsc, entry_tsc);
    ConcludeEntered(t_ring, req->target_vcpu, q, irqs[i], service, nullptr, req);
    if (later_ipi && req->verdict == Verdict::kServedByIpi) {
      req->verdict = Verdict::kServedWithoutIpi;
      reason_ = NormalReason::kLaterIpiUnobservedAck;
    }
    return;
  }
  const std::string unseen = snap_->hv.source.Unobserved(hidden);
  if (snap_->hv.source.guest_only) {
    Conclude(Absent(Verdict::kLostInUnobservedStage, t_ring.last_tsc() > from_tsc, from_tsc,
                    fmt::format("sent, never received: CPU {} never entered the handler of "
                                "vector {:#x}; hypervisor stage unknown: {}",
                                req->target_cpu, req->vector, unseen)),
             service, req);
    return;
  }
  Conclude(Absent(Verdict::kLostInUnobservedStage, t_ring.last_tsc() > from_tsc, from_tsc,
                  fmt::format("{} but CPU {} never entered the handler of vector {:#x}; in "
                              "between, the hypervisor source ({}) cannot observe {}",
                              from, req->target_cpu, req->vector, snap_->hv.source.name,
                              unseen.empty() ? std::string("where the IPI went") : unseen)),
           service, req);
}

void Tracker::ConcludeEntered(const Ring& t_ring, int32_t vt, const ipt_record& q,
                              uint32_t irq_pos, const Service* service, const uint64_t* chain,
                              Request* req) {
  const uint64_t irq_tsc = t_ring.records[irq_pos].tsc;
  Note(req, {StreamKind::kGuest, t_ring.index, irq_pos});
  req->reached = Stage::kGuestEntry;

  // Stage 6: service.
  if (service) {
    Note(req, {StreamKind::kGuest, service->hit.ring, service->hit.pos});
    if (service->hit.tsc < irq_tsc) {
      // Served before the handler this IPI entered: not through its chain.
      req->verdict = Verdict::kServedWithoutIpi;
      reason_ = NormalReason::kFlushBeforeIpi;
    } else {
      req->reached = Stage::kService;
      req->verdict = Verdict::kServedByIpi;
      reason_ = NormalReason::kFullChain;
    }
    CheckCallbackExit(t_ring, q, *service, req);
    if (req->verdict == Verdict::kServedByIpi && !refollowing_ && chain) {
      // StageLatencies' samples: first G_SEND, H_IRR, H_ACK, G_IRQ_ENTRY,
      // G_FUNC_ENTRY of the chain.
      const uint64_t send_tsc = chain[0], irr_tsc = chain[1], ack_tsc = chain[2];
      if (irr_tsc >= send_tsc) latency_samples_[0].push_back(irr_tsc - send_tsc);
      if (ack_tsc >= irr_tsc) latency_samples_[1].push_back(ack_tsc - irr_tsc);
      if (irq_tsc >= ack_tsc) latency_samples_[2].push_back(irq_tsc - ack_tsc);
      if (service->hit.type == IPT_G_FUNC_ENTRY && service->hit.tsc >= irq_tsc)
        latency_samples_[3].push_back(service->hit.tsc - irq_tsc);
    }
    return;
  }
  const bool over = FlushOver(t_ring, vt, irq_tsc, irq_pos);
  Conclude({Verdict::kHandlerMissedWork, over,
            over ? fmt::format("CPU {} entered the call-function handler and "
                               "left it without running the request's function",
                               req->target_cpu)
                 : fmt::format("CPU {} was still in the call-function handler "
                               "entered at tsc {} (no return, no interrupt since)",
                               req->target_cpu, irq_tsc)},
           service, req);
}

void Tracker::UnblameService(RequestTable* t) const {
  // A guest kernel without function records cannot show the idle flush
  // that serves an elided request, whether a handler entered just before a
  // rider's queue still took it, nor a function that never returned: what
  // would be a service loss is service-unobserved, never blamed.
  for (Request& r : t->details_) {
    if (r.verdict != Verdict::kHandlerMissedWork && r.verdict != Verdict::kCallbackStuck)
      continue;
    r.verdict = Verdict::kServiceUnobserved;
    r.pending = Request::Pending::kNone;
    r.reason = fmt::format("{}; whether CPU {} ran the function, its guest kernel cannot show ({})",
                           r.reason, r.target_cpu, snap_->guest.stages.Describe());
  }
}

uint64_t Tracker::SettleClockEnd() const {
  // The hypervisor's rings (the guest cannot stretch them); guest-only, the
  // guest's own, the only clock there is.
  return snap_->hv.source.guest_only ? index_->snapshot_end_tsc() : index_->hv_end_tsc();
}

bool Tracker::Settled(uint64_t tsc) const {
  const uint64_t w = inputs_->settle_ticks;
  const uint64_t end = SettleClockEnd();
  return w != 0 && end >= tsc && end - tsc >= w;
}

double Tracker::MsAfter(uint64_t tsc) const {
  const uint64_t end = SettleClockEnd();
  if (inputs_->tsc_khz == 0 || end <= tsc) return 0.0;
  return static_cast<double>(end - tsc) / static_cast<double>(inputs_->tsc_khz);
}

std::string Tracker::UnsettledNote(uint64_t tsc) const {
  if (inputs_->settle_ticks == 0) return "no settle window (TSC rate unknown)";
  return fmt::format("the trace went on {:.1f} ms past it, under the {:.0f} ms settle window",
                     MsAfter(tsc),
                     static_cast<double>(inputs_->settle_ticks) /
                         static_cast<double>(inputs_->tsc_khz));
}

Tracker::Break Tracker::Absent(Verdict loss, bool continues, uint64_t tsc,
                               std::string reason) const {
  if (continues && !Settled(tsc)) {
    return {loss, false, fmt::format("{} ({})", reason, UnsettledNote(tsc))};
  }
  return {loss, continues, std::move(reason)};
}

bool Tracker::FlushOver(const Ring& t_ring, int32_t vcpu, uint64_t tsc, uint32_t pos) const {
  if (vcpu >= 0) {
    if (const Ring* hv = snap_->hv.RingForCpu(static_cast<uint32_t>(vcpu))) {
      if (index_->hv(hv->index).Acks(*hv).FirstAtOrAfterTsc(*hv, tsc + 1)) return true;
    }
  }
  const RingIndex::Guest& ti = index_->guest(t_ring.index);
  for (const uint8_t v : {vec_cf_, vec_cfs_}) {
    const PositionList irqs = ti.irq_by_vector.Get(v);
    const size_t i = irqs.FirstAtOrAfterTscIndex(t_ring, tsc + 1);
    if (i < irqs.size() && (pos == RingIndex::kNoPosition || irqs[i] > pos)) return true;
  }
  if (pos == RingIndex::kNoPosition) return false;
  const size_t end = std::min(t_ring.records.size(), size_t{pos} + 1 + kExitWalk);
  for (size_t p = size_t{pos} + 1; p < end; ++p) {
    const ipt_record& rec = t_ring.records[p];
    if (rec.type == IPT_G_IRQ_EXIT && (rec.vector == vec_cf_ || rec.vector == vec_cfs_))
      return true;
    if (rec.type == IPT_G_IRQ_ENTRY) return true;
  }
  return false;
}

void Tracker::Conclude(const Break& b, const Service* service,
                       Request* req) {
  if (!b.continues) {
    if (service) {
      req->verdict = Verdict::kServedWithoutIpi;
      reason_ = NormalReason::kIpiFatePastEnd;
      Note(req, {StreamKind::kGuest, service->hit.ring, service->hit.pos});
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
    Note(req, {StreamKind::kGuest, service->hit.ring, service->hit.pos});
  }
}

void Tracker::ResolveRiders(RequestTable* t) {
  bool any = false;
  for (const Request& r : t->details_) any = any || r.pending == Request::Pending::kOwner;
  if (!any) return;
  // Requests that own an IPI, per target, by queue TSC: the owner is the
  // request that found the target's queue empty, so every request queued
  // after it and before the target's next flush is in its list, even when
  // the owner's G_SEND is stamped after the rider's G_QUEUE.
  std::vector<std::vector<std::pair<uint64_t, size_t>>> owners(IPT_MAX_CPUS);
  // Of those, the ones never served whose IPI was lost (a handful at most).
  std::vector<std::vector<std::pair<uint64_t, size_t>>> lost_owners(IPT_MAX_CPUS);
  for (size_t i = 0; i < t->rows_.size(); ++i) {
    const RequestTable::Row& r = t->rows_[i];
    if (!r.owns_ipi() || r.target_cpu >= IPT_MAX_CPUS) continue;
    const Request* d = t->detail(i);
    if (d && d->evidence.size() < 2) continue;
    owners[r.target_cpu].push_back({r.queue_tsc, i});
    if (!r.served() && d && IsLoss(d->verdict)) lost_owners[r.target_cpu].push_back({r.queue_tsc, i});
  }
  for (auto* all : {&owners, &lost_owners})
    for (auto& v : *all)
      if (!std::is_sorted(v.begin(), v.end())) std::sort(v.begin(), v.end());
  for (size_t i = 0; i < t->rows_.size(); ++i) {
    const uint32_t d = t->rows_[i].detail;
    if (d == RequestTable::kNoDetail || t->details_[d].pending != Request::Pending::kOwner)
      continue;
    Request& r = t->details_[d];
    r.pending = Request::Pending::kBeforeSend;  // unless an owner is found below
    if (r.target_cpu >= IPT_MAX_CPUS) continue;
    const auto& v = owners[r.target_cpu];
    if (v.empty()) continue;
    auto o = std::partition_point(v.begin(), v.end(), [&](const auto& e) {
      return e.first <= r.queue_tsc;
    });
    // The latest owner queued before the rider, unless the target flushed
    // that owner's list before the rider queued: then the rider joined the
    // list of the next owner, whose G_QUEUE was stamped just after the
    // rider's (both raced to llist_add(); the owner got there first).
    if (o != v.begin()) {
      const RequestTable::Row& prev = t->rows_[std::prev(o)->second];
      if (!(prev.served() && prev.served_tsc < r.queue_tsc)) --o;
    }
    // A loss verdict is never normal, so a lost owner has a detail.
    const Request* owner = o == v.end() ? nullptr : t->detail(o->second);
    size_t owner_row = o == v.end() ? 0 : o->second;
    if (!owner || !IsLoss(owner->verdict)) {
      // G_QUEUE is stamped before llist_add(): an owner can be stamped long
      // before it owns the list (its vCPU descheduled in between; 2.9 ms in
      // a route-fault run, while two other owners to the same target came
      // and were served), so queue order can name the wrong owner.  But
      // this rider was never served although the target went on: the list
      // it joined was never flushed, so its owner was never served either,
      // and a target has at most one such list.  An owner to the target
      // that was never served and whose IPI was lost is that owner: the
      // only one, or the latest queued before the rider.
      const auto& lv = lost_owners[r.target_cpu];
      auto lo = std::partition_point(lv.begin(), lv.end(), [&](const auto& e) {
        return e.first <= r.queue_tsc;
      });
      if (lv.size() == 1) {
        lo = lv.begin();
      } else if (lo != lv.begin()) {
        --lo;
      } else {
        continue;
      }
      owner = t->detail(lo->second);
      owner_row = lo->second;
    }
    // Not a loss of its own: the guest correctly sent no IPI (the queue
    // was not empty); the blame belongs to the owner's lost IPI alone.
    r.verdict = Verdict::kQueuedBehindLoss;
    r.rode_on = static_cast<int64_t>(owner_row);
    r.pending = Request::Pending::kNone;
    r.reason = fmt::format("queued behind the request queued at tsc {} by "
                           "CPU {}, whose IPI was lost ({}): {}",
                           owner->queue_tsc, owner->source_cpu,
                           VerdictName(owner->verdict), owner->reason);
    r.evidence.Append(owner->evidence);
  }
}

// RequestTable -------------------------------------------------------------

}  // namespace ipitrace
