// SPDX-License-Identifier: MIT
#include "analyzer.h"

#include <algorithm>
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

// The k-th smallest sample (0-based): every big sample is larger than every
// small one.  Reorders the samples.
uint64_t KthSmallest(LatencySamples* s, size_t k) {
  if (k < s->small.size()) {
    std::nth_element(s->small.begin(), s->small.begin() + static_cast<ptrdiff_t>(k),
                     s->small.end());
    return s->small[k];
  }
  k -= s->small.size();
  std::nth_element(s->big.begin(), s->big.begin() + static_cast<ptrdiff_t>(k), s->big.end());
  return s->big[k];
}

}  // namespace

std::vector<StageLatency> SummariseLatency(StageSamples samples) {
  static constexpr const char* kNames[] = {"send->IRR", "IRR->ACK", "ACK->IRQ",
                                           "IRQ->function"};
  std::vector<StageLatency> out;
  for (size_t k = 0; k < 4; ++k) {
    LatencySamples& v = samples[k];
    if (v.empty()) continue;
    // Order statistics by selection, not a full sort: the values are those
    // of the sorted samples at the same indexes.
    StageLatency l;
    l.name = kNames[k];
    l.count = v.size();
    const size_t i99 = std::min(v.size() - 1, (v.size() * 99) / 100);
    const size_t i50 = (v.size() - 1) / 2;
    l.p99 = KthSmallest(&v, i99);
    if (i50 < i99 && i99 < v.small.size()) {
      // The selection left the i99 smallest in front: select within them.
      std::nth_element(v.small.begin(), v.small.begin() + static_cast<ptrdiff_t>(i50),
                       v.small.begin() + static_cast<ptrdiff_t>(i99));
      l.p50 = v.small[i50];
    } else {
      l.p50 = KthSmallest(&v, i50);
    }
    l.max = !v.big.empty() ? *std::max_element(v.big.begin(), v.big.end())
                           : *std::max_element(v.small.begin(), v.small.end());
    // Four interleaved counters: samples of a stage cluster in a few
    // buckets, and one counter would make every increment wait for the
    // previous one.
    uint64_t h[4][33] = {};
    const uint32_t* x = v.small.data();
    const size_t n = v.small.size();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      ++h[0][std::bit_width(x[i])];
      ++h[1][std::bit_width(x[i + 1])];
      ++h[2][std::bit_width(x[i + 2])];
      ++h[3][std::bit_width(x[i + 3])];
    }
    for (; i < n; ++i) ++h[0][std::bit_width(x[i])];
    for (size_t b = 0; b < 33; ++b) l.hist[b] = h[0][b] + h[1][b] + h[2][b] + h[3][b];
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
  const Snapshot& s = a.snapshot;

  const RingIndex& index = *index_ptr;
  CpuMap map(s.guest, s.hv, stats_);
  Tracker tracker(std::make_shared<const TrackerInputs>(s, map, std::move(index_ptr)), stats_);
  a.requests = tracker.Run();
  for (size_t i = 0; i < a.requests.size(); ++i)
    ++a.verdict_counts[static_cast<size_t>(a.requests.row(i).verdict)];

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
  if (a.tsc_khz == 0) {
    stats_->Increment(StatId::tsc_khz_unknown);
  } else {
    const double limit_ticks = options_.threshold_ms * static_cast<double>(a.tsc_khz);
    for (size_t i = 0; i < a.requests.size(); ++i) {
      const RequestTable::Row& r = a.requests.row(i);
      if (!r.served() || r.served_tsc < r.queue_tsc) continue;
      if (static_cast<double>(r.served_tsc - r.queue_tsc) > limit_ticks)
        a.slow.push_back(i);
    }
  }
  return a;
}

}  // namespace ipitrace
