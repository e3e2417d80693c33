// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_TRACKER_H_
#define IPITRACE_HOST_AGENT_TRACKER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cpu_map.h"
#include "records.h"
#include "snapshot.h"
#include "stats.h"

namespace ipitrace {

// X(enumerator, name, is_loss).  Loss verdicts name the stage where an IPI
// vanished; the others say it did not (or that the data cannot tell).
#define IPT_VERDICTS(X)                                    \
  X(kServedByIpi, "served-by-ipi", false)                  \
  X(kServedWithoutIpi, "served-without-ipi", false)        \
  X(kLostBeforeSend, "lost-before-send", true)             \
  X(kLostGuestToHypervisor, "lost-guest-to-hypervisor", true) \
  X(kLostInRouting, "lost-in-routing", true)               \
  X(kLostInInjection, "lost-in-injection", true)           \
  X(kTargetBlocked, "target-blocked", true)                \
  X(kLostInGuestEntry, "lost-in-guest-entry", true)        \
  X(kHandlerMissedWork, "handler-missed-work", true)       \
  X(kCallbackStuck, "callback-stuck", true)                \
  X(kInconclusiveGap, "inconclusive-gap", false)           \
  X(kQueuedBehindLoss, "queued-behind-loss", false)        \
  X(kInFlight, "in-flight", false)

enum class Verdict {
#define IPT_VERDICT_ENUM(e, name, loss) e,
  IPT_VERDICTS(IPT_VERDICT_ENUM)
#undef IPT_VERDICT_ENUM
      kNumVerdicts
};
inline constexpr size_t kNumVerdicts = static_cast<size_t>(Verdict::kNumVerdicts);

std::string_view VerdictName(Verdict v);
bool IsLoss(Verdict v);
// Normal outcomes: served-by-ipi, served-without-ipi.  Every other verdict
// gets a TargetActivity and a slice in the text report.
bool IsNormal(Verdict v);

// A copy of one record that supports a verdict, with where it came from.
struct Evidence {
  StreamKind stream = StreamKind::kGuest;
  uint32_t ring = 0;
  ipt_record rec{};
  uint32_t pos = 0;  // position in the ring's accepted records
};

// What the target did while a request waited (non-normal verdicts only):
// the window is [queue tsc, served tsc) or, when never served, [queue tsc,
// end of the snapshot).
struct TargetActivity {
  bool computed = false;
  uint64_t window_start = 0;
  uint64_t window_end = 0;
  bool outstanding = false;  // never served: still outstanding at snapshot
  uint64_t wait_ticks = 0;   // served - queue, or snapshot end - queue
  std::vector<std::pair<uint8_t, uint64_t>> acks_by_vector;    // H_ACK on vCPU(T)
  std::vector<std::pair<uint16_t, uint64_t>> guest_events;     // by type on T
  uint64_t hv_records = 0;    // all records on vCPU(T)'s ring in the window
  uint64_t kicks = 0;         // H_KICK to vCPU(T) in the window
  uint64_t kicks_halted = 0;  // ... with IPT_KICK_F_HALTED
};

// One csd request (one G_QUEUE record) and what became of it.
struct Request {
  uint32_t source_cpu = 0;
  uint32_t target_cpu = 0;
  int32_t source_vcpu = -1;
  int32_t target_vcpu = -1;
  uint8_t vector = 0;  // IPI vector if the request owns an IPI, else 0
  uint64_t queue_tsc = 0;
  uint64_t func = 0;
  uint64_t csd = 0;
  uint8_t csd_type = 0;
  bool owns_ipi = false;  // a G_SEND of its own was found
  bool elided = false;    // G_ELIDE: target was polling
  Verdict verdict = Verdict::kInFlight;
  // Set when the request's function ran (for loss verdicts: served_late).
  std::optional<uint64_t> served_tsc;
  bool served_late = false;  // loss verdict, yet a later flush served it
  int64_t rode_on = -1;      // index of the request whose lost IPI it waited on
  std::string reason;        // one line: why this verdict
  std::vector<Evidence> evidence;
  TargetActivity activity;   // non-normal verdicts only
};

// Tracker follows every G_QUEUE request through the stages of
// docs/streams.md "Following one request":
//
//   send decision (S guest ring) -> H_ICR (vCPU(S) ring) -> H_IRR (same ring,
//   a[0] = ICR seq, target vCPU(T)) -> H_ACK (vCPU(T) ring) -> G_IRQ_ENTRY
//   (T guest ring) -> G_FUNC_ENTRY (T guest ring, R's csd)
//
// and gives each request a Verdict: the first stage with no match, provided
// the ring that should hold it shows later activity (else in-flight) and no
// relevant ring (S's and T's guest and hv rings) lost or tore records since
// the queue TSC (else inconclusive-gap).
//
// Lookups go through per-ring indexes built once (record positions by type
// and key, searched by position for program order within a ring and by TSC
// across rings), so a snapshot is analysed in O(n log n).
class Tracker {
 public:
  Tracker(const Snapshot* snap, const CpuMap* map, Stats* stats);

  // Requests in queue-TSC order.
  std::vector<Request> Run();

 private:
  using Positions = std::vector<uint32_t>;

  struct GuestIndex {
    // G_SEND (callback != 0), G_ELIDE and G_QUEUE by target.
    std::unordered_map<uint16_t, Positions> decisions_by_target;
    std::unordered_map<uint16_t, Positions> sends_by_target;
    std::unordered_map<uint8_t, Positions> irq_by_vector;
    std::unordered_map<uint64_t, Positions> func_by_csd;
    std::unordered_map<uint64_t, Positions> func_by_func;
    std::unordered_map<uint64_t, Positions> exit_by_csd;
    std::unordered_map<uint64_t, Positions> exit_by_func;
    Positions callfunc_points;  // call-function IRQ entries + func entries
    Positions queues;
  };
  struct HvIndex {
    std::unordered_map<uint8_t, Positions> icr_by_vector;
    std::unordered_map<uint64_t, Positions> irr_by_icr_seq;
    std::unordered_map<uint8_t, Positions> ack_by_vector;
    Positions acks;
  };
  // Where a chain broke: the verdict if the stream continues, and whether it
  // does.
  struct Break {
    Verdict loss;
    bool continues;
    std::string reason;
  };

  void BuildIndexes();
  Request Follow(const Ring& s_ring, uint32_t pos);
  void FollowIpi(const Ring& s_ring, const Ring& t_ring, const ipt_record& send,
                 uint32_t send_pos, const std::optional<Evidence>& service,
                 Request* req);
  void Conclude(const Break& b, const std::optional<Evidence>& service,
                Request* req);
  std::optional<Evidence> FindService(const Ring& t_ring,
                                      const ipt_record& queue) const;
  // Served verdicts: the function entered but never exited while T's ring
  // went on becomes callback-stuck.
  void CheckCallbackExit(const Ring& t_ring, const ipt_record& queue,
                         Request* req) const;
  void ResolveBeforeSend(std::vector<Request>* requests);
  void ComputeActivity(Request* req) const;
  // Non-empty description of the first relevant ring with a gap at or after
  // the request's queue TSC.
  std::string FindGap(const Request& req) const;
  void ResolveRiders(std::vector<Request>* requests);

  const Snapshot* snap_;
  const CpuMap* map_;
  Stats* stats_;
  uint8_t vec_cf_ = 0;
  uint8_t vec_cfs_ = 0;
  std::vector<GuestIndex> guest_index_;  // by guest ring index
  std::vector<HvIndex> hv_index_;        // by hv ring index
  // Non-coalesced H_IRR sets (tsc, vector) by target vCPU over all hv
  // rings, tsc order: a later set finding the bit clear proves an earlier
  // pending bit vanished if no ACK came in between (lost-in-injection).
  std::unordered_map<uint16_t, std::vector<std::pair<uint64_t, uint8_t>>> irr_sets_;
  // H_KICK (tsc, flags) by target vCPU, over all hv rings, tsc order.
  std::unordered_map<uint16_t, std::vector<std::pair<uint64_t, uint8_t>>> kicks_;
  uint64_t snapshot_end_tsc_ = 0;  // largest last tsc over all rings
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_TRACKER_H_
