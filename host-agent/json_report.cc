// SPDX-License-Identifier: MIT
#include "json_report.h"

#include <algorithm>

#include <fmt/format.h>

namespace ipitrace {
namespace {

using Json = nlohmann::ordered_json;

std::string Hex(uint64_t v) { return fmt::format("{:#x}", v); }

Json OrNull(int32_t v) { return v < 0 ? Json(nullptr) : Json(v); }

Json EvidenceJson(const Evidence& e) {
  const ipt_record& r = e.rec;
  Json j;
  j["stream"] = std::string(StreamName(e.stream));
  j["ring"] = e.ring;
  j["seq"] = r.seq;
  j["type"] = std::string(RecordTypeName(r.type));
  j["tsc"] = r.tsc;
  j["cpu"] = r.cpu;
  j["target"] = r.target;
  j["vector"] = r.vector;
  j["flags"] = r.flags;
  j["arg0"] = r.arg0;
  j["arg1"] = r.arg1;
  j["a"] = Json::array({Hex(r.a[0]), Hex(r.a[1]), Hex(r.a[2]), Hex(r.a[3])});
  return j;
}

Json RegionWindow(const Region& region) {
  Json j;
  j["start_tsc"] = region.header.start_tsc;
  j["stop_tsc"] = region.header.stop_tsc;
  j["ring_capacity"] = region.header.ring_capacity;
  Json rings = Json::array();
  for (const Ring& r : region.rings) {
    Json rj;
    rj["ring"] = r.index;
    rj["cpu"] = r.cpu;
    rj["head"] = r.head;
    rj["retained"] = r.records.size();
    rj["overwritten"] = r.overwritten;
    rj["torn"] = r.gaps.size();
    rj["dropped"] = r.dropped;
    rj["first_tsc"] = r.empty() ? Json(nullptr) : Json(r.first_tsc());
    rj["last_tsc"] = r.empty() ? Json(nullptr) : Json(r.last_tsc());
    rings.push_back(std::move(rj));
  }
  j["rings"] = std::move(rings);
  return j;
}

}  // namespace

Json JsonReport::RequestJson(const Request& r) const {
  Json j;
  j["verdict"] = std::string(VerdictName(r.verdict));
  j["source_cpu"] = r.source_cpu;
  j["target_cpu"] = r.target_cpu;
  j["source_vcpu"] = OrNull(r.source_vcpu);
  j["target_vcpu"] = OrNull(r.target_vcpu);
  j["vector"] = r.vector;
  j["queue_tsc"] = r.queue_tsc;
  j["func"] = Hex(r.func);
  const Symbol* sym = a_->snapshot.guest.FindSymbol(r.func);
  j["func_name"] = sym ? Json(sym->name) : Json(nullptr);
  // symbol+off/size when the guest published a symbol table, else hex.
  j["func_symbol"] = sym ? SymbolText(*sym) : Hex(r.func);
  j["csd"] = Hex(r.csd);
  j["csd_type"] = r.csd_type;
  j["owns_ipi"] = r.owns_ipi;
  j["served_late"] = r.served_late;
  j["served_tsc"] = r.served_tsc ? Json(*r.served_tsc) : Json(nullptr);
  j["rode_on_queue_tsc"] =
      r.rode_on >= 0
          ? Json(a_->requests.row(static_cast<size_t>(r.rode_on)).queue_tsc)
          : Json(nullptr);
  j["reason"] = r.reason;
  if (r.activity.computed) {
    const TargetActivity& t = r.activity;
    Json aj;
    aj["outstanding"] = t.outstanding;
    aj["wait_ticks"] = t.wait_ticks;
    aj["wait_ms"] = a_->tsc_khz ? Json(static_cast<double>(t.wait_ticks) /
                                       static_cast<double>(a_->tsc_khz))
                                : Json(nullptr);
    aj["window_start_tsc"] = t.window_start;
    aj["window_end_tsc"] = t.window_end();
    Json acks = Json::object();
    for (const auto& [v, n] : t.acks_by_vector) acks[Hex(v)] = n;
    aj["acks_by_vector"] = std::move(acks);
    Json ev = Json::object();
    for (const auto& [ty, n] : t.guest_events) ev[std::string(RecordTypeName(ty))] = n;
    aj["guest_events"] = std::move(ev);
    aj["hv_records"] = t.hv_records;
    aj["kicks"] = t.kicks;
    aj["kicks_halted"] = t.kicks_halted;
    aj["halted"] = t.kicks ? Json(t.kicks_halted > 0) : Json(nullptr);
    j["target_activity"] = std::move(aj);
  }
  Json ev = Json::array();
  for (const Evidence& e : r.evidence) ev.push_back(EvidenceJson(e));
  j["evidence"] = std::move(ev);
  return j;
}

nlohmann::ordered_json StatsTableJson(const Stats& stats) {
  nlohmann::ordered_json table = nlohmann::ordered_json::array();
  for (size_t i = 0; i < kNumStats; ++i) {
    const auto id = static_cast<StatId>(i);
    nlohmann::ordered_json sj;
    sj["name"] = std::string(Stats::Name(id));
    sj["severity"] = std::string(Stats::SeverityName(Stats::SeverityOf(id)));
    sj["count"] = stats.Get(id);
    sj["description"] = std::string(Stats::Description(id));
    table.push_back(std::move(sj));
  }
  return table;
}

Json JsonReport::Build() const {
  const Analysis& a = *a_;
  Json out;
  out["tool"] = "ipitrace";
  out["snapshot"] = a.snapshot.dir;
  out["requests"] = a.requests.size();
  if (const HvSource& src = a.snapshot.hv.source; src.guest_only)
    out["guest_only"] = {{"why", src.guest_only_why}, {"note", std::string(kGuestOnlyNote)}};
  {
    const GuestStages& g = a.snapshot.guest.stages;
    Json stages = Json::object();
    for (unsigned s = 0; s < GuestStages::kStages; ++s)
      stages[GuestStages::StageKey(s)] = std::string(g.Source(s));
    if (!g.Observes(IPT_G_STAGE_FUNC)) stages["note"] = std::string(kNoFuncNote);
    out["guest_stages"] = std::move(stages);
  }

  Json counts = Json::object();
  for (size_t v = 0; v < kNumVerdicts; ++v)
    counts[std::string(VerdictName(static_cast<Verdict>(v)))] = a.verdict_counts[v];
  out["verdict_counts"] = std::move(counts);
  AddRequestLists(&out);
  out["slow"] = SlowJson(a);
  out["latency"] = LatencyJson(a);
  out["per_cpu"] = PerCpuJson(a);
  out["stats"] = StatsTableJson(*a.stats);

  Json window;
  window["tsc_khz"] = a.tsc_khz;
  window["guest"] = RegionWindow(a.snapshot.guest);
  window["hv"] = RegionWindow(a.snapshot.hv);
  out["window"] = std::move(window);
  out["manifest"] = a.snapshot.manifest;
  return out;
}

void JsonReport::AddRequestLists(Json* out) const {
  const Analysis& a = *a_;
  Json losses = Json::array();
  Json unresolved = Json::array();
  Json without_ipi = Json::array();
  bool truncated = false;
  bool without_ipi_truncated = false;
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const Verdict v = a.requests.row(i).verdict;
    if (IsLoss(v)) {
      losses.push_back(RequestJson(a.requests[i]));
    } else if (v == Verdict::kServedWithoutIpi) {
      // Served, but not by its own IPI: the evidence says why (an elided
      // send, an idle flush, a later IPI over one whose delivery is unseen).
      // The analysis kept the first kMaxListed of them whole.
      if (without_ipi.size() < kMaxListed)
        without_ipi.push_back(RequestJson(*a.requests.detail(i)));
      else
        without_ipi_truncated = true;
    } else if (v == Verdict::kInconclusiveGap || v == Verdict::kInFlight ||
               v == Verdict::kQueuedBehindLoss) {
      if (unresolved.size() < kMaxListed)
        unresolved.push_back(RequestJson(a.requests[i]));
      else
        truncated = true;
    }
  }
  (*out)["losses"] = std::move(losses);
  (*out)["unresolved"] = std::move(unresolved);
  (*out)["unresolved_truncated"] = truncated;
  (*out)["served_without_ipi"] = std::move(without_ipi);
  (*out)["served_without_ipi_truncated"] = without_ipi_truncated;
}

Json JsonReport::SlowJson(const Analysis& a) {
  Json slow;
  slow["threshold_ms"] = a.options.threshold_ms;
  slow["count"] = a.slow.size();
  slow["listed"] = std::min(a.slow.size(), kMaxListed);  // the slowest
  Json slow_list = Json::array();
  for (size_t i = 0; i < a.slow.size() && i < kMaxListed; ++i) {
    const RequestTable::Row& r = a.requests.row(a.slow[i]);
    Json sj;
    sj["verdict"] = std::string(VerdictName(r.verdict));
    sj["source_cpu"] = r.source_cpu;
    sj["target_cpu"] = r.target_cpu;
    sj["queue_tsc"] = r.queue_tsc;
    sj["served_tsc"] = r.served_tsc;
    sj["latency_ms"] = static_cast<double>(r.served_tsc - r.queue_tsc) /
                       static_cast<double>(a.tsc_khz);
    sj["func"] = Hex(a.requests.func(a.slow[i]));
    slow_list.push_back(std::move(sj));
  }
  slow["requests"] = std::move(slow_list);
  return slow;
}

Json JsonReport::LatencyJson(const Analysis& a) {
  Json lat = Json::array();
  for (const StageLatency& l : a.latency) {
    Json lj;
    lj["stage"] = l.name;
    lj["count"] = l.count;
    lj["p50_ticks"] = l.p50;
    lj["p99_ticks"] = l.p99;
    lj["max_ticks"] = l.max;
    if (a.tsc_khz) {
      const double k = 1000.0 / static_cast<double>(a.tsc_khz);
      lj["p50_us"] = static_cast<double>(l.p50) * k;
      lj["p99_us"] = static_cast<double>(l.p99) * k;
      lj["max_us"] = static_cast<double>(l.max) * k;
    }
    // log2 histogram: counts[b] holds [2^(b-1), 2^b) ticks, up to the
    // highest non-empty bucket.
    size_t top = l.hist.size();
    while (top > 0 && l.hist[top - 1] == 0) --top;
    Json counts = Json::array();
    for (size_t b = 0; b < top; ++b) counts.push_back(l.hist[b]);
    lj["histogram"] = {{"unit", "ticks"}, {"bucket", "[2^(b-1), 2^b)"},
                       {"counts", std::move(counts)}};
    lat.push_back(std::move(lj));
  }
  return lat;
}

Json JsonReport::PerCpuJson(const Analysis& a) {
  Json per_cpu = Json::array();
  for (const CpuSummary& c : a.per_cpu) {
    Json cj;
    cj["cpu"] = c.cpu;
    cj["vcpu"] = OrNull(c.vcpu);
    cj["apic_id"] = c.apic_id == IPT_APIC_ID_NONE ? Json(nullptr) : Json(c.apic_id);
    cj["apic_matched"] = c.matched;
    cj["hv_ack_callfunc"] = c.hv_ack_callfunc;
    cj["hv_ack_callfunc_total"] = c.hv_ack_callfunc_total;
    cj["guest_irq_callfunc"] = c.guest_irq_callfunc;
    per_cpu.push_back(std::move(cj));
  }
  return per_cpu;
}

}  // namespace ipitrace
