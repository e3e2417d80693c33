// SPDX-License-Identifier: MIT
#include "kvm_bpf.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <limits>
#include <utility>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "bpf/kvm_bpf_event.h"
#include "kvm_source.skel.h"
#include "kvm_vm.h"

namespace ipitrace {
namespace {

using K = KvmEvent::Kind;
static_assert(static_cast<int>(K::kApicIpi) == IPT_KVM_BPF_APIC_IPI);
static_assert(static_cast<int>(K::kHypercall) == IPT_KVM_BPF_HYPERCALL);
static_assert(static_cast<int>(K::kAcceptIrq) == IPT_KVM_BPF_ACCEPT_IRQ);
static_assert(static_cast<int>(K::kApicvAcceptIrq) == IPT_KVM_BPF_APICV_ACCEPT_IRQ);
static_assert(static_cast<int>(K::kWakeup) == IPT_KVM_BPF_WAKEUP);
static_assert(static_cast<int>(K::kInjVirq) == IPT_KVM_BPF_INJ_VIRQ);
static_assert(static_cast<int>(K::kEoi) == IPT_KVM_BPF_EOI);
static_assert(static_cast<int>(K::kWriteTscOffset) == IPT_KVM_BPF_WRITE_TSC_OFFSET);
static_assert(static_cast<int>(K::kEntry) == IPT_KVM_BPF_ENTRY);
static_assert(static_cast<int>(K::kLost) == IPT_KVM_BPF_LOST);
static_assert(sizeof(ipt_kvm_bpf_event) == 56);

__extension__ typedef unsigned __int128 U128;

// libbpf's warnings, kept for the error message instead of printed.
std::string* g_libbpf_log = nullptr;
int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG || !g_libbpf_log) return 0;
  char buf[512];
  std::vsnprintf(buf, sizeof(buf), format, args);
  *g_libbpf_log += buf;
  return 0;
}

std::string LastLines(const std::string& log, size_t n) {
  size_t at = log.size();
  while (n-- > 0 && at > 0) {
    const size_t nl = log.rfind('\n', at - 1);
    at = nl == std::string::npos ? 0 : nl;
  }
  std::string s = log.substr(at);
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// CLOCK_MONOTONIC in ns: what bpf_ktime_get_ns() reads.
uint64_t MonotonicNs() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}

uint32_t RoundUpPow2(uint64_t v) {
  uint64_t p = static_cast<uint64_t>(::getpagesize());
  while (p < v && p < (1ull << 31)) p <<= 1;
  return static_cast<uint32_t>(p);
}

}  // namespace

void MonoTscMap::Add(uint64_t ns, uint64_t tsc) {
  if (!pairs_.empty() && (ns <= pairs_.back().ns || tsc <= pairs_.back().tsc)) return;
  Pair p{ns, tsc, 0};
  if (!pairs_.empty()) {
    const Pair& prev = pairs_.back();
    p.rate = static_cast<uint64_t>((static_cast<U128>(tsc - prev.tsc) << 32) / (ns - prev.ns));
  }
  pairs_.push_back(p);
  while (pairs_.size() > kKeep) pairs_.pop_front();
  last_ = 0;
}

void MonoTscMap::Sample() {
  uint64_t best_span = std::numeric_limits<uint64_t>::max(), ns = 0, tsc = 0;
  for (int i = 0; i < 3; ++i) {
    const uint64_t t0 = ReadTsc();
    const uint64_t now = MonotonicNs();
    const uint64_t t1 = ReadTsc();
    if (t1 - t0 < best_span) {
      best_span = t1 - t0;
      ns = now;
      tsc = t0 + (t1 - t0) / 2;
    }
  }
  Add(ns, tsc);
}

uint64_t MonoTscMap::Extrapolate(const Pair& p, uint64_t rate, uint64_t ns) const {
  // p.tsc + (ns - p.ns) x rate, either side of p.
  if (ns >= p.ns)
    return p.tsc + static_cast<uint64_t>((static_cast<U128>(ns - p.ns) * rate) >> 32);
  return p.tsc - static_cast<uint64_t>((static_cast<U128>(p.ns - ns) * rate) >> 32);
}

uint64_t MonoTscMap::Tsc(uint64_t ns) const {
  if (pairs_.empty()) return static_cast<uint64_t>((static_cast<U128>(ns) * nominal_rate_) >> 32);
  if (pairs_.size() == 1) return Extrapolate(pairs_.front(), nominal_rate_, ns);
  // The segment (pairs_[i-1], pairs_[i]] around ns, or the nearest one
  // outside the pairs.  Events come nearly in time order: try the previous
  // event's segment first.
  size_t i = last_;
  if (!(i >= 1 && i < pairs_.size() && pairs_[i - 1].ns < ns && ns <= pairs_[i].ns)) {
    auto it = std::lower_bound(pairs_.begin(), pairs_.end(), ns,
                               [](const Pair& p, uint64_t v) { return p.ns < v; });
    i = static_cast<size_t>(it - pairs_.begin());
    if (i == 0) i = 1;
    if (i == pairs_.size()) i = pairs_.size() - 1;
    last_ = i;
  }
  return Extrapolate(pairs_[i - 1], pairs_[i].rate, ns);
}

Result<std::unique_ptr<KvmBpf>> KvmBpf::Open(const Options& o) {
  std::string log;
  g_libbpf_log = &log;
  libbpf_set_print(LibbpfPrint);
  auto fail = [&](std::string what) {
    g_libbpf_log = nullptr;
    const std::string detail = LastLines(log, 3);
    return Status::Error(ErrorCode::kNoBpf,
                         detail.empty() ? what : fmt::format("{}: {}", what, detail));
  };
  std::unique_ptr<KvmBpf> t(new KvmBpf(o.tsc_khz));
  t->skel_ = kvm_source_bpf__open();
  if (!t->skel_) return fail(fmt::format("cannot open the BPF object: {}", std::strerror(errno)));
  t->skel_->rodata->target_tgid = static_cast<uint32_t>(o.pid);
  t->ring_bytes_ = RoundUpPow2(uint64_t{o.ring_kb} * 1024);
  if (bpf_map__set_max_entries(t->skel_->maps.events, t->ring_bytes_) != 0)
    return fail("cannot size the BPF ring buffer");
  if (kvm_source_bpf__load(t->skel_) != 0) {
    const int e = errno;
    return fail(fmt::format("cannot load the BPF programs ({}{})", std::strerror(e),
                            e == EPERM ? ": run as root" : ""));
  }
  for (const KvmEventSpec& spec : KvmEventSpecs()) {
    if (spec.start_only && !o.trace_entry) continue;
    bpf_program* prog = bpf_object__find_program_by_name(t->skel_->obj, spec.name);
    if (!prog) return fail(fmt::format("no BPF program for kvm:{}", spec.name));
    bpf_link* link = bpf_program__attach(prog);
    if (!link) {
      if (!spec.required) continue;
      return fail(fmt::format("cannot attach to kvm:{} ({}; is the kvm module loaded?)",
                              spec.name, std::strerror(errno)));
    }
    t->links_.push_back({spec.name, link});
  }
  t->rb_ = ring_buffer__new(bpf_map__fd(t->skel_->maps.events), &KvmBpf::OnRecord, t.get(),
                            nullptr);
  if (!t->rb_) return fail(fmt::format("cannot map the BPF ring buffer: {}", std::strerror(errno)));
  t->clock_.Sample();
  g_libbpf_log = nullptr;
  return t;
}

KvmBpf::~KvmBpf() {
  for (auto& [name, link] : links_) bpf_link__destroy(link);
  if (rb_) ring_buffer__free(rb_);
  if (skel_) kvm_source_bpf__destroy(skel_);
}

std::string KvmBpf::where() const {
  std::string names;
  for (const auto& [name, link] : links_) names += fmt::format("{}{}", names.empty() ? "" : ",", name);
  return fmt::format("BPF ring buffer {} KiB, programs on {}", ring_bytes_ / 1024, names);
}

void KvmBpf::StopEntryEvents() {
  for (auto it = links_.begin(); it != links_.end(); ++it) {
    if (std::strcmp(it->first, "kvm_entry") == 0) {
      bpf_link__destroy(it->second);
      links_.erase(it);
      return;
    }
  }
}

int KvmBpf::OnRecord(void* self, void* data, size_t size) {
  if (size < sizeof(ipt_kvm_bpf_event)) return 0;
  auto* t = static_cast<KvmBpf*>(self);
  const auto* p = static_cast<const uint8_t*>(data);
  t->raw_.insert(t->raw_.end(), p, p + sizeof(ipt_kvm_bpf_event));
  return 0;
}

void KvmBpf::Convert(const ipt_kvm_bpf_event& raw, const MonoTscMap& clock, KvmEvent* ev) {
  ev->kind = static_cast<K>(raw.kind);
  ev->tid = static_cast<int32_t>(raw.tid);
  ev->host_tsc = clock.Tsc(raw.ns);
  for (size_t i = 0; i < 5; ++i) ev->f[i] = raw.f[i];
  if (ev->kind == K::kLost) {
    ev->tid = -1;
    ev->f[1] = raw.f[1] ? clock.Tsc(raw.f[1]) : 0;
  }
}

Status KvmBpf::ReadRing() {
  raw_.clear();
  const int n = ring_buffer__consume(rb_);
  if (n < 0)
    return Status::Error(ErrorCode::kIo, fmt::format("reading the BPF ring buffer: {}",
                                                     std::strerror(-n)));
  // Sampled after the read: every record read lies before this pair.
  clock_.Sample();
  const size_t count = raw_.size() / sizeof(ipt_kvm_bpf_event);
  for (size_t i = 0; i < count; ++i) {
    ipt_kvm_bpf_event r;
    std::memcpy(&r, raw_.data() + i * sizeof(r), sizeof(r));
    if (r.kind <= IPT_KVM_BPF_LOST) Take(r);
  }
  return Status::Ok();
}

void KvmBpf::Take(const ipt_kvm_bpf_event& r) {
  KvmEvent ev;
  Convert(r, clock_, &ev);
  if (ev.kind == K::kLost) dropped_ += ev.f[0];
  fresh_.push_back(ev);
}

Status KvmBpf::Poll(uint64_t now_tsc, uint64_t margin_ticks, std::vector<KvmEvent>* out) {
  if (Status s = ReadRing(); !s.ok()) return s;
  order_.Add(&fresh_);
  order_.Release(now_tsc > margin_ticks ? now_tsc - margin_ticks : 0, out);
  return Status::Ok();
}

Status KvmBpf::Drain(std::vector<KvmEvent>* out) {
  for (auto& [name, link] : links_) bpf_link__destroy(link);
  links_.clear();
  Status s = ReadRing();
  // Drops after a CPU's last written event were never reported in the ring.
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu > 0) {
    std::vector<ipt_kvm_bpf_cpu> st(static_cast<size_t>(ncpu));
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.cpu_state), &zero, st.data()) == 0) {
      // As the programs would have written them, stamped now.
      const uint64_t now = MonotonicNs();
      for (const ipt_kvm_bpf_cpu& c : st) {
        if (c.dropped == 0) continue;
        ipt_kvm_bpf_event lost{};
        lost.ns = now;
        lost.kind = IPT_KVM_BPF_LOST;
        lost.f[0] = c.dropped;
        lost.f[1] = c.last_ns;
        Take(lost);
      }
    }
  }
  order_.Add(&fresh_);
  order_.Release(std::numeric_limits<uint64_t>::max(), out);
  return s;
}

}  // namespace ipitrace
