// SPDX-License-Identifier: MIT
#include "timeline.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

#include <fmt/format.h>

#include "ring_merge.h"

namespace ipitrace {
namespace {

struct Writer {
  std::FILE* f;
  bool first = true;
  void Event(const std::string& body) {
    std::fputs(first ? "\n" : ",\n", f);
    first = false;
    std::fputs(body.c_str(), f);
  }
};

std::string Escape(std::string_view s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

// One timeline being written: the clock (microseconds from the earliest
// record), the track of each ring, and the three kinds of events.
class Timeline {
 public:
  Timeline(const Analysis& a, std::FILE* f) : a_(a), s_(a.snapshot), w_{f} {
    for (const Region* r : {&s_.hv, &s_.guest})
      for (const Ring& ring : r->rings)
        if (!ring.empty()) t0_ = std::min(t0_, ring.first_tsc());
    if (t0_ == std::numeric_limits<uint64_t>::max()) t0_ = 0;
    scale_ = a.tsc_khz ? 1000.0 / static_cast<double>(a.tsc_khz) : 1.0;
  }
  void Metadata();
  void Records();
  void Flows();

 private:
  double Us(uint64_t tsc) const {
    return tsc < t0_ ? 0.0 : static_cast<double>(tsc - t0_) * scale_;
  }
  // pid = vCPU + 1 (guest CPU c joins its vCPU; unjoined CPUs get 1000 + c);
  // tid 1 = guest, tid 2 = host.  The misc hv ring is pid 999.
  int GuestPid(uint32_t cpu) const {
    for (const CpuSummary& c : a_.per_cpu)
      if (c.cpu == cpu && c.vcpu >= 0) return c.vcpu + 1;
    return 1000 + static_cast<int>(cpu);
  }
  static int HvPid(uint32_t cpu) { return cpu == IPT_CPU_NONE ? 999 : static_cast<int>(cpu) + 1; }
  std::string NameOf(const ipt_record& r) const {
    switch (r.type) {
      case IPT_G_IRQ_ENTRY:
      case IPT_G_IRQ_EXIT:
        return fmt::format("irq {:#04x}", r.vector);
      case IPT_G_FUNC_ENTRY:
      case IPT_G_FUNC_EXIT: {
        const Symbol* sym = s_.guest.FindSymbol(r.a[0]);
        return sym ? Escape(SymbolText(*sym)) : fmt::format("csd func {:#x}", r.a[0]);
      }
      default:
        return std::string(RecordTypeName(r.type));
    }
  }

  const Analysis& a_;
  const Snapshot& s_;
  Writer w_;
  uint64_t t0_ = std::numeric_limits<uint64_t>::max();
  double scale_ = 1.0;
};

void Timeline::Metadata() {
  for (const Ring& ring : s_.guest.rings) {
    const int pid = GuestPid(ring.cpu);
    w_.Event(fmt::format(R"({{"ph":"M","name":"process_name","pid":{},"args":{{"name":"vCPU {}"}}}})",
                         pid, pid - 1));
    w_.Event(fmt::format(R"({{"ph":"M","name":"thread_name","pid":{},"tid":1,"args":{{"name":"guest CPU {}"}}}})",
                         pid, ring.cpu));
  }
  for (const Ring& ring : s_.hv.rings) {
    w_.Event(fmt::format(R"({{"ph":"M","name":"thread_name","pid":{},"tid":2,"args":{{"name":"host (QEMU) vCPU {}"}}}})",
                         HvPid(ring.cpu), ring.cpu));
  }
}

void Timeline::Records() {
  // Both streams in one time order (the one merge, ring_merge.h).
  for (const RecordRef& ref : MergedRecords(s_)) {
    const ipt_record& r = *ref.rec;
    const bool guest = ref.stream == StreamKind::kGuest;
    const uint32_t cpu = guest ? s_.guest.rings[ref.ring].cpu : s_.hv.rings[ref.ring].cpu;
    const int pid = guest ? GuestPid(cpu) : HvPid(cpu);
    const int tid = guest ? 1 : 2;
    const char* ph = "X";
    if (r.type == IPT_G_IRQ_ENTRY || r.type == IPT_G_FUNC_ENTRY) ph = "B";
    if (r.type == IPT_G_IRQ_EXIT || r.type == IPT_G_FUNC_EXIT) ph = "E";
    std::string ev = fmt::format(R"({{"ph":"{}","name":"{}","pid":{},"tid":{},"ts":{:.3f})", ph,
                                 NameOf(r), pid, tid, Us(r.tsc));
    if (ph[0] == 'X') ev += ",\"dur\":0.05";
    if (ph[0] != 'E') {
      ev += fmt::format(R"(,"args":{{"seq":{},"target":{},"vector":{},"flags":{},"a0":"{:#x}"}})",
                        r.seq, r.target, r.vector, r.flags, r.a[0]);
    }
    ev += "}";
    w_.Event(ev);
  }
}

void Timeline::Flows() {
  // One arrow per followed request that owns an IPI.
  uint64_t id = 0;
  for (size_t i = 0; i < a_.requests.size(); ++i) {
    if (!a_.requests.row(i).owns_ipi()) continue;
    const Request r = a_.requests[i];
    ++id;
    std::vector<Evidence> steps;  // copies: the chain materialises on access
    for (const Evidence& e : r.evidence) {
      switch (e.rec.type) {
        case IPT_G_SEND: case IPT_H_ICR: case IPT_H_IRR: case IPT_H_ACK:
        case IPT_G_IRQ_ENTRY: case IPT_G_FUNC_ENTRY:
          steps.push_back(e);
          break;
        default:
          break;
      }
    }
    if (steps.size() < 2) continue;
    for (size_t k = 0; k < steps.size(); ++k) {
      const Evidence& e = steps[k];
      const bool guest = e.stream == StreamKind::kGuest;
      const uint32_t cpu = guest ? s_.guest.rings[e.ring].cpu : s_.hv.rings[e.ring].cpu;
      const char* ph = k == 0 ? "s" : (k + 1 == steps.size() ? "f" : "t");
      w_.Event(fmt::format(
          R"({{"ph":"{}","id":{},"name":"IPI {}","cat":"ipi","pid":{},"tid":{},"ts":{:.3f}{}}})",
          ph, id, VerdictName(r.verdict), guest ? GuestPid(cpu) : HvPid(cpu),
          guest ? 1 : 2, Us(e.rec.tsc), ph[0] == 'f' ? ",\"bp\":\"e\"" : ""));
    }
  }
}

}  // namespace

Status WriteTimeline(const Analysis& a, const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "w"), &std::fclose);
  if (!f) {
    return Status::Error(ErrorCode::kIo, fmt::format("cannot write {}: {}", path,
                                                     std::strerror(errno)));
  }
  std::fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[", f.get());
  Timeline t(a, f.get());
  t.Metadata();
  t.Records();
  t.Flows();
  std::fputs("\n]}\n", f.get());
  if (std::ferror(f.get()) || std::fflush(f.get()) != 0) {
    return Status::Error(ErrorCode::kIo, fmt::format("cannot write {}: {}", path,
                                                     std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace ipitrace
