// SPDX-License-Identifier: MIT
#include "analyzer.h"

#include <algorithm>
#include <utility>

namespace ipitrace {

std::vector<StageLatency> StageLatencies(const std::vector<Request>& requests) {
  // Stage boundaries by evidence record type.
  static constexpr uint16_t kPoints[] = {IPT_G_SEND, IPT_H_IRR, IPT_H_ACK,
                                         IPT_G_IRQ_ENTRY, IPT_G_FUNC_ENTRY};
  static constexpr const char* kNames[] = {"send->IRR", "IRR->ACK", "ACK->IRQ",
                                           "IRQ->function"};
  std::vector<uint64_t> samples[4];
  for (const Request& r : requests) {
    if (r.verdict != Verdict::kServedByIpi) continue;
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
  std::vector<StageLatency> out;
  for (size_t k = 0; k < 4; ++k) {
    auto& v = samples[k];
    if (v.empty()) continue;
    std::sort(v.begin(), v.end());
    StageLatency l;
    l.name = kNames[k];
    l.count = v.size();
    l.p50 = v[(v.size() - 1) / 2];
    l.p99 = v[std::min(v.size() - 1, (v.size() * 99) / 100)];
    l.max = v.back();
    out.push_back(std::move(l));
  }
  return out;
}

Result<Analysis> Analyzer::AnalyzeDir(const std::string& dir) {
  SnapshotLoader loader(stats_);
  auto snap = loader.Load(dir);
  if (!snap.ok()) return snap.status();
  return Analyze(std::move(snap).value());
}

Analysis Analyzer::Analyze(Snapshot snapshot) {
  Analysis a;
  a.snapshot = std::move(snapshot);
  a.stats = stats_;
  a.options = options_;
  const Snapshot& s = a.snapshot;

  CpuMap map(s.guest, s.hv, stats_);
  Tracker tracker(&s, &map, stats_);
  a.requests = tracker.Run();
  for (const Request& r : a.requests)
    ++a.verdict_counts[static_cast<size_t>(r.verdict)];

  const uint8_t vcf = s.guest.header.vec_call_function;
  const uint8_t vcfs = s.guest.header.vec_call_function_single;
  auto is_cf = [&](uint8_t v) { return v == vcf || v == vcfs; };
  for (const CpuMap::Entry& e : map.entries()) {
    CpuSummary c;
    c.cpu = e.cpu;
    c.vcpu = e.vcpu;
    c.apic_id = e.apic_id;
    c.matched = e.matched;
    if (e.vcpu >= 0) {
      if (const Ring* hv = s.hv.RingForCpu(static_cast<uint32_t>(e.vcpu))) {
        for (const ipt_record& r : hv->records) {
          if (r.type != IPT_H_ACK || !is_cf(r.vector)) continue;
          ++c.hv_ack_callfunc_total;
          if (r.tsc >= s.guest.header.start_tsc) ++c.hv_ack_callfunc;
        }
      }
    }
    if (const Ring* g = s.guest.RingForCpu(e.cpu)) {
      for (const ipt_record& r : g->records)
        if (r.type == IPT_G_IRQ_ENTRY && is_cf(r.vector) &&
            r.tsc >= s.guest.header.start_tsc)
          ++c.guest_irq_callfunc;
    }
    a.per_cpu.push_back(c);
  }

  a.latency = StageLatencies(a.requests);

  a.tsc_khz = s.guest.header.tsc_khz ? s.guest.header.tsc_khz : s.hv.header.tsc_khz;
  if (a.tsc_khz == 0) {
    stats_->Increment(StatId::tsc_khz_unknown);
  } else {
    const double limit_ticks = options_.threshold_ms * static_cast<double>(a.tsc_khz);
    for (size_t i = 0; i < a.requests.size(); ++i) {
      const Request& r = a.requests[i];
      if (!r.served_tsc || *r.served_tsc < r.queue_tsc) continue;
      if (static_cast<double>(*r.served_tsc - r.queue_tsc) > limit_ticks)
        a.slow.push_back(i);
    }
  }
  return a;
}

}  // namespace ipitrace
