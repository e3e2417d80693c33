// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_TRACKER_H_
#define IPITRACE_HOST_AGENT_TRACKER_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cpu_map.h"
#include "request_table.h"
#include "records.h"
#include "ring_index.h"
#include "snapshot.h"
#include "stats.h"


namespace ipitrace {

// Latency samples of one stage, in TSC ticks: 32-bit where they fit (all
// but waits of seconds), so 10^6 of them take 4 MB, not 8.
struct LatencySamples {
  std::vector<uint32_t> small;  // < 2^32
  std::vector<uint64_t> big;    // >= 2^32: all larger than every small one

  [[gnu::always_inline]] void push_back(uint64_t v) {
    if (v <= UINT32_MAX) [[likely]]
      small.push_back(static_cast<uint32_t>(v));
    else
      big.push_back(v);
  }
  size_t size() const { return small.size() + big.size(); }
  bool empty() const { return small.empty() && big.empty(); }
  void clear() {
    small.clear();
    big.clear();
  }
};
using StageSamples = std::array<LatencySamples, 4>;

// Everything a Tracker reads, shared with the RequestTable it fills (whose
// rows point into the snapshot's G_QUEUE records).
struct TrackerInputs {
  TrackerInputs(Snapshot s, CpuMap m, std::shared_ptr<const RingIndex> i,
                uint64_t khz = 0, uint64_t settle = 0)
      : snapshot(std::move(s)), map(std::move(m)), index(std::move(i)),
        tsc_khz(khz), settle_ticks(settle) {}
  Snapshot snapshot;
  CpuMap map;
  std::shared_ptr<const RingIndex> index;
  uint64_t tsc_khz;  // the hypervisor's TSC rate (for reasons in ms)
  // The settle window.  Where the next stage is asynchronous to the one a
  // request reached (the target's acknowledge after an IRR set, the APIC
  // write after a send decision an interrupt may cut in on, the send after
  // a queue, the service after an elision), its absence is a loss only when
  // the trace went on at least this many TSC ticks past the stage reached,
  // on the hypervisor's rings (the guest cannot stretch it); before, the
  // request is in-flight: a snapshot lands at any instant, in the middle of
  // a handler or of a host deschedule.  0: never.  target-blocked rests on
  // the target's silence alone and needs it to have lasted this long.
  uint64_t settle_ticks;
};

// Tracker follows every request (G_QUEUE) of a snapshot through the stages
// of docs/streams.md, "Following one request" -- send decision, ICR,
// routing, acknowledge, guest entry, service -- with one matcher per stage
// (MatchIcr, MatchIrr, MatchAck, MatchEntry; the served rule in
// served_rule.h), and gives each its verdict: the first stage with no
// match, once the settle window says the absence is not just the snapshot
// cutting in.  Then the requests that depend on others (riders, sends
// never made) are resolved against them.  Why one pass in queue order over
// prebuilt indexes (RingIndex): 10^7 requests a snapshot, each followed in
// a few cache misses; the result is a compact RequestTable that keeps whole
// only the requests its DetailPolicy names (what the reports will read).
//
// A request's verdict is the first stage with no match, provided the ring
// that should hold it shows later activity (else in-flight) and no
// relevant ring (S's and T's guest and hv rings) lost or tore records since
// the queue TSC (else inconclusive-gap).  Lookups go through the RingIndex
// (flat per-ring position lists, searched by position for program order
// within a ring and by TSC across rings).  Requests are followed in report
// order -- queue TSC, ties by source CPU: a k-way merge of the source
// rings' queue lists -- so the searches on each list move forward and
// gallop from the previous answer: a snapshot is analysed in O(n) plus
// O(n log n) only where a ring's TSC went backwards.  Records are read
// from the snapshot as needed, each into a local copy; a request keeps
// references to its evidence, not copies.
class Tracker {
 public:
  Tracker(std::shared_ptr<const TrackerInputs> inputs, Stats* stats);

  // Requests in queue-TSC order; those 'details' names kept whole.
  RequestTable Run(DetailPolicy details);

  // Per-stage latencies (TSC ticks) of the served-by-ipi requests of the
  // last Run(), in the order of StageLatency (send->IRR, IRR->ACK,
  // ACK->IRQ, IRQ->function): what StageLatencies(requests) derives from
  // the evidence, gathered while following.
  const StageSamples& latency_samples() const { return latency_samples_; }
  StageSamples TakeLatencySamples() { return std::move(latency_samples_); }

 private:
  // The record that served a request: where, and the fields read from it.
  struct Hit {
    uint32_t ring;
    uint32_t pos;
    uint64_t tsc;
    uint16_t type;
    uint64_t func;  // a[0]
    uint64_t csd;   // a[1]
  };
  // The service found for a request, and the function-entry list it came
  // from (entries null: the call-function points of irq_work).  Filled by
  // FindService, and only read when it returns true; no default member
  // initialisers, so the one constructed per request is not zero-filled
  // first (a `rep stos` that cost 1.5 % of `analyze`).
  struct Service {
    Hit hit;
    EntryLists::List list;
    size_t index;  // of hit.pos in list.entries
    bool by_func;
  };
  // Where a chain broke: the verdict if the stream continues, and whether it
  // does.
  struct Break {
    Verdict loss;
    bool continues;
    std::string reason;
  };

  // Follows the request of queues[k] (at pos) of s_ring's index into the
  // scratch *req, and adds it to *table (again with its evidence where the
  // table keeps the whole request).
  void FollowInto(const Ring& s_ring, uint32_t k, uint32_t pos, Request* req,
                  RequestTable* table);
  // Follows the request of queues[k] (at pos) of s_ring's index.
  void Follow(const Ring& s_ring, uint32_t k, uint32_t pos, const ipt_record& q,
              const Ring& t_ring, Request* req);
  // Follow() again, noting the evidence, for a request the table keeps
  // whole: no latency samples, nothing counted in Stats (the first follow
  // counted).
  void FollowNoting(const Ring& s_ring, uint32_t k, uint32_t pos, const ipt_record& q,
                    const Ring& t_ring, Request* req);
  // A request that owns an IPI (its send decision was a G_SEND): one
  // matcher per stage of docs/streams.md, "Following one request"; the
  // first stage without a match is where the IPI vanished.
  void FollowIpi(const Ring& s_ring, const Ring& t_ring, const ipt_record& q,
                 const ipt_record& send, uint32_t send_pos, uint32_t send_index,
                 const Service* service, Request* req);
  // Stage 2, send <-> ICR pairing: the position of the send's H_ICR on
  // vCPU(S)'s ring hv_s, or RingIndex::kNoPosition.
  uint32_t MatchIcr(const Ring& s_ring, const Ring& hv_s, const ipt_record& send,
                    uint32_t send_pos, uint32_t send_index, uint8_t vector, uint32_t target_cpu,
                    int32_t vt) const;
  // Stage 3, ICR -> IRR matching: the H_IRR for vCPU vt naming the ICR at
  // icr_pos, or RingIndex::kNoPosition.
  uint32_t MatchIrr(const Ring& hv_s, uint32_t icr_pos, int32_t vt) const;
  // Stage 4, the acknowledge: the H_ACK of 'vector' on vCPU vt that took
  // the IRR set at irr_pos.  False once the request is concluded (the bit
  // proven gone, or never acknowledged).
  struct AckMatch {
    PositionList acks;  // the vector's H_ACKs on vCPU(T)
    size_t index = 0;   // of the match in acks
    uint32_t pos = 0;
    uint64_t tsc = 0;
    // A later IRR set of the vector came before this ACK and the source
    // cannot show coalescing: the ACK may be that later IPI's.
    bool later_set_unproven = false;
  };
  bool MatchAck(const Ring& hv_s, uint32_t irr_pos, const Ring& hv_t, int32_t vt,
                uint8_t vector, const Service* service, Request* req, AckMatch* out);
  // No H_ACK of the vector after the IRR set: lost-in-injection (other
  // vectors acknowledged) or target-blocked (nothing), after the settle
  // window where the evidence is an absence.
  void ConcludeNeverAcked(const Ring& hv_t, int32_t vt, uint8_t vector, uint64_t irr_tsc,
                          const Service* service, Request* req);
  // From the acknowledge on (stage 5, then service): lost-in-guest-entry,
  // or ConcludeEntered.
  void FollowAcked(const Ring& t_ring, const Ring& hv_t, const ipt_record& q, uint64_t send_tsc,
                   uint64_t irr_tsc, const AckMatch& ack, const Service* service, Request* req);
  // Stage 5, guest entry: the G_IRQ_ENTRY of the acknowledged IPI on T, or
  // RingIndex::kNoPosition.
  uint32_t MatchEntry(const Ring& t_ring, const Ring& hv_t, const AckMatch& ack,
                      uint8_t vector) const;
  void Conclude(const Break& b, const Service* service, Request* req);
  // From the last stage the hypervisor source showed ('from', at from_tsc),
  // past the stages it cannot observe ('hidden', IPT_HV_STAGE_*), to the
  // guest's IRQ entry: served, or lost-in-unobserved-stage (never a stage
  // the source could not see).
  void FollowUnobserved(const Ring& t_ring, const ipt_record& q, uint64_t from_tsc,
                        std::string_view from, uint32_t hidden, const Service* service,
                        Request* req);
  // The request's IPI entered the guest handler at irq_pos on T: served, or
  // handler-missed-work.  chain: send, IRR and ACK TSCs for the latency
  // samples (null when a stage was not observed).
  void ConcludeEntered(const Ring& t_ring, int32_t vt, const ipt_record& q, uint32_t irq_pos,
                       const Service* service, const uint64_t* chain, Request* req);
  // The TSC of the first IRR set (non-coalesced H_IRR) of 'vector' on vCPU
  // vt after after_tsc and before before_tsc, if any.
  std::optional<uint64_t> LaterIrrSet(int32_t vt, uint8_t vector, uint64_t after_tsc,
                                      uint64_t before_tsc) const;
  // Proof that the IRR set at irr_pos of hv_s (for vCPU vt, 'vector') was
  // gone before any acknowledge of it: vt was given a lower LAPIC vector,
  // chosen after the set had completed and before until_tsc.  Empty if the
  // streams do not prove it.
  std::string LowerVectorChosen(const Ring& hv_s, uint32_t irr_pos, const Ring& hv_t, int32_t vt,
                                uint8_t vector, uint64_t until_tsc) const;
  // False if nothing served it.
  bool FindService(const Ring& t_ring, const ipt_record& queue, Service* svc) const;
  // Served verdicts: the function entered but never exited while T's ring
  // went on becomes callback-stuck.
  void CheckCallbackExit(const Ring& t_ring, const ipt_record& queue,
                         const Service& service, Request* req);
  void ResolveBeforeSend(RequestTable* t);
  // For ResolveBeforeSend: whether the request (entry k of idx, its
  // target's rows in queue order) joined a list that was not empty (an
  // earlier request to the target still outstanding at its queue); then it
  // is in-flight unless that list's flush is over (and stays
  // handler-missed-work otherwise).
  bool JoinedAList(const RequestTable& t, const std::vector<size_t>& idx, size_t k,
                   Request* req) const;
  // Whether CPU 'cpu' (vCPU 'vcpu') is past the flush that was running at
  // 'tsc' (a call-function handler entered, or a function of the flush
  // run, then): it took an interrupt after it (an H_ACK on its vCPU's
  // ring, a call-function IRQ entry on its guest ring; a flush runs with
  // interrupts off) or its guest ring shows the handler return (G_IRQ_EXIT
  // within kExitWalk records after 'pos', when pos is a position).  A
  // snapshot taken mid-flush shows the functions run so far and not the
  // rest: those are in flight, not missed.
  bool FlushOver(const Ring& t_ring, int32_t vcpu, uint64_t tsc, uint32_t pos) const;
  // Whether the trace (hypervisor's rings) went on for the settle window
  // past 'tsc'; and the time it did, in ms, for reasons.
  bool Settled(uint64_t tsc) const;
  // The end of the clock the settle window is measured on.
  // The guest kernel shows no function records: every service loss
  // (handler-missed-work, callback-stuck) becomes service-unobserved.
  void UnblameService(RequestTable* t) const;
  uint64_t SettleClockEnd() const;
  double MsAfter(uint64_t tsc) const;
  std::string UnsettledNote(uint64_t tsc) const;
  // A Break whose evidence is an absence after 'tsc': it continues (a
  // loss) only if the ring went on and the trace settled past 'tsc'; else
  // in-flight, its reason saying how far the trace went.
  Break Absent(Verdict loss, bool continues, uint64_t tsc, std::string reason) const;
  static constexpr uint32_t kExitWalk = 256;
  void ComputeActivity(Request* req) const;
  // Non-empty description of the first relevant ring with a gap at or after
  // the request's queue TSC.
  std::string FindGap(const Request& req) const;
  void ResolveRiders(RequestTable* t);

  std::shared_ptr<const TrackerInputs> inputs_;
  const Snapshot* snap_;
  const CpuMap* map_;
  const RingIndex* index_;
  Stats* stats_;
  DetailPolicy details_;
  size_t kept_without_ipi_ = 0;  // served-without-ipi requests kept whole so far
  // Following a request the second time (FollowNoting): counts nothing.
  bool refollowing_ = false;
  // Whether following a request notes its evidence: Run() follows every
  // request without, and again with, only those the table keeps whole.
  bool record_evidence_ = false;
  void Note(Request* req, const EvidenceChain::Ref& ref) const {
    if (record_evidence_) req->evidence.push_back(ref);
  }
  uint8_t vec_cf_ = 0;
  uint8_t vec_cfs_ = 0;
  // Whether the guest kernel shows function records (GuestStages); without
  // them a request is served by its target's handler entry (served_rule.h)
  // and the service is never blamed.
  bool func_observed_ = true;
  std::shared_ptr<const RecordStore> store_;
  StageSamples latency_samples_;
  // The literal reason of the request being followed (kNone: req.reason).
  NormalReason reason_ = NormalReason::kNone;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_TRACKER_H_
