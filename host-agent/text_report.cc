// SPDX-License-Identifier: MIT
#include "text_report.h"

#include <iterator>

#include <fmt/format.h>

namespace ipitrace {
namespace {

std::string Vcpu(int32_t v) { return v < 0 ? "?" : std::to_string(v); }

void AppendEvidence(std::string* out, const Evidence& e) {
  const ipt_record& r = e.rec;
  fmt::format_to(std::back_inserter(*out),
                 "      {:<5} ring {:>3} seq {:>8} {:<12} tsc {:>16} cpu {:>3} "
                 "target {:>5} vec {:#04x} flags {:#04x} arg0 {:#x} arg1 {:#x} "
                 "a [{:#x} {:#x} {:#x} {:#x}]\n",
                 StreamName(e.stream), e.ring, r.seq, RecordTypeName(r.type),
                 r.tsc, r.cpu, r.target, r.vector, r.flags, r.arg0, r.arg1,
                 r.a[0], r.a[1], r.a[2], r.a[3]);
}

void AppendWindow(std::string* out, const Region& region) {
  for (const Ring& r : region.rings) {
    fmt::format_to(std::back_inserter(*out),
                   "  {:<5} ring {:>3} cpu {:>5} head {:>9} retained {:>8} "
                   "overwritten {:>8} torn {:>4} dropped {:>4} tsc [{}, {}]\n",
                   StreamName(region.kind), r.index, r.cpu, r.head,
                   r.records.size(), r.overwritten, r.gaps.size(), r.dropped,
                   r.first_tsc(), r.last_tsc());
  }
}

}  // namespace

std::string TextReport::FuncName(uint64_t func) const {
  const Symbol* s = a_->snapshot.guest.FindSymbol(func);
  if (!s) return fmt::format("{:#x}", func);
  return fmt::format("{:#x} ({}+{:#x}/{:#x})", func, s->name, s->offset, s->size);
}

std::string TextReport::Render() const {
  const Analysis& a = *a_;
  std::string out;
  auto w = std::back_inserter(out);
  fmt::format_to(w, "snapshot: {}\nrequests: {}\n\nverdicts:\n", a.snapshot.dir,
                 a.requests.size());
  for (size_t v = 0; v < kNumVerdicts; ++v) {
    fmt::format_to(w, "  {:<26} {:>10}\n", VerdictName(static_cast<Verdict>(v)),
                   a.verdict_counts[v]);
  }

  size_t n = 0;
  for (const Request& r : a.requests) {
    if (!IsLoss(r.verdict)) continue;
    if (n++ == 0) out += "\nlosses:\n";
    fmt::format_to(w,
                   "  [{}] {}: CPU {} (vCPU {}) -> CPU {} (vCPU {}) vector "
                   "{:#04x} queue tsc {} func {} csd {:#x}\n",
                   n, VerdictName(r.verdict), r.source_cpu, Vcpu(r.source_vcpu),
                   r.target_cpu, Vcpu(r.target_vcpu), r.vector, r.queue_tsc,
                   FuncName(r.func), r.csd);
    fmt::format_to(w, "      why: {}\n", r.reason);
    if (r.served_late) {
      fmt::format_to(w, "      served late at tsc {} (+{} ticks)\n",
                     *r.served_tsc, *r.served_tsc - r.queue_tsc);
    }
    for (const Evidence& e : r.evidence) AppendEvidence(&out, e);
  }
  if (n == 0) out += "\nlosses: none\n";

  if (a.tsc_khz) {
    fmt::format_to(w, "\nslow requests (> {} ms): {}\n", a.options.threshold_ms,
                   a.slow.size());
    for (size_t i = 0; i < a.slow.size() && i < 20; ++i) {
      const Request& r = a.requests[a.slow[i]];
      fmt::format_to(w, "  CPU {} -> CPU {} queue tsc {} {:.3f} ms {} func {}\n",
                     r.source_cpu, r.target_cpu, r.queue_tsc,
                     static_cast<double>(*r.served_tsc - r.queue_tsc) /
                         static_cast<double>(a.tsc_khz),
                     VerdictName(r.verdict), FuncName(r.func));
    }
  }

  out += "\nper CPU:\n  cpu  vcpu  apic_id  hv_ack_callfunc  (total)  "
         "guest_irq_callfunc\n";
  for (const CpuSummary& c : a.per_cpu) {
    fmt::format_to(w, "  {:>3}  {:>4}  {:>7}  {:>15}  {:>7}  {:>18}{}\n", c.cpu,
                   Vcpu(c.vcpu),
                   c.apic_id == IPT_APIC_ID_NONE ? std::string("-")
                                                 : std::to_string(c.apic_id),
                   c.hv_ack_callfunc, c.hv_ack_callfunc_total,
                   c.guest_irq_callfunc, c.matched ? "" : "  (identity map)");
  }

  out += "\nring windows:\n";
  AppendWindow(&out, a.snapshot.guest);
  AppendWindow(&out, a.snapshot.hv);

  out += "\ndata quality (non-zero):\n";
  bool any = false;
  for (size_t i = 0; i < kNumStats; ++i) {
    const auto id = static_cast<StatId>(i);
    if (a.stats->Get(id) == 0) continue;
    any = true;
    fmt::format_to(w, "  {:<26} {:<9} {:>10}  {}\n", Stats::Name(id),
                   Stats::SeverityName(Stats::SeverityOf(id)), a.stats->Get(id),
                   Stats::Description(id));
  }
  if (!any) out += "  (all zero)\n";
  return out;
}

}  // namespace ipitrace
