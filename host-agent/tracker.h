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
#include "records.h"
#include "ring_index.h"
#include "snapshot.h"
#include "stats.h"

namespace ipitrace {

// X(enumerator, name, is_loss, stage, meaning).  Loss verdicts name the
// stage of docs/streams.md ("Following one request") where an IPI
// vanished; the others say it did not (or that the data cannot tell), and
// name none ("-").  The one table: `ipitrace verdicts --json` publishes
// it, and the harness reads it from there.
#define IPT_VERDICTS(X)                                                       \
  X(kServedByIpi, "served-by-ipi", false, "-", "served through its own IPI (full chain)") \
  X(kServedWithoutIpi, "served-without-ipi", false, "-",                      \
    "served by an idle flush, a polling wake or an IPI it rode on")           \
  X(kLostBeforeSend, "lost-before-send", true, "send decision",               \
    "queued, target not polling, but the guest never sent an IPI")            \
  X(kLostGuestToHypervisor, "lost-guest-to-hypervisor", true, "ICR",          \
    "the guest sent it, the hypervisor saw no ICR write for it")              \
  X(kLostInRouting, "lost-in-routing", true, "routing",                       \
    "ICR write seen, the target's IRR never set for it")                      \
  X(kLostInInjection, "lost-in-injection", true, "acknowledge",               \
    "IRR set, the target acknowledged other vectors, never this one")         \
  X(kTargetBlocked, "target-blocked", true, "acknowledge",                    \
    "IRR set, the target acknowledged nothing at all since")                  \
  X(kLostInGuestEntry, "lost-in-guest-entry", true, "guest entry",            \
    "acknowledged by the vCPU, the guest never entered its handler")          \
  X(kHandlerMissedWork, "handler-missed-work", true, "service",               \
    "the target's handler ran after the queue but not this request")          \
  X(kCallbackStuck, "callback-stuck", true, "service",                        \
    "the function entered and never returned")                                \
  X(kLostInUnobservedStage, "lost-in-unobserved-stage", true, "unobserved",   \
    "lost between two observed stages; the ones in between are invisible to " \
    "the source (named, with what would show them)")                          \
  X(kInconclusiveGap, "inconclusive-gap", false, "-",                         \
    "a ring lost records in the window that matters")                         \
  X(kQueuedBehindLoss, "queued-behind-loss", false, "-",                      \
    "rode on an IPI that was itself lost; the blame stays with that one")     \
  X(kInFlight, "in-flight", false, "-", "still on its way at the end of the trace")

enum class Verdict : uint8_t {
#define IPT_VERDICT_ENUM(e, name, loss, stage, meaning) e,
  IPT_VERDICTS(IPT_VERDICT_ENUM)
#undef IPT_VERDICT_ENUM
      kNumVerdicts
};
inline constexpr size_t kNumVerdicts = static_cast<size_t>(Verdict::kNumVerdicts);

std::string_view VerdictName(Verdict v);
std::string_view VerdictMeaning(Verdict v);
// The stage a loss verdict names ("-" for the others).
std::string_view VerdictStage(Verdict v);
// Loss verdicts name a stage (the third column of IPT_VERDICTS).
inline bool IsLoss(Verdict v) {
  static constexpr bool kLoss[] = {
#define IPT_VERDICT_LOSS(e, name, loss, stage, meaning) loss,
      IPT_VERDICTS(IPT_VERDICT_LOSS)
#undef IPT_VERDICT_LOSS
  };
  static_assert(sizeof(kLoss) / sizeof(kLoss[0]) == kNumVerdicts);
  const auto i = static_cast<size_t>(v);
  return i < kNumVerdicts && kLoss[i];
}
// Normal outcomes: served-by-ipi, served-without-ipi.  Every other verdict
// gets a TargetActivity and a slice in the text report.
inline bool IsNormal(Verdict v) {
  return v == Verdict::kServedByIpi || v == Verdict::kServedWithoutIpi;
}

// A copy of one record that supports a verdict, with where it came from.
struct Evidence {
  StreamKind stream = StreamKind::kGuest;
  uint32_t ring = 0;
  ipt_record rec{};
  uint32_t pos = 0;  // position in the ring's accepted records
};

// The records of a snapshot, kept alive for as long as any request refers
// to them (shared by every EvidenceChain of one analysis), so a Request can
// outlive the Analysis it came from.
class RecordStore {
 public:
  explicit RecordStore(const Snapshot& snap);
  const ipt_record& At(StreamKind stream, uint32_t ring, uint32_t pos) const;

 private:
  std::vector<RecordView> views_[2];               // guest, hv; by ring index
  std::vector<std::shared_ptr<const void>> owners_;  // region bytes, ring copies
};

// Input iterator over a container that hands out values (copies) by index.
template <typename C, typename V>
class IndexIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = V;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = V;

  IndexIterator(const C* c, size_t i) : c_(c), i_(i) {}
  V operator*() const { return (*c_)[i_]; }
  IndexIterator& operator++() {
    ++i_;
    return *this;
  }
  IndexIterator operator++(int) {
    IndexIterator t = *this;
    ++i_;
    return t;
  }
  friend bool operator==(const IndexIterator& a, const IndexIterator& b) {
    return a.i_ == b.i_;
  }

 private:
  const C* c_;
  size_t i_;
};

// The evidence of one request, in chain order.  It stores a compact
// reference per record (position and ring: 6 bytes, up to 8 inline) and
// materialises an Evidence (with a copy of the record) on access, so
// following 10^5 requests does not copy 10^6 records.  Reads like a
// vector<Evidence>: size(), [i], front(), back(), iteration (by value).
class EvidenceChain {
 public:
  struct Ref {
    StreamKind stream = StreamKind::kGuest;
    uint32_t ring = 0;
    uint32_t pos = 0;
  };

  using const_iterator = IndexIterator<EvidenceChain, Evidence>;

  EvidenceChain() = default;
  explicit EvidenceChain(std::shared_ptr<const RecordStore> store)
      : store_(std::move(store)) {}
  EvidenceChain(const EvidenceChain& other);
  EvidenceChain& operator=(const EvidenceChain& other);
  EvidenceChain(EvidenceChain&&) noexcept = default;
  EvidenceChain& operator=(EvidenceChain&&) noexcept = default;
  // Drops the references, keeps the store.
  void clear() {
    size_ = 0;
    more_.reset();
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  Evidence operator[](size_t i) const;
  Evidence front() const { return (*this)[0]; }
  Evidence back() const { return (*this)[size_ - 1]; }
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, size_}; }

  Ref ref(size_t i) const {
    if (i < kInline && i < size_)
      return {(ring_[i] & kHvBit) ? StreamKind::kHv : StreamKind::kGuest,
              static_cast<uint32_t>(ring_[i] & ~kHvBit), pos_[i]};
    return RefSlow(i);
  }
  void push_back(const Ref& r) {
    if (size_ < kInline && r.ring < kHvBit) {
      pos_[size_] = r.pos;
      ring_[size_] = static_cast<uint16_t>(r.ring | (r.stream == StreamKind::kHv ? kHvBit : 0));
      ++size_;
    } else {
      PushSlow(r);
    }
  }
  // Appends another chain's references (same snapshot).
  void Append(const EvidenceChain& other);

 private:
  friend class RequestTable;
  void PushSlow(const Ref& r);
  Ref RefSlow(size_t i) const;

  static constexpr size_t kInline = 8;  // a full served-by-ipi chain
  // ring | stream (bit 15) for an inline reference; beyond kInline, both
  // packed into one 64-bit word in more_.
  static constexpr uint16_t kHvBit = 0x8000;

  std::shared_ptr<const RecordStore> store_;
  std::array<uint32_t, kInline> pos_{};
  std::array<uint16_t, kInline> ring_{};
  uint32_t size_ = 0;
  std::unique_ptr<std::vector<uint64_t>> more_;  // references beyond kInline
};

// (key, count) pairs, ascending key, for TargetActivity: a null pointer
// while empty -- almost every request has none -- else a vector.  Reads
// like (and compares equal to) a std::vector of pairs.
template <typename Key>
class CountList {
 public:
  using value_type = std::pair<Key, uint64_t>;

  CountList() = default;
  CountList(const CountList& o)
      : v_(o.v_ ? std::make_unique<std::vector<value_type>>(*o.v_) : nullptr) {}
  CountList& operator=(const CountList& o) {
    if (this != &o) v_ = o.v_ ? std::make_unique<std::vector<value_type>>(*o.v_) : nullptr;
    return *this;
  }
  CountList(CountList&&) noexcept = default;
  CountList& operator=(CountList&&) noexcept = default;
  CountList& operator=(std::vector<value_type> v) {
    v_ = v.empty() ? nullptr : std::make_unique<std::vector<value_type>>(std::move(v));
    return *this;
  }

  bool empty() const { return !v_ || v_->empty(); }
  size_t size() const { return v_ ? v_->size() : 0; }
  const value_type* begin() const { return v_ ? v_->data() : nullptr; }
  const value_type* end() const { return v_ ? v_->data() + v_->size() : nullptr; }
  void push_back(const value_type& e) {
    if (!v_) v_ = std::make_unique<std::vector<value_type>>();
    v_->push_back(e);
  }
  friend bool operator==(const CountList& a, const std::vector<value_type>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  friend bool operator==(const CountList& a, const CountList& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  std::unique_ptr<std::vector<value_type>> v_;
};

// What the target did while a request waited (non-normal verdicts only):
// the window is [queue tsc, served tsc) or, when never served, [queue tsc,
// end of the snapshot).
struct TargetActivity {
  bool computed = false;
  bool outstanding = false;  // never served: still outstanding at snapshot
  uint64_t window_start = 0;  // the queue tsc
  uint64_t wait_ticks = 0;    // served - queue, or snapshot end - queue
  CountList<uint8_t> acks_by_vector;  // H_ACK on vCPU(T)
  CountList<uint16_t> guest_events;   // by type on T
  uint64_t hv_records = 0;    // all records on vCPU(T)'s ring in the window
  uint64_t kicks = 0;         // H_KICK to vCPU(T) in the window
  uint64_t kicks_halted = 0;  // ... with IPT_KICK_F_HALTED

  uint64_t window_end() const { return window_start + wait_ticks; }
};

// One csd request (one G_QUEUE record) and what became of it.  Kept small
// (one per request of a snapshot: 10^5..10^7 of them): fields ordered to
// avoid padding, the rare parts (activity lists, long evidence) behind
// pointers.
struct Request {
  uint32_t source_cpu = 0;
  uint32_t target_cpu = 0;
  int32_t source_vcpu = -1;
  int32_t target_vcpu = -1;
  uint64_t queue_tsc = 0;
  uint64_t func = 0;
  uint64_t csd = 0;
  // Set when the request's function ran (for loss verdicts: served_late).
  std::optional<uint64_t> served_tsc;
  int64_t rode_on = -1;      // index of the request whose lost IPI it waited on
  Verdict verdict = Verdict::kInFlight;
  uint8_t vector = 0;  // IPI vector if the request owns an IPI, else 0
  uint8_t csd_type = 0;
  bool owns_ipi = false;     // a G_SEND of its own was found
  bool elided = false;       // G_ELIDE: target was polling
  bool served_late = false;  // loss verdict, yet a later flush served it
  std::string reason;        // one line: why this verdict
  EvidenceChain evidence;
  TargetActivity activity;   // non-normal verdicts only
};

// The reasons a normal verdict can have: RequestTable rows store an index,
// and the tracker sets them by index (a string only where one is needed).
enum class NormalReason : uint8_t {
  kFullChain,
  kFlushBeforeIpi,
  kElidedServedOnWakeup,
  kRodeOnPendingIpi,
  kIpiFatePastEnd,
  kLaterIpiUnobservedAck,
  kLaterIpiCoalesceUnobserved,
  kNone,  // the request's reason is its own string
};
inline constexpr std::string_view kNormalReasons[] = {
    "full chain",
    "served by a flush before its IPI arrived",
    "IPI elided (target polling); served on wakeup",
    "no IPI of its own (rode on a pending IPI); served by a flush",
    "served; its IPI's fate is past the end of the trace",
    "served by a handler entered after a later IPI of the vector; whether its own "
    "IPI arrived is not observable (the source cannot see the acknowledge)",
    "served by an acknowledge that followed a later IRR set of the vector; whether its "
    "own IPI coalesced with that one or vanished is not observable (the source cannot "
    "see coalescing)",
};

class Tracker;
struct TrackerInputs;

// The requests of an analysis, compact: one 32-byte row per request with
// the fields every report scans (verdict, CPUs, queue and service TSC) and
// where its G_QUEUE is; and, for the few requests with a verdict other than
// served-by-ipi / served-without-ipi, the full Request (reason, target
// activity, evidence) beside it.  A snapshot holds 10^5 to 10^7 requests.
//
// Reads like a vector<Request>: size(), [i] and iteration return a
// self-contained Request that stays valid after the table is gone.  For a
// normal request it is rebuilt by following the request again (the tracker
// is deterministic over the same snapshot and index; see Tracker::Replay),
// so [i] costs about a microsecond; reports that scan every request read
// row(i).  Not for use from several threads at once (the replay keeps
// search hints).
class RequestTable {
 public:
  static constexpr uint32_t kNoDetail = UINT32_MAX;
  enum RowFlag : uint8_t { kOwnsIpi = 1, kServed = 2 };

  struct Row {
    uint64_t queue_tsc = 0;
    uint64_t served_tsc = 0;  // when served()
    uint32_t queue = 0;       // index in the source ring's G_QUEUE list (RingIndex)
    uint32_t detail = kNoDetail;  // index of the full Request, if any
    uint16_t source_cpu = 0;
    uint16_t target_cpu = 0;
    uint16_t source_ring = 0;  // guest ring index of the source CPU
    Verdict verdict = Verdict::kInFlight;
    uint8_t flags = 0;

    bool owns_ipi() const { return flags & kOwnsIpi; }
    bool served() const { return flags & kServed; }
  };
  static_assert(sizeof(Row) == 32);

  using const_iterator = IndexIterator<RequestTable, Request>;

  RequestTable();
  RequestTable(RequestTable&&) noexcept;
  RequestTable& operator=(RequestTable&&) noexcept;
  ~RequestTable();

  size_t size() const { return rows_.size(); }
  bool empty() const { return rows_.empty(); }
  const Row& row(size_t i) const { return rows_[i]; }
  // Request i, self-contained.
  Request operator[](size_t i) const;
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, rows_.size()}; }
  // The full Request of a row with a detail (non-normal verdicts), else null.
  const Request* detail(size_t i) const {
    return rows_[i].detail == kNoDetail ? nullptr : &details_[rows_[i].detail];
  }
  // The csd function of request i (from its G_QUEUE record).
  uint64_t func(size_t i) const;
  // Whether the row alone describes a request just followed, with this
  // literal reason (the tracker follows it again to rebuild it): a normal
  // verdict with one of kNormalReasons, not yet tied to another request.
  static bool RowSuffices(const Request& r, NormalReason reason) {
    return reason != NormalReason::kNone && IsNormal(r.verdict) && r.rode_on == -1;
  }

 private:
  friend class Tracker;
  // Appends the request just followed: a row, and a detail unless it is
  // normal (its reason then one of kNormalReasons).
  void Add(const Request& r, uint16_t source_ring, uint32_t queue, NormalReason reason);
  // The full Request of the row just added.
  [[gnu::noinline]] void AddDetail(const Request& r, NormalReason reason);
  // Re-derives row i's fields from its detail (after the tracker changed it).
  void SyncRow(size_t i);
  const ipt_record& QueueRecord(const Row& row) const;

  std::shared_ptr<const TrackerInputs> inputs_;
  std::vector<Row> rows_;
  std::vector<Request> details_;
  std::vector<uint32_t> detail_rows_;  // details_[d] is the detail of row detail_rows_[d]
  mutable std::unique_ptr<Tracker> replay_;  // built on first use
};

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
// Lookups go through the RingIndex (flat per-ring position lists, searched
// by position for program order within a ring and by TSC across rings).
// Requests are followed in report order -- queue TSC, ties by source CPU:
// a k-way merge of the source rings' queue lists -- so the searches on each
// list move forward and gallop from the previous answer: a snapshot is
// analysed in O(n) plus O(n log n) only where a ring's TSC went backwards.
// Records are read from the snapshot as needed, each into a local copy;
// a request keeps references to its evidence, not copies.
// Everything a Tracker reads, shared: a RequestTable keeps it to follow a
// request again (Tracker::Replay).
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
// a few cache misses; the result is a compact RequestTable, and a normal
// request's evidence is rebuilt on demand by Replay.
class Tracker {
 public:
  // 'stats' may be null: a tracker of its own (a replay) counts privately.
  Tracker(std::shared_ptr<const TrackerInputs> inputs, Stats* stats);

  // Requests in queue-TSC order.
  RequestTable Run();

  // Per-stage latencies (TSC ticks) of the served-by-ipi requests of the
  // last Run(), in the order of StageLatency (send->IRR, IRR->ACK,
  // ACK->IRQ, IRQ->function): what StageLatencies(requests) derives from
  // the evidence, gathered while following.
  const StageSamples& latency_samples() const { return latency_samples_; }
  StageSamples TakeLatencySamples() { return std::move(latency_samples_); }

  // Follows request 'queue' (an index in the G_QUEUE list of guest ring
  // 'source_ring') again, as Run() did: the same Request for a normal
  // verdict (Run() resolves riders and lost-before-send afterwards, so only
  // normal requests are replayed).  Records no latency samples.  Null if
  // the records changed since (a region written under us).
  std::optional<Request> Replay(uint16_t source_ring, uint32_t queue);

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
  // Follow() again, noting the evidence, as a replay: no latency samples,
  // nothing counted in Stats (the first follow counted).
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
  Stats own_stats_;
  bool replaying_ = false;
  // Whether following a request notes its evidence: Run() follows every
  // request without, and again with, only those that keep a full Request
  // (a normal one is rebuilt on access, by Replay, which notes it).
  bool record_evidence_ = false;
  void Note(Request* req, const EvidenceChain::Ref& ref) const {
    if (record_evidence_) req->evidence.push_back(ref);
  }
  uint8_t vec_cf_ = 0;
  uint8_t vec_cfs_ = 0;
  std::shared_ptr<const RecordStore> store_;
  StageSamples latency_samples_;
  // The literal reason of the request being followed (kNone: req.reason).
  NormalReason reason_ = NormalReason::kNone;
};



}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_TRACKER_H_
