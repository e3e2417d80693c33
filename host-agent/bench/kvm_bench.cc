// SPDX-License-Identifier: MIT
//
// Google Benchmark: the KVM source's user-space path per event, natively
// (the nested bed runs it under TCG, where each instruction costs more but
// the shares are alike): BPF records converted (CLOCK_MONOTONIC -> host
// TSC), put in order across CPUs, translated and appended to the region.
// A/B for changes to that path: run it before and after, side by side.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <vector>

#include "bpf/kvm_bpf_event.h"
#include "hv_region_writer.h"
#include "kvm_bpf.h"
#include "kvm_events.h"
#include "kvm_translator.h"

namespace {

using ipitrace::KvmEvent;

// One poll's worth of a 2-vCPU VM's IPI traffic, as the BPF ring holds it:
// per IPI an ICR write and an accept on the sender's thread, a wakeup, an
// injection and an EOI on the target's; the two CPUs' records interleaved,
// a few out of order.
std::vector<ipt_kvm_bpf_event> PollOfRecords(size_t ipis, uint64_t ns0) {
  std::vector<ipt_kvm_bpf_event> v;
  for (size_t i = 0; i < ipis; ++i) {
    const uint32_t s = i % 2, t = 1 - s;
    const uint64_t ns = ns0 + i * 5000;
    auto rec = [&](uint32_t kind, uint32_t tid, uint64_t at, uint64_t f0, uint64_t f3) {
      ipt_kvm_bpf_event e{};
      e.ns = at;
      e.kind = kind;
      e.tid = tid;
      e.f[0] = f0;
      e.f[3] = f3;
      v.push_back(e);
    };
    rec(IPT_KVM_BPF_APIC_IPI, 500 + s, ns, 0xfb, 0);
    rec(IPT_KVM_BPF_ACCEPT_IRQ, 500 + s, ns + 100, t, 0xfb);
    rec(IPT_KVM_BPF_WAKEUP, 500 + t, ns + 900, 1000, 0);  // the other CPU's, reserved late
    rec(IPT_KVM_BPF_INJ_VIRQ, 500 + t, ns + 800, 0xfb, 0);
    rec(IPT_KVM_BPF_EOI, 500 + t, ns + 2000, t, 0);
  }
  return v;
}

void BM_KvmUserPath(benchmark::State& state) {
  const size_t ipis = static_cast<size_t>(state.range(0));
  ipitrace::HvRegionWriter::Layout l;
  l.vcpus = 2;
  l.capacity = 1u << 17;
  l.tsc_khz = 2'600'000;
  l.apic_id = {0, 1};
  std::vector<std::byte> mem(ipitrace::HvRegionWriter::SizeFor(l));
  ipitrace::HvRegionWriter writer(mem, l, 0);
  ipitrace::KvmVmInfo vm;
  vm.vcpu_id = {0, 1};
  vm.thread_vcpu = {{500, 0}, {501, 1}};
  vm.tsc_offset = {1000, 1000};
  ipitrace::KvmTranslator tr(&writer, vm);
  ipitrace::MonoTscMap clock(2'600'000);
  ipitrace::KvmEventOrder order;
  std::vector<KvmEvent> fresh, out;
  uint64_t ns0 = 1'000'000'000, events = 0;
  clock.Add(ns0 - 1'000'000, (ns0 - 1'000'000) * 26 / 10);
  for (auto _ : state) {
    state.PauseTiming();
    const std::vector<ipt_kvm_bpf_event> recs = PollOfRecords(ipis, ns0);
    ns0 += ipis * 5000;
    clock.Add(ns0, ns0 * 26 / 10);
    state.ResumeTiming();
    for (const ipt_kvm_bpf_event& r : recs) {
      KvmEvent ev;
      ipitrace::KvmBpf::Convert(r, clock, &ev);
      fresh.push_back(ev);
    }
    order.Add(&fresh);
    out.clear();
    order.Release(clock.Tsc(ns0 - 2'000'000), &out);
    for (const KvmEvent& ev : out) tr.Push(ev);
    events += recs.size();
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
}
BENCHMARK(BM_KvmUserPath)->Arg(2000);

void BM_MonoTscMapConvert(benchmark::State& state) {
  ipitrace::MonoTscMap clock(2'600'000);
  for (uint64_t i = 0; i < 64; ++i) clock.Add(i * 100'000'000, i * 260'000'000 + (i % 3));
  uint64_t ns = 10, sum = 0;
  for (auto _ : state) {
    sum += clock.Tsc(ns);
    ns = ns + 997 < 6'300'000'000 ? ns + 997 : 10;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MonoTscMapConvert);

}  // namespace

BENCHMARK_MAIN();
