// SPDX-License-Identifier: MIT
#include "text_report.h"

#include <algorithm>
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

std::string Ms(uint64_t ticks, uint64_t khz) {
  if (!khz) return fmt::format("{} ticks", ticks);
  return fmt::format("{:.3f} ms", static_cast<double>(ticks) / static_cast<double>(khz));
}

void AppendActivity(std::string* out, const Request& r, uint64_t khz) {
  const TargetActivity& a = r.activity;
  if (!a.computed) return;
  auto w = std::back_inserter(*out);
  if (a.outstanding) {
    fmt::format_to(w, "      never served: outstanding at the snapshot for {}\n",
                   Ms(a.wait_ticks, khz));
  } else {
    fmt::format_to(w, "      served{} after {} (tsc {})\n",
                   r.served_late ? " late" : "", Ms(a.wait_ticks, khz),
                   a.window_end());
  }
  fmt::format_to(w, "      target CPU {} while it waited: acked", r.target_cpu);
  if (a.acks_by_vector.empty()) fmt::format_to(w, " nothing");
  for (const auto& [v, n] : a.acks_by_vector) fmt::format_to(w, " {:#04x}:{}", v, n);
  fmt::format_to(w, "; guest events");
  if (a.guest_events.empty()) fmt::format_to(w, " none");
  for (const auto& [t, n] : a.guest_events)
    fmt::format_to(w, " {}:{}", RecordTypeName(t), n);
  if (a.kicks)
    fmt::format_to(w, "; kicked {} times ({} while halted)", a.kicks, a.kicks_halted);
  else
    fmt::format_to(w, "; no H_KICK records (halt state unknown)");
  *out += "\n";
}

constexpr size_t kSliceBefore = 3;
constexpr size_t kSliceWait = 12;

// The records of one ring over [start, end] and a few just before.
void AppendSlice(std::string* out, StreamKind kind, const Ring* ring,
                 std::string_view what, uint64_t start, uint64_t end) {
  if (!ring || ring->empty()) return;
  auto it = std::partition_point(ring->records.begin(), ring->records.end(),
                                 [&](const ipt_record& r) { return r.tsc < start; });
  size_t first = static_cast<size_t>(it - ring->records.begin());
  size_t from = first > kSliceBefore ? first - kSliceBefore : 0;
  size_t in_window = 0;
  size_t i = from;
  fmt::format_to(std::back_inserter(*out), "      -- {} ({} before the queue, then the wait):\n",
                 what, first - from);
  for (; i < ring->records.size() && ring->records[i].tsc <= end; ++i) {
    if (i >= first && in_window++ >= kSliceWait) break;
    AppendEvidence(out, Evidence{kind, ring->index, ring->records[i],
                                 static_cast<uint32_t>(i)});
  }
  size_t more = 0;
  for (; i < ring->records.size() && ring->records[i].tsc <= end; ++i) ++more;
  if (more)
    fmt::format_to(std::back_inserter(*out), "      ... {} more records in the wait\n", more);
}

}  // namespace

std::string TextReport::FuncName(uint64_t func) const {
  const Symbol* s = a_->snapshot.guest.FindSymbol(func);
  if (!s) return fmt::format("{:#x}", func);
  return fmt::format("{:#x} ({})", func, SymbolText(*s));
}

std::string TextReport::Render() const {
  const Analysis& a = *a_;
  std::string out;
  auto w = std::back_inserter(out);
  fmt::format_to(w, "snapshot: {}\nrequests: {}\n", a.snapshot.dir, a.requests.size());
  if (const HvSource& src = a.snapshot.hv.source; src.guest_only)
    fmt::format_to(w, "{} ({})\n", kGuestOnlyNote, src.guest_only_why);
  if (const GuestStages& g = a.snapshot.guest.stages; !g.AllTracepoints()) {
    fmt::format_to(w, "guest stages: {}\n", g.Describe());
    if (!g.Observes(IPT_G_STAGE_FUNC)) fmt::format_to(w, "{}\n", kNoFuncNote);
  }
  out += "\nverdicts:\n";
  for (size_t v = 0; v < kNumVerdicts; ++v) {
    fmt::format_to(w, "  {:<26} {:>10}\n", VerdictName(static_cast<Verdict>(v)),
                   a.verdict_counts[v]);
  }

  AppendLosses(&out);
  AppendUnresolved(&out);
  AppendLatencyAndSlow(&out);
  AppendCpusAndQuality(&out);
  return out;
}

void TextReport::AppendLosses(std::string* out_p) const {
  const Analysis& a = *a_;
  auto w = std::back_inserter(*out_p);
  std::string& out = *out_p;
  size_t n = 0;
  for (size_t i = 0; i < a.requests.size(); ++i) {
    if (!IsLoss(a.requests.row(i).verdict)) continue;
    const Request r = a.requests[i];
    if (n++ == 0) out += "\nlosses:\n";
    fmt::format_to(w,
                   "  [{}] {}: CPU {} (vCPU {}) -> CPU {} (vCPU {}) vector "
                   "{:#04x} queue tsc {} func {} csd {:#x}\n",
                   n, VerdictName(r.verdict), r.source_cpu, Vcpu(r.source_vcpu),
                   r.target_cpu, Vcpu(r.target_vcpu), r.vector, r.queue_tsc,
                   FuncName(r.func), r.csd);
    fmt::format_to(w, "      why: {}\n", r.reason);
    fmt::format_to(w, "      its chain reached: {}{}\n", StageName(r.reached),
                   r.served_late ? " (then served late, by another flush)" : "");
    AppendActivity(&out, r, a.tsc_khz);
    out += "      -- evidence chain (sender's records for this request, then what served it):\n";
    for (const Evidence& e : r.evidence) AppendEvidence(&out, e);
    const uint64_t end = r.activity.computed ? r.activity.window_end() : r.queue_tsc;
    AppendSlice(&out, StreamKind::kGuest, a.snapshot.guest.RingForCpu(r.target_cpu),
                fmt::format("target CPU {} guest ring", r.target_cpu), r.queue_tsc, end);
    if (r.target_vcpu >= 0)
      AppendSlice(&out, StreamKind::kHv,
                  a.snapshot.hv.RingForCpu(static_cast<uint32_t>(r.target_vcpu)),
                  fmt::format("target vCPU {} hv ring", r.target_vcpu), r.queue_tsc, end);
  }
  if (n == 0) out += "\nlosses: none\n";

}

void TextReport::AppendUnresolved(std::string* out_p) const {
  const Analysis& a = *a_;
  auto w = std::back_inserter(*out_p);
  std::string& out = *out_p;
  size_t u = 0, u_total = 0;
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const Verdict v = a.requests.row(i).verdict;
    if (IsLoss(v) || IsNormal(v)) continue;
    ++u_total;
    if (u >= 10) continue;
    const Request r = a.requests[i];
    if (u++ == 0) out += "\nunresolved / not lost (first 10):\n";
    fmt::format_to(w, "  {}: CPU {} -> CPU {} queue tsc {} func {}\n      why: {}\n",
                   VerdictName(r.verdict), r.source_cpu, r.target_cpu, r.queue_tsc,
                   FuncName(r.func), r.reason);
    AppendActivity(&out, r, a.tsc_khz);
  }
  if (u_total > u) fmt::format_to(w, "  ... {} more\n", u_total - u);}

void TextReport::AppendLatencyAndSlow(std::string* out_p) const {
  const Analysis& a = *a_;
  auto w = std::back_inserter(*out_p);
  if (!a.latency.empty()) {
    fmt::format_to(w, "\nstage latency (served-by-ipi, {}):\n  {:<14} {:>8} {:>12} {:>12} {:>12}\n",
                   a.tsc_khz ? "us" : "ticks", "stage", "count", "p50", "p99", "max");
    for (const StageLatency& l : a.latency) {
      const double k = a.tsc_khz ? 1000.0 / static_cast<double>(a.tsc_khz) : 1.0;
      fmt::format_to(w, "  {:<14} {:>8} {:>12.1f} {:>12.1f} {:>12.1f}\n", l.name, l.count,
                     static_cast<double>(l.p50) * k, static_cast<double>(l.p99) * k,
                     static_cast<double>(l.max) * k);
    }
  }

  if (a.tsc_khz) {
    fmt::format_to(w, "\nslow requests (> {} ms): {}\n", a.options.threshold_ms,
                   a.slow.size());
    for (size_t i = 0; i < a.slow.size() && i < 20; ++i) {
      const RequestTable::Row& r = a.requests.row(a.slow[i]);
      fmt::format_to(w, "  CPU {} -> CPU {} queue tsc {} {:.3f} ms {} func {}\n",
                     r.source_cpu, r.target_cpu, r.queue_tsc,
                     static_cast<double>(r.served_tsc - r.queue_tsc) /
                         static_cast<double>(a.tsc_khz),
                     VerdictName(r.verdict), FuncName(a.requests.func(a.slow[i])));
    }
  }

}

void TextReport::AppendCpusAndQuality(std::string* out_p) const {
  const Analysis& a = *a_;
  auto w = std::back_inserter(*out_p);
  std::string& out = *out_p;
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
}

}  // namespace ipitrace
