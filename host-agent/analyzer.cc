// SPDX-License-Identifier: MIT
#include "analyzer.h"

#include <utility>

namespace ipitrace {

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
