// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_RING_INDEX_H_
#define IPITRACE_HOST_AGENT_RING_INDEX_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "ipitrace_abi.h"
#include "region_reader.h"
#include "snapshot.h"

namespace ipitrace {

namespace internal {

// First i in [0, n) with !less(i) (n if none), for a predicate that is true
// then false over [0, n).  Gallops from *hint (forwards or backwards) and
// stores the answer there; a null hint gives the plain binary search of
// std::partition_point (the same probes, so the same answer even when the
// predicate is not partitioned).
template <typename Less>
inline size_t GallopLowerBound(size_t n, uint32_t* hint, Less less) {
  size_t lo = 0, hi = n;  // the answer is in [lo, hi]
  if (hint) {
    const size_t h = std::min<size_t>(*hint, n);
    // The usual answers: h itself, or the entry after it.
    if (h < n && less(h)) {
      if (h + 1 == n || !less(h + 1)) {
        *hint = static_cast<uint32_t>(h + 1);
        return h + 1;
      }
    } else if (h == 0 || less(h - 1)) {
      *hint = static_cast<uint32_t>(h);
      return h;
    }
    if (h < n && less(h)) {  // answer > h: probe h+1, h+2, h+4, ...
      size_t prev = h, step = 1;
      for (;;) {
        const size_t probe = h + step;
        if (probe >= n) {
          lo = prev + 1;
          hi = n;
          break;
        }
        if (!less(probe)) {
          lo = prev + 1;
          hi = probe;
          break;
        }
        prev = probe;
        step <<= 1;
      }
    } else {  // answer <= h: probe h-1, h-2, h-4, ...
      size_t prev = h, step = 1;  // prev == n or !less(prev)
      for (;;) {
        if (step > h) {
          lo = 0;
          hi = prev;
          break;
        }
        const size_t probe = h - step;
        if (less(probe)) {
          lo = probe + 1;
          hi = prev;
          break;
        }
        prev = probe;
        step <<= 1;
      }
    }
  }
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (less(mid))
      lo = mid + 1;
    else
      hi = mid;
  }
  if (hint) *hint = static_cast<uint32_t>(lo);
  return lo;
}

}  // namespace internal

// A list of record positions of one ring, ascending (program order), with
// the searches the Tracker needs.  A view into a RingIndex.
//
// Searches gallop from a hint -- where the previous search on the same list
// ended -- and store their answer back: the Tracker asks its questions in
// queue-TSC order, so consecutive searches on a list land close together
// and cost O(1) amortised instead of a binary search's O(log n) cache
// misses.  The answer never depends on the hint: on a ring whose TSC went
// backwards (Ring::tsc_sorted false) the TSC search is the plain
// std::partition_point over the whole list, exactly as without an index.
class PositionList {
 public:
  PositionList() = default;
  PositionList(const uint32_t* p, size_t n, uint32_t* hint) : p_(p), n_(n), hint_(hint) {}

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  uint32_t operator[](size_t i) const { return p_[i]; }
  const uint32_t* begin() const { return p_; }
  const uint32_t* end() const { return p_ + n_; }

  // Index of the first position > pos.  With 'ring', the record of the
  // entry after the answer is prefetched (see Prefetch).
  std::optional<size_t> FirstAfter(uint32_t pos, const Ring* ring = nullptr) const {
    const size_t i =
        internal::GallopLowerBound(n_, hint_, [&](size_t k) { return p_[k] <= pos; });
    if (i == n_) return std::nullopt;
    if (ring) Prefetch(*ring, i + 1);
    return i;
  }
  // Index of the first position whose record in 'ring' has tsc >= tsc.
  // The entry after the answer is prefetched (see Prefetch).
  std::optional<size_t> FirstAtOrAfterTsc(const Ring& ring, uint64_t tsc) const {
    const size_t i = FirstAtOrAfterTscIndex(ring, tsc);
    if (i == n_) return std::nullopt;
    return i;
  }
  // The same as an index, size() when there is none: for the tracker's hot
  // path, where returning a std::optional through memory stalled on store
  // forwarding.
  [[gnu::always_inline]] size_t FirstAtOrAfterTscIndex(const Ring& ring, uint64_t tsc) const {
    // Positions come from this ring's index, so they are in range (the
    // ring's records never change length).
    const RecordView& recs = ring.records;
    const ipt_record* base = recs.contiguous();
    if (hint_ && base && ring.tsc_sorted) {
      // The usual answers: the hint, or the entry after it.
      const size_t h = *hint_;
      if (h < n_) {
        if (base[p_[h]].tsc < tsc) {
          if (h + 1 < n_ && base[p_[h + 1]].tsc >= tsc) return Found(ring, h + 1);
        } else if (h == 0 || base[p_[h - 1]].tsc < tsc) {
          return Found(ring, h);
        }
      }
    }
    return FirstAtOrAfterTscSlow(ring, tsc);
  }
  // The next search on this list most likely lands on entry i (requests
  // come in TSC order): start loading its record, so that search finds it
  // in cache.
  void Prefetch(const Ring& ring, size_t i) const {
    if (i < n_ && p_[i] < ring.records.size()) __builtin_prefetch(&ring.records[p_[i]]);
  }

 private:
  size_t Found(const Ring& ring, size_t i) const {
    *hint_ = static_cast<uint32_t>(i);
    Prefetch(ring, i + 1);
    return i;
  }
  size_t FirstAtOrAfterTscSlow(const Ring& ring, uint64_t tsc) const;  // n_: none

  const uint32_t* p_ = nullptr;
  size_t n_ = 0;
  uint32_t* hint_ = nullptr;  // null: no hint
};

// Position lists keyed by a small key (a vector, a CPU id): one flat list
// per key value below kKeys.
class SmallKeyLists {
 public:
  static constexpr size_t kKeys = 256;
  // A list gets 'capacity' entries when it is first used (see
  // RingIndex::Reserve).
  void set_capacity(size_t capacity) { capacity_ = capacity; }
  void Add(uint32_t key, uint32_t pos) {
    if (key >= kKeys) return;
    std::vector<uint32_t>& l = lists_[key];
    if (l.capacity() == 0) l.reserve(capacity_);
    l.push_back(pos);
  }
  PositionList Get(uint32_t key) const {
    if (key >= kKeys) return {};
    return {lists_[key].data(), lists_[key].size(), &hints_[key]};
  }

 private:
  std::array<std::vector<uint32_t>, kKeys> lists_;
  mutable std::array<uint32_t, kKeys> hints_{};
  size_t capacity_ = 0;
};

// G_FUNC_ENTRY positions keyed by a 64-bit value (the csd, or the
// function): an open-addressing hash table from key to a dense list id, one
// flat list per id; and for each entry, the position of the first
// G_FUNC_EXIT with the same key after it (linked as the exits arrive: an
// exit ends every entry of its key still waiting).  Consecutive records
// mostly repeat a key, so the last key is cached.
class EntryLists {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // One key's entries: positions ascending, and each one's exit.
  struct List {
    PositionList entries;
    const uint32_t* exit_after = nullptr;  // kNone: no exit after it
  };

  void AddEntry(uint64_t key, uint32_t pos) {
    Lists& l = lists_[Id(key, true)];
    l.pos.push_back(pos);
    l.exit_after.push_back(kNone);
  }
  void AddExit(uint64_t key, uint32_t pos) {
    const uint32_t id = Id(key, false);
    if (id == kNone) return;  // no entry of this key yet
    Lists& l = lists_[id];
    for (size_t i = l.waiting; i < l.pos.size(); ++i) l.exit_after[i] = pos;
    l.waiting = l.pos.size();
  }
  List Get(uint64_t key) const {
    const uint32_t id = Find(key);
    if (id == kNone) return {};
    const Lists& l = lists_[id];
    return {{l.pos.data(), l.pos.size(), &l.hint}, l.exit_after.data()};
  }

 private:
  struct Lists {
    std::vector<uint32_t> pos;
    std::vector<uint32_t> exit_after;
    size_t waiting = 0;  // entries from here on have no exit yet
    mutable uint32_t hint = 0;
  };
  size_t Slot(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift_; }
  uint32_t Id(uint64_t key, bool insert) {
    if (key != last_key_ || lists_.empty()) {
      uint32_t id = Find(key);
      if (id == kNone) {
        if (!insert) return kNone;
        id = Insert(key);
      }
      last_id_ = id;
      last_key_ = key;
    }
    return last_id_;
  }
  uint32_t Insert(uint64_t key);  // a key not in the table
  uint32_t Find(uint64_t key) const {
    if (table_.empty()) return kNone;
    for (size_t s = Slot(key);; s = (s + 1) & (table_.size() - 1)) {
      const uint32_t v = table_[s];
      if (v == 0) return kNone;
      if (keys_[v - 1] == key) return v - 1;
    }
  }

  std::vector<uint64_t> keys_;  // by list id
  std::vector<Lists> lists_;
  std::vector<uint32_t> table_;  // slot -> list id + 1 (0: empty)
  unsigned shift_ = 64;
  uint64_t last_key_ = 0;
  uint32_t last_id_ = 0;
};

// H_IRR positions keyed by the ICR seq they name (a[0]).  In a sane ring
// the keys ascend in position order, so the lists are one array sorted by
// (seq, position) -- sorted once if they are not -- and a lookup is a
// galloping search.
class SeqLists {
 public:
  void Reserve(size_t n) {
    seqs_.reserve(n);
    pos_.reserve(n);
  }
  void Add(uint64_t seq, uint32_t pos) {
    seqs_.push_back(seq);
    pos_.push_back(pos);
  }
  void Build();
  PositionList Get(uint64_t seq) const {
    const size_t n = seqs_.size();
    const size_t lo = internal::GallopLowerBound(
        n, &hint_, [&](size_t k) { return seqs_[k] < seq; });
    size_t hi = lo;
    while (hi < n && seqs_[hi] == seq) ++hi;
    return {pos_.data() + lo, hi - lo, nullptr};
  }

 private:
  std::vector<uint64_t> seqs_;
  std::vector<uint32_t> pos_;
  mutable uint32_t hint_ = 0;
};

// RingIndex: the lookup tables the Tracker follows requests with, built in
// one pass over each ring of a snapshot (docs/streams.md "Following one
// request" says which record answers which stage):
//
//   guest ring: G_QUEUE positions, each with the next send decision to its
//     target (G_QUEUE, G_SEND of a call function, G_ELIDE); call-function
//     G_SENDs by target CPU;
//     G_IRQ_ENTRY by vector; G_FUNC_ENTRY by csd, each with its first
//     G_FUNC_EXIT; and, built on first use (only ttwu, csd-less and
//     irq_work requests need them), entries and exits by function and the
//     call-function points (call-function IRQ entries and function entries);
//   hv ring: H_ICR and H_ACK by vector; and, built on first use, all
//     H_ACKs and H_IRR by ICR seq;
//   all hv rings: non-coalesced H_IRR sets by target vCPU, (tsc, vector)
//     sorted; and, built on first use (only the target activity of a
//     non-normal verdict needs them), H_KICKs by target vCPU, (tsc, flags)
//     sorted;
//
// plus the per-CPU call-function counts of the report.  Everything is flat
// arrays of 32-bit positions (no node-based containers); a record's fields
// are read once, and every key is bounds-checked here, because an in-place
// record can change if its file is written under us.
//
// Built either from a loaded Snapshot, or ring by ring as a RingSink of the
// SnapshotLoader (each ring indexed right after it is validated, while it
// is in cache) and then Finish()ed with the loaded snapshot.  The search
// hints and the lazily built lists are mutable state: one RingIndex serves
// one thread.
class RingIndex : public RingSink {
 public:
  static constexpr uint32_t kNoPosition = UINT32_MAX;
  class Guest {
   public:
    std::vector<uint32_t> queues;
    // For queues[k]: the position of the next send decision to the same
    // target after it (G_QUEUE, call-function G_SEND or G_ELIDE), or
    // kNoPosition: linked in the indexing pass, so no search is needed.
    std::vector<uint32_t> next_decision;
    // For queues[k] whose next decision is a G_SEND: that send's index in
    // sends_by_target (of the queue's target).
    std::vector<uint32_t> decision_send;
    SmallKeyLists sends_by_target;
    SmallKeyLists irq_by_vector;
    EntryLists func_by_csd;
    // G_IRQ_ENTRY of a call-function vector at/after the guest start_tsc.
    uint64_t irq_callfunc = 0;

    // Built on first use from 'ring' (this index's ring).
    const EntryLists& FuncByFunc(const Ring& ring) const { return Lazy(ring).func_by_func; }
    PositionList CallfuncPoints(const Ring& ring) const {
      const LazyLists& l = Lazy(ring);
      return {l.callfunc_points.data(), l.callfunc_points.size(), &l.callfunc_hint};
    }

   private:
    friend class RingIndex;
    struct LazyLists {
      EntryLists func_by_func;
      std::vector<uint32_t> callfunc_points;
      mutable uint32_t callfunc_hint = 0;
    };
    const LazyLists& Lazy(const Ring& ring) const;
    uint8_t vcf_ = 0, vcfs_ = 0;  // the guest header's call-function vectors
    mutable std::unique_ptr<LazyLists> lazy_;
  };
  class Hv {
   public:
    SmallKeyLists icr_by_vector;
    SmallKeyLists ack_by_vector;
    // H_ACK of a call-function vector (guest header's vectors): all, and
    // at/after the guest start_tsc.
    uint64_t ack_callfunc_total = 0;
    uint64_t ack_callfunc = 0;

    // All H_ACKs (only a loss needs them), built on first use from 'ring'.
    PositionList Acks(const Ring& ring) const;
    // H_IRR by the ICR seq they name, built on first use from 'ring': the
    // tracker finds an ICR's H_IRRs in the records right after it, and
    // needs the index only when they are not there (a lost or far IPI).
    const SeqLists& IrrByIcrSeq(const Ring& ring) const;

   private:
    mutable std::unique_ptr<std::vector<uint32_t>> acks_;
    mutable uint32_t acks_hint_ = 0;
    mutable std::unique_ptr<SeqLists> irr_by_icr_seq_;
  };
  using TscEvents = std::vector<std::pair<uint64_t, uint8_t>>;

  RingIndex() = default;
  explicit RingIndex(const Snapshot& snap);

  bool ScanInPlace(const Region& region, uint32_t ring_index, uint32_t ring_cpu,
                   const InPlaceWindow& w, InPlaceCounts* counts) override;
  void OnRing(const Region& region, const Ring& ring, bool scanned) override;
  // After the last OnRing: the tables over all rings, and the counts that
  // need the guest header.  'snap' must be the snapshot the rings came from.
  void Finish(const Snapshot& snap);

  const Guest& guest(uint32_t ring) const { return guest_[ring]; }
  const Hv& hv(uint32_t ring) const { return hv_[ring]; }
  // Non-coalesced H_IRR (tsc, vector) and H_KICK (tsc, flags) to a vCPU,
  // over all hv rings, sorted; empty for an out-of-range vCPU.
  const TscEvents& irr_sets(uint32_t vcpu) const {
    return vcpu < IPT_MAX_CPUS ? irr_sets_[vcpu] : none_;
  }
  // The H_KICKs are built on first use (only requests with a non-normal
  // verdict need them, for their TargetActivity) from 'hv', the hv region
  // of the snapshot this index was built on: one pass over its records,
  // each read once into a local copy.
  const TscEvents& kicks(const Region& hv, uint32_t vcpu) const {
    if (!kicks_built_) BuildKicks(hv);
    return vcpu < IPT_MAX_CPUS ? kicks_[vcpu] : none_;
  }
  // Index of the first irr_sets(vcpu) entry with tsc > tsc (galloping).
  size_t FirstIrrSetAfter(uint32_t vcpu, uint64_t tsc) const {
    const TscEvents& v = irr_sets(vcpu);
    uint32_t* hint = vcpu < IPT_MAX_CPUS ? &irr_hint_[vcpu] : nullptr;
    return internal::GallopLowerBound(v.size(), hint,
                                      [&](size_t k) { return v[k].first <= tsc; });
  }
  // Largest last tsc over all rings.
  uint64_t snapshot_end_tsc() const { return snapshot_end_tsc_; }
  // Largest last tsc over the hypervisor's rings only: the end of the trace
  // on the clock the guest cannot write (a hostile guest stamping its
  // records far in the future moves snapshot_end_tsc, not this).
  uint64_t hv_end_tsc() const { return hv_end_tsc_; }

 private:
  class GuestIndexer;
  class HvIndexer;
  // Fresh tables for a ring about to be indexed (drops a partial attempt).
  void StartRing(const Region& region, uint32_t ring_index);

  std::vector<Guest> guest_;  // by guest ring index
  std::vector<Hv> hv_;        // by hv ring index
  std::array<TscEvents, IPT_MAX_CPUS> irr_sets_;
  void BuildKicks(const Region& hv) const;
  mutable std::array<TscEvents, IPT_MAX_CPUS> kicks_;
  mutable bool kicks_built_ = false;
  mutable std::array<uint32_t, IPT_MAX_CPUS> irr_hint_{};
  // Per target: the hv rings that added to irr_sets_ and where their
  // entries start (sorted runs, merged by Finish).
  void MarkHvRuns(uint32_t ring_index);
  std::array<std::vector<uint32_t>, IPT_MAX_CPUS> irr_runs_;
  std::array<std::vector<size_t>, IPT_MAX_CPUS> irr_run_start_;

  TscEvents none_;
  uint64_t snapshot_end_tsc_ = 0;
  uint64_t hv_end_tsc_ = 0;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_RING_INDEX_H_
