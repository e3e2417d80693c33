// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_REQUEST_TABLE_H_
#define IPITRACE_HOST_AGENT_REQUEST_TABLE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "evidence.h"
#include "records.h"
#include "verdict.h"

namespace ipitrace {

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
  // The resolutions still due after every request was followed once
  // (docs/streams.md: riders, "No send at all"), in the order they run.
  enum class Pending : uint8_t {
    kNone,
    kOwner,       // rode on a pending IPI, never served: find the owning
                  // IPI (Tracker::ResolveRiders)
    kBeforeSend,  // no IPI of its own, no lost owner: was a send due?
                  // (Tracker::ResolveBeforeSend)
  };
  Pending pending = Pending::kNone;
  // The last stage its own chain matched (docs/streams.md, "Following one
  // request"): kQueue; kSendDecision (a send or an elision of its own);
  // for an IPI of its own kIcr, kRouting, kAcknowledge, kGuestEntry; and
  // kService once served through that chain (or, without an IPI of its
  // own, served at all).  A loss of an IPI names the stage after it.
  Stage reached = Stage::kQueue;
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

class Tracker;
struct TrackerInputs;

// Which requests an analysis keeps whole (reason, evidence, target
// activity): what its reports read.  Every other request is its row.
struct DetailPolicy {
  // The first this many served-without-ipi requests, in queue order (the
  // JSON report lists them with their evidence: why no IPI of their own).
  size_t served_without_ipi = 0;
  // Every request (the timeline draws each IPI's chain; tests read any).
  bool all = false;
};

// The requests of an analysis, compact: one 32-byte row per request with
// the fields every report scans (verdict, CPUs, queue and service TSC, the
// literal reason of a normal verdict) and where its G_QUEUE is; and, for
// the requests the DetailPolicy keeps (always those with a verdict other
// than served-by-ipi / served-without-ipi), the full Request beside it.
// A snapshot holds 10^5 to 10^7 requests.  The tracker fills it once;
// reports read it and never follow a request again.
//
// [i] returns a self-contained Request: the kept one, else one built from
// the row and its G_QUEUE record (no evidence, no vector).
class RequestTable {
 public:
  static constexpr uint32_t kNoDetail = UINT32_MAX;
  enum RowFlag : uint8_t { kOwnsIpi = 1, kServed = 2 };
  // flags >> kReasonShift: the NormalReason of a row without a detail.
  static constexpr unsigned kReasonShift = 2;

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
    NormalReason reason() const { return static_cast<NormalReason>(flags >> kReasonShift); }
  };
  static_assert(sizeof(Row) == 32);
  static_assert(static_cast<unsigned>(NormalReason::kNone) < (1u << (8 - kReasonShift)));

  using const_iterator = IndexIterator<RequestTable, Request>;

  RequestTable();
  RequestTable(RequestTable&&) noexcept;
  RequestTable& operator=(RequestTable&&) noexcept;
  ~RequestTable();

  size_t size() const { return rows_.size(); }
  bool empty() const { return rows_.empty(); }
  const Row& row(size_t i) const { return rows_[i]; }
  // Request i, self-contained: the kept Request, or the row's fields.
  Request operator[](size_t i) const;
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, rows_.size()}; }
  // The full Request of a row with a detail, else null.
  const Request* detail(size_t i) const {
    return rows_[i].detail == kNoDetail ? nullptr : &details_[rows_[i].detail];
  }
  // The csd function of request i (from its G_QUEUE record).
  uint64_t func(size_t i) const;
  // Whether the row alone can describe a request just followed, with this
  // literal reason: a normal verdict with one of kNormalReasons, not yet
  // tied to another request.  (The DetailPolicy may keep it whole anyway.)
  static bool RowSuffices(const Request& r, NormalReason reason) {
    return reason != NormalReason::kNone && IsNormal(r.verdict) && r.rode_on == -1 &&
           r.pending == Request::Pending::kNone;
  }

 private:
  friend class Tracker;
  // Appends the request just followed: a row, and its detail if 'whole'
  // (else its verdict is normal and its reason one of kNormalReasons).
  void Add(const Request& r, uint16_t source_ring, uint32_t queue, NormalReason reason,
           bool whole);
  // The full Request of the row just added.
  [[gnu::noinline]] void AddDetail(const Request& r, NormalReason reason);
  // A row's flags: owns_ipi, served, and the literal reason.
  static uint8_t FlagsOf(const Request& r, NormalReason reason);
  // Re-derives row i's fields from its detail (after the tracker changed it).
  void SyncRow(size_t i);
  const ipt_record& QueueRecord(const Row& row) const;

  std::shared_ptr<const TrackerInputs> inputs_;  // the snapshot, index and CPU map
  std::vector<Row> rows_;
  std::vector<Request> details_;
  std::vector<uint32_t> detail_rows_;  // details_[d] is the detail of row detail_rows_[d]
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_REQUEST_TABLE_H_
