// SPDX-License-Identifier: MIT
#include "ring_index.h"

#include <algorithm>

#include "result.h"

namespace ipitrace {
namespace {

// Sorts v, given as consecutive runs starting at the offsets in 'runs' (one
// per hv ring, each in TSC order unless that ring's TSC went backwards):
// rounds of pairwise merges into a second buffer, O(n log runs); std::sort
// if a run is out of order.  Equal elements are identical, so any order of
// them is the same result.
void SortRuns(RingIndex::TscEvents* v, const std::vector<size_t>& runs) {
  if (v->size() < 2) return;
  std::vector<size_t> bounds;  // non-empty runs: [bounds[k], bounds[k+1])
  for (size_t k = 0; k < runs.size(); ++k) {
    const size_t b = runs[k], e = k + 1 < runs.size() ? runs[k + 1] : v->size();
    if (b == e) continue;
    if (!std::is_sorted(v->begin() + static_cast<ptrdiff_t>(b),
                        v->begin() + static_cast<ptrdiff_t>(e))) {
      std::sort(v->begin(), v->end());
      return;
    }
    bounds.push_back(b);
  }
  if (bounds.size() < 2) return;
  bounds.push_back(v->size());
  RingIndex::TscEvents other(v->size());
  RingIndex::TscEvents* in = v;
  RingIndex::TscEvents* out = &other;
  while (bounds.size() > 2) {
    std::vector<size_t> next;
    for (size_t k = 0; k + 1 < bounds.size(); k += 2) {
      next.push_back(bounds[k]);
      const auto b = in->begin() + static_cast<ptrdiff_t>(bounds[k]);
      const auto m = in->begin() + static_cast<ptrdiff_t>(bounds[k + 1]);
      const auto e = k + 2 < bounds.size() ? in->begin() + static_cast<ptrdiff_t>(bounds[k + 2]) : m;
      std::merge(b, m, m, e, out->begin() + static_cast<ptrdiff_t>(bounds[k]));
    }
    next.push_back(v->size());
    bounds = std::move(next);
    std::swap(in, out);
  }
  if (in != v) *v = std::move(*in);
}

// Lists are reserved at their upper bound -- the ring's record count,
// capped -- when created: the pages of a large allocation are only
// committed where written, so this costs no memory and saves the copies
// (and the touched pages) of growing by doubling.
size_t ListCapacity(size_t ring_records) {
  return std::min<size_t>(ring_records, size_t{1} << 20);
}

}  // namespace

size_t PositionList::FirstAtOrAfterTscSlow(const Ring& ring, uint64_t tsc) const {
  const RecordView& recs = ring.records;
  uint32_t* hint = ring.tsc_sorted ? hint_ : nullptr;
  const size_t i = internal::GallopLowerBound(
      n_, hint, [&](size_t k) { return recs[p_[k]].tsc < tsc; });
  if (i < n_) Prefetch(ring, i + 1);
  return i;
}

uint32_t EntryLists::Insert(uint64_t key) {
  const auto id = static_cast<uint32_t>(keys_.size());
  keys_.push_back(key);
  lists_.emplace_back();
  if (keys_.size() * 2 > table_.size()) {  // keep the load <= 1/2
    const size_t size = std::max<size_t>(16, table_.size() * 2);
    table_.assign(size, 0);
    shift_ = 64 - static_cast<unsigned>(__builtin_ctzll(size));
    for (uint32_t i = 0; i < keys_.size(); ++i) {
      size_t s = Slot(keys_[i]);
      while (table_[s] != 0) s = (s + 1) & (size - 1);
      table_[s] = i + 1;
    }
  } else {
    size_t s = Slot(key);
    while (table_[s] != 0) s = (s + 1) & (table_.size() - 1);
    table_[s] = id + 1;
  }
  return id;
}

void SeqLists::Build() {
  bool sorted = true;
  for (size_t k = 1; k < seqs_.size() && sorted; ++k) sorted = seqs_[k - 1] <= seqs_[k];
  if (sorted) return;  // positions ascend within equal seqs already
  std::vector<std::pair<uint64_t, uint32_t>> v(seqs_.size());
  for (size_t k = 0; k < v.size(); ++k) v[k] = {seqs_[k], pos_[k]};
  std::sort(v.begin(), v.end());
  for (size_t k = 0; k < v.size(); ++k) {
    seqs_[k] = v[k].first;
    pos_[k] = v[k].second;
  }
}

// Indexes the records of one guest ring, in order (see IndexGuest rules
// in the class comment); every key is bounds-checked by the lists.
class RingIndex::GuestIndexer {
 public:
  GuestIndexer(RingIndex* index, const Region& region, uint32_t ring, size_t records)
      : g_(index->guest_[ring]), start_tsc_(region.header.start_tsc) {
    pending_.fill(kNoPosition);
    const size_t cap = ListCapacity(records);
    g_.queues.reserve(cap);
    g_.next_decision.reserve(cap);
    g_.decision_send.reserve(cap);
    g_.sends_by_target.set_capacity(cap);
    g_.irq_by_vector.set_capacity(cap);
  }
  // Inlined into the scan loop (it runs once per record).
  [[gnu::always_inline]] void operator()(uint32_t pos, const ipt_record& rec, uint16_t type,
                                         uint16_t target, uint64_t tsc) {
    switch (type) {
      case IPT_G_QUEUE:
        Decide(target, pos, kNoPosition);
        if (target < IPT_MAX_CPUS) pending_[target] = static_cast<uint32_t>(g_.queues.size());
        g_.queues.push_back(pos);
        g_.next_decision.push_back(kNoPosition);
        g_.decision_send.push_back(kNoPosition);
        break;
      case IPT_G_SEND:
        if (rec.a[0] != 0) {  // call-function send (not reschedule)
          Decide(target, pos, static_cast<uint32_t>(g_.sends_by_target.Get(target).size()));
          g_.sends_by_target.Add(target, pos);
        }
        break;
      case IPT_G_ELIDE:
        Decide(target, pos, kNoPosition);
        break;
      case IPT_G_IRQ_ENTRY: {
        const uint8_t vector = rec.vector;
        g_.irq_by_vector.Add(vector, pos);
        if ((vector == g_.vcf_ || vector == g_.vcfs_) && tsc >= start_tsc_) ++g_.irq_callfunc;
        break;
      }
      case IPT_G_FUNC_ENTRY:
        g_.func_by_csd.AddEntry(rec.a[1], pos);
        break;
      case IPT_G_FUNC_EXIT:
        g_.func_by_csd.AddExit(rec.a[1], pos);
        break;
      default:
        break;
    }
  }

 private:
  // A send decision for 'target' at pos (a send: its index in the send
  // list): the next decision of the queue waiting for one.
  void Decide(uint16_t target, uint32_t pos, uint32_t send_index) {
    if (target >= IPT_MAX_CPUS || pending_[target] == kNoPosition) return;
    g_.next_decision[pending_[target]] = pos;
    g_.decision_send[pending_[target]] = send_index;
    pending_[target] = kNoPosition;
  }

  Guest& g_;
  uint64_t start_tsc_;
  // The queue (index into g_.queues) awaiting its next decision, per target.
  std::array<uint32_t, IPT_MAX_CPUS> pending_;
};

class RingIndex::HvIndexer {
 public:
  HvIndexer(RingIndex* index, uint32_t ring, size_t records)
      : index_(index), h_(index->hv_[ring]) {
    const size_t cap = ListCapacity(records);
    h_.icr_by_vector.set_capacity(cap);
    h_.ack_by_vector.set_capacity(cap);
  }
  [[gnu::always_inline]] void operator()(uint32_t pos, const ipt_record& rec, uint16_t type,
                                         uint16_t target, uint64_t tsc) {
    switch (type) {
      case IPT_H_ICR:
        h_.icr_by_vector.Add(rec.vector, pos);
        break;
      case IPT_H_IRR: {
        if (!(rec.flags & IPT_IRR_F_COALESCED) && target < IPT_MAX_CPUS)
          index_->irr_sets_[target].push_back({tsc, rec.vector});
        break;
      }
      case IPT_H_ACK:
        h_.ack_by_vector.Add(rec.vector, pos);
        break;
      default:
        break;
    }
  }

 private:
  RingIndex* index_;
  Hv& h_;
};

RingIndex::RingIndex(const Snapshot& snap) {
  for (const Region* region : {&snap.hv, &snap.guest})
    for (const Ring& r : region->rings) OnRing(*region, r, false);
  Finish(snap);
}

void RingIndex::StartRing(const Region& region, uint32_t ring_index) {
  if (region.kind == StreamKind::kGuest) {
    if (guest_.size() <= ring_index) guest_.resize(ring_index + 1);
    Guest& g = guest_[ring_index];
    g = Guest();
    g.vcf_ = region.header.vec_call_function;
    g.vcfs_ = region.header.vec_call_function_single;
    return;
  }
  if (hv_.size() <= ring_index) hv_.resize(ring_index + 1);
  hv_[ring_index] = Hv();
  for (uint32_t t = 0; t < IPT_MAX_CPUS; ++t) {
    // Entries of an earlier attempt at this ring come after the last run
    // start: drop them.  Then a new run per ring for every target.
    if (!irr_runs_[t].empty() && irr_runs_[t].back() == ring_index) {
      irr_sets_[t].resize(irr_run_start_[t].back());
      irr_runs_[t].pop_back();
      irr_run_start_[t].pop_back();
    }
  }
}

bool RingIndex::ScanInPlace(const Region& region, uint32_t ring_index, uint32_t ring_cpu,
                            const InPlaceWindow& w, InPlaceCounts* counts) {
  StartRing(region, ring_index);
  const size_t records = w.n0 + w.n1;
  if (region.kind == StreamKind::kGuest) {
    GuestIndexer indexer(this, region, ring_index, records);
    return internal::ScanInPlace(w, ring_cpu, counts, indexer);
  }
  MarkHvRuns(ring_index);
  HvIndexer indexer(this, ring_index, records);
  return internal::ScanInPlace(w, ring_cpu, counts, indexer);
}

void RingIndex::OnRing(const Region& region, const Ring& r, bool scanned) {
  if (!r.empty()) {
    snapshot_end_tsc_ = std::max(snapshot_end_tsc_, r.last_tsc());
    if (region.kind == StreamKind::kHv) hv_end_tsc_ = std::max(hv_end_tsc_, r.last_tsc());
  }
  if (!scanned) {
    // Index the (copied or empty) ring from its records.
    StartRing(region, r.index);
    if (region.kind == StreamKind::kHv) MarkHvRuns(r.index);
    uint32_t pos = 0;
    auto each = [&](auto&& indexer) {
      for (int run = 0; run < 2; ++run)
        for (const ipt_record& rec : r.records.run(run))
          indexer(pos++, rec, rec.type, rec.target, rec.tsc);
    };
    if (region.kind == StreamKind::kGuest)
      each(GuestIndexer(this, region, r.index, r.records.size()));
    else
      each(HvIndexer(this, r.index, r.records.size()));
  }
}

void RingIndex::MarkHvRuns(uint32_t ring_index) {
  for (uint32_t t = 0; t < IPT_MAX_CPUS; ++t) {
    irr_runs_[t].push_back(ring_index);
    irr_run_start_[t].push_back(irr_sets_[t].size());
  }
}

void RingIndex::Finish(const Snapshot& snap) {
  guest_.resize(std::max(guest_.size(), snap.guest.rings.size()));
  hv_.resize(std::max(hv_.size(), snap.hv.rings.size()));
  for (uint32_t t = 0; t < IPT_MAX_CPUS; ++t) {
    SortRuns(&irr_sets_[t], irr_run_start_[t]);
    irr_runs_[t] = {};
    irr_run_start_[t] = {};
  }
  // Call-function H_ACKs per hv ring, by the guest header's vectors: all,
  // and at/after the guest start_tsc (a suffix of the list when the ring
  // is in TSC order).
  const ipt_region_header& gh = snap.guest.header;
  const uint8_t vcf = gh.vec_call_function, vcfs = gh.vec_call_function_single;
  for (const Ring& r : snap.hv.rings) {
    Hv& h = hv_[r.index];
    for (int k = 0; k < 2; ++k) {
      if (k == 1 && vcf == vcfs) break;
      const PositionList acks = h.ack_by_vector.Get(k == 0 ? vcf : vcfs);
      h.ack_callfunc_total += acks.size();
      auto late = [&](uint32_t pos) {
        return pos < r.records.size() && r.records[pos].tsc >= gh.start_tsc;
      };
      if (r.tsc_sorted) {
        const auto* first = std::partition_point(acks.begin(), acks.end(),
                                                 [&](uint32_t pos) { return !late(pos); });
        h.ack_callfunc += static_cast<uint64_t>(acks.end() - first);
      } else {
        h.ack_callfunc += static_cast<uint64_t>(std::count_if(acks.begin(), acks.end(), late));
      }
    }
  }
}

void RingIndex::BuildKicks(const Region& hv) const {
  kicks_built_ = true;
  for (const Ring& r : hv.rings) {
    for (int run = 0; run < 2; ++run) {
      for (const ipt_record& slot : r.records.run(run)) {
        const ipt_record rec = slot;  // one read of the fields
        if (rec.type == IPT_H_KICK && rec.target < IPT_MAX_CPUS)
          kicks_[rec.target].push_back({rec.tsc, rec.flags});
      }
    }
  }
  // Equal elements are identical: any sort gives the one order.
  for (TscEvents& v : kicks_) std::sort(v.begin(), v.end());
}

const RingIndex::Guest::LazyLists& RingIndex::Guest::Lazy(const Ring& ring) const {
  if (lazy_) return *lazy_;
  lazy_ = std::make_unique<LazyLists>();
  LazyLists& l = *lazy_;
  uint32_t pos = 0;
  for (int run = 0; run < 2; ++run) {
    for (const ipt_record& slot : ring.records.run(run)) {
      const uint16_t type = slot.type;
      if (type == IPT_G_IRQ_ENTRY) {
        const uint8_t vector = slot.vector;
        if (vector == vcf_ || vector == vcfs_) l.callfunc_points.push_back(pos);
      } else if (type == IPT_G_FUNC_ENTRY) {
        l.func_by_func.AddEntry(slot.a[0], pos);
        l.callfunc_points.push_back(pos);
      } else if (type == IPT_G_FUNC_EXIT) {
        l.func_by_func.AddExit(slot.a[0], pos);
      }
      ++pos;
    }
  }
  return l;
}

const SeqLists& RingIndex::Hv::IrrByIcrSeq(const Ring& ring) const {
  if (!irr_by_icr_seq_) {
    irr_by_icr_seq_ = std::make_unique<SeqLists>();
    uint32_t pos = 0;
    for (int run = 0; run < 2; ++run)
      for (const ipt_record& slot : ring.records.run(run)) {
        const uint16_t type = slot.type;
        const uint64_t icr_seq = slot.a[0];
        if (type == IPT_H_IRR && icr_seq != IPT_SEQ_INVALID) irr_by_icr_seq_->Add(icr_seq, pos);
        ++pos;
      }
    irr_by_icr_seq_->Build();
  }
  return *irr_by_icr_seq_;
}

PositionList RingIndex::Hv::Acks(const Ring& ring) const {
  if (!acks_) {
    acks_ = std::make_unique<std::vector<uint32_t>>();
    uint32_t pos = 0;
    for (int run = 0; run < 2; ++run)
      for (const ipt_record& rec : ring.records.run(run)) {
        if (rec.type == IPT_H_ACK) acks_->push_back(pos);
        ++pos;
      }
  }
  return {acks_->data(), acks_->size(), &acks_hint_};
}

}  // namespace ipitrace
