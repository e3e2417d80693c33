// SPDX-License-Identifier: MIT
#include "analyzer.h"

#include <algorithm>
#include <array>
#include <bit>
#include <utility>

#include "ring_index.h"

namespace ipitrace {

std::vector<StageLatency> StageLatencies(const RequestTable& requests) {
  // Stage boundaries by evidence record type.
  static constexpr uint16_t kPoints[] = {IPT_G_SEND, IPT_H_IRR, IPT_H_ACK,
                                         IPT_G_IRQ_ENTRY, IPT_G_FUNC_ENTRY};
  StageSamples samples;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests.row(i).verdict != Verdict::kServedByIpi) continue;
    const Request r = requests[i];
    uint64_t tsc[5];
    bool have[5] = {};
    for (const Evidence& e : r.evidence)
      for (size_t k = 0; k < 5; ++k)
        if (!have[k] && e.rec.type == kPoints[k]) {
          tsc[k] = e.rec.tsc;
          have[k] = true;
        }
    for (size_t k = 0; k < 4; ++k)
      if (have[k] && have[k + 1] && tsc[k + 1] >= tsc[k])
        samples[k].push_back(tsc[k + 1] - tsc[k]);
  }
  return SummariseLatency(std::move(samples));
}

namespace {

// Order statistics of the 32-bit samples by a log-linear histogram: value v
// < 256 has bucket v; a larger v, of bit width w, has bucket 256 + (w - 9) *
// 128 + its 7 bits below the top bit.  Buckets are in value order, so the
// k-th smallest sample lies in the bucket where the running count passes k,
// and only that bucket's samples (a small share, unless they all sit within
// 1/128 of each other) need a selection: one pass over the samples for the
// histogram and one per percentile whose bucket holds more than one value,
// instead of a selection over all of them.
constexpr size_t kLinearBuckets = 256;
constexpr size_t kSubBuckets = 128;
constexpr size_t kBuckets = kLinearBuckets + (32 - 8) * kSubBuckets;

[[gnu::always_inline]] inline size_t Bucket(uint32_t v) {
  if (v < kLinearBuckets) return v;
  const unsigned w = static_cast<unsigned>(std::bit_width(v));  // 9..32
  return kLinearBuckets + (w - 9) * kSubBuckets + ((v >> (w - 8)) & (kSubBuckets - 1));
}

// The smallest value of bucket b.
uint32_t BucketLow(size_t b) {
  if (b < kLinearBuckets) return static_cast<uint32_t>(b);
  const size_t w = 9 + (b - kLinearBuckets) / kSubBuckets;
  const uint32_t top = static_cast<uint32_t>(kSubBuckets + (b - kLinearBuckets) % kSubBuckets);
  return top << (w - 8);
}

// The largest value of bucket b.
uint32_t BucketHigh(size_t b) {
  return b + 1 < kBuckets ? BucketLow(b + 1) - 1 : UINT32_MAX;
}

}  // namespace

std::vector<StageLatency> SummariseLatency(StageSamples samples) {
  static constexpr const char* kNames[] = {"send->IRR", "IRR->ACK", "ACK->IRQ",
                                           "IRQ->function"};
  std::vector<StageLatency> out;
  std::vector<uint64_t> counts(kBuckets);
  for (size_t k = 0; k < 4; ++k) {
    LatencySamples& v = samples[k];
    if (v.empty()) continue;
    StageLatency l;
    l.name = kNames[k];
    l.count = v.size();
    const uint32_t* x = v.small.data();
    const size_t n = v.small.size();
    std::fill(counts.begin(), counts.end(), 0);
    uint32_t small_max = 0;
    for (size_t i = 0; i < n; ++i) {
      ++counts[Bucket(x[i])];
      small_max = std::max(small_max, x[i]);
    }
    // Ranks of the sorted samples (small ones first: every big sample is
    // larger than every small one).
    const size_t ranks[2] = {(v.size() - 1) / 2, std::min(v.size() - 1, (v.size() * 99) / 100)};
    uint64_t* results[2] = {&l.p50, &l.p99};
    // Each rank among the small samples falls in one bucket: a bucket of
    // one value is the answer; a narrow one (< 256 values: samples below
    // 2^16) is counted value by value; a wider one is gathered and
    // selected in.
    struct Pick {
      bool active = false;         // needs the pass below
      uint32_t low = 0, span = 0;  // bucket: [low, low + span]
      size_t rank = 0;             // within the bucket
      std::array<uint64_t, 256> by_value{};  // span < 256
      std::vector<uint32_t> members;         // span >= 256
    } picks[2];
    for (int r = 0; r < 2; ++r) {
      if (ranks[r] >= n) {
        // Among the big ones (rare: waits of seconds): select there.
        const size_t kb = ranks[r] - n;
        std::nth_element(v.big.begin(), v.big.begin() + static_cast<ptrdiff_t>(kb), v.big.end());
        *results[r] = v.big[kb];
        continue;
      }
      size_t below = 0, b = 0;
      while (below + counts[b] <= ranks[r]) below += counts[b++];
      Pick& p = picks[r];
      p.low = BucketLow(b);
      p.span = BucketHigh(b) - p.low;
      p.rank = ranks[r] - below;
      if (p.span == 0) {
        *results[r] = p.low;
        continue;
      }
      p.active = true;
      if (p.span >= p.by_value.size()) p.members.reserve(counts[b]);
    }
    for (int r = 0; r < 2; ++r) {
      Pick& p = picks[r];
      if (!p.active) continue;
      if (p.span < p.by_value.size()) {
        for (size_t i = 0; i < n; ++i)
          if (x[i] - p.low <= p.span) ++p.by_value[x[i] - p.low];
        size_t below = 0, j = 0;
        while (below + p.by_value[j] <= p.rank) below += p.by_value[j++];
        *results[r] = p.low + j;
      } else {
        for (size_t i = 0; i < n; ++i)
          if (x[i] - p.low <= p.span) p.members.push_back(x[i]);
        IPT_CHECK(p.rank < p.members.size());
        std::nth_element(p.members.begin(), p.members.begin() + static_cast<ptrdiff_t>(p.rank),
                         p.members.end());
        *results[r] = p.members[p.rank];
      }
    }
    l.max = !v.big.empty() ? *std::max_element(v.big.begin(), v.big.end()) : small_max;
    for (size_t b = 0; b < kBuckets; ++b)
      l.hist[std::bit_width(BucketLow(b))] += counts[b];
    for (const uint64_t y : v.big) ++l.hist[std::bit_width(y)];
    out.push_back(std::move(l));
  }
  return out;
}

Result<Analysis> Analyzer::AnalyzeDir(const std::string& dir) {
  // The rings are indexed as they are read (one pass over the records).
  auto index = std::make_shared<RingIndex>();
  SnapshotLoader loader(stats_, index.get());
  auto snap = loader.Load(dir);
  if (!snap.ok()) return snap.status();
  index->Finish(snap.value());
  Analysis a = Analyze(std::move(snap).value(), std::move(index));
  // A region file that shrank while mapped read as zeros somewhere: the
  // analysis describes bytes that were never in the file.
  if (std::string t = a.snapshot.Truncated(); !t.empty())
    return Status::Error(ErrorCode::kIo, std::move(t));
  return a;
}

Analysis Analyzer::Analyze(Snapshot snapshot) {
  auto index = std::make_shared<const RingIndex>(snapshot);
  return Analyze(std::move(snapshot), std::move(index));
}

Analysis Analyzer::Analyze(Snapshot snapshot, std::shared_ptr<const RingIndex> index_ptr) {
  Analysis a;
  a.snapshot = std::move(snapshot);
  a.stats = stats_;
  a.options = options_;
  MarkGuestOnly(&a.snapshot.hv);
  const Snapshot& s = a.snapshot;

  const RingIndex& index = *index_ptr;
  CpuMap map(s.guest, s.hv, stats_);
  // The settle window on the hypervisor's clock: QEMU writes its TSC rate;
  // the guest's (untrusted) only where the hypervisor gave none.
  const uint64_t hv_khz = s.hv.header.tsc_khz ? s.hv.header.tsc_khz : s.guest.header.tsc_khz;
  const uint64_t settle_ticks =
      options_.settle_ms > 0 ? static_cast<uint64_t>(options_.settle_ms * static_cast<double>(hv_khz))
                             : 0;
  Tracker tracker(std::make_shared<const TrackerInputs>(s, map, std::move(index_ptr), hv_khz,
                                                        settle_ticks),
                  stats_);
  a.requests = tracker.Run({.served_without_ipi = kMaxListed, .all = options_.whole_requests});

  // Call-function H_ACKs on the vCPU's ring and G_IRQ_ENTRYs on the CPU's
  // guest ring (counted by the index).
  for (const CpuMap::Entry& e : map.entries()) {
    CpuSummary c;
    c.cpu = e.cpu;
    c.vcpu = e.vcpu;
    c.apic_id = e.apic_id;
    c.matched = e.matched;
    if (e.vcpu >= 0) {
      if (const Ring* hv = s.hv.RingForCpu(static_cast<uint32_t>(e.vcpu))) {
        c.hv_ack_callfunc_total = index.hv(hv->index).ack_callfunc_total;
        c.hv_ack_callfunc = index.hv(hv->index).ack_callfunc;
      }
    }
    if (const Ring* g = s.guest.RingForCpu(e.cpu))
      c.guest_irq_callfunc = index.guest(g->index).irq_callfunc;
    a.per_cpu.push_back(c);
  }

  a.latency = SummariseLatency(tracker.TakeLatencySamples());

  a.tsc_khz = s.guest.header.tsc_khz ? s.guest.header.tsc_khz : s.hv.header.tsc_khz;
  if (a.tsc_khz == 0) stats_->Increment(StatId::tsc_khz_unknown);
  // One pass over the rows (memory-bound: 32 bytes per request) for the
  // verdict counts and the requests served after the threshold.
  const double limit_ticks = options_.threshold_ms * static_cast<double>(a.tsc_khz);
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const RequestTable::Row& r = a.requests.row(i);
    ++a.verdict_counts[static_cast<size_t>(r.verdict)];
    if (a.tsc_khz == 0 || !r.served() || r.served_tsc < r.queue_tsc) continue;
    if (static_cast<double>(r.served_tsc - r.queue_tsc) > limit_ticks) a.slow.push_back(i);
  }
  // Slowest first: a report that lists only the first few lists the worst.
  auto latency = [&a](size_t i) {
    const RequestTable::Row& r = a.requests.row(i);
    return r.served_tsc - r.queue_tsc;
  };
  std::stable_sort(a.slow.begin(), a.slow.end(),
                   [&](size_t x, size_t y) { return latency(x) > latency(y); });
  return a;
}

}  // namespace ipitrace
