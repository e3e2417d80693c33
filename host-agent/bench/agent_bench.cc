// SPDX-License-Identifier: MIT
//
// Google Benchmark: throughput of the agent's hot paths, in records/s
// (items_per_second).  scripts/bench-agent.sh runs it and writes
// results/agent-bench.md.
#include <benchmark/benchmark.h>

#include "analyzer.h"
#include "region_reader.h"
#include "testing/scenario.h"

namespace {

using ipitrace::testing::Scenario;

// 8 CPUs, 'requests' full chains (8 records each, incl. EOI and exit).
Scenario& BigScenario(uint64_t requests) {
  static Scenario* sc = nullptr;
  static uint64_t built = 0;
  if (!sc || built != requests) {
    delete sc;
    sc = new Scenario(8, 1u << 16);  // >= 50k records per ring
    for (uint64_t i = 0; i < requests; ++i)
      sc->FullChain(static_cast<uint32_t>(i % 8), static_cast<uint32_t>((i + 1) % 8),
                    1000 + i * 1000, 0xffffffff81001000ULL, 0xffff888000000000ULL + (i % 4096) * 64);
    built = requests;
  }
  return *sc;
}

uint64_t Records(const ipitrace::Snapshot& s) {
  uint64_t n = 0;
  for (const auto* r : {&s.hv, &s.guest})
    for (const auto& ring : r->rings) n += ring.records.size();
  return n;
}

void BM_RegionRead(benchmark::State& state) {
  Scenario& sc = BigScenario(static_cast<uint64_t>(state.range(0)));
  const auto hv = sc.hv().Bytes();
  const auto guest = sc.guest().Bytes();
  uint64_t records = 0;
  for (auto _ : state) {
    ipitrace::Stats stats;
    ipitrace::RegionReader reader(&stats);
    auto h = reader.Read(hv, ipitrace::StreamKind::kHv, "hv");
    auto g = reader.Read(guest, ipitrace::StreamKind::kGuest, "guest");
    for (const auto* r : {&h.value(), &g.value()})
      for (const auto& ring : r->rings) records += ring.records.size();
  }
  state.SetItemsProcessed(static_cast<int64_t>(records));
}
BENCHMARK(BM_RegionRead)->Arg(100000)->Unit(benchmark::kMillisecond);

void BM_BatchAnalyze(benchmark::State& state) {
  Scenario& sc = BigScenario(static_cast<uint64_t>(state.range(0)));
  ipitrace::Stats stats;
  const ipitrace::Snapshot snap = sc.Load(&stats);
  const uint64_t n = Records(snap);
  uint64_t records = 0;
  for (auto _ : state) {
    ipitrace::Stats s;
    auto a = ipitrace::Analyzer(&s, {}).Analyze(snap);
    benchmark::DoNotOptimize(a.verdict_counts);
    records += n;
  }
  state.SetItemsProcessed(static_cast<int64_t>(records));
}
BENCHMARK(BM_BatchAnalyze)->Arg(100000)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
