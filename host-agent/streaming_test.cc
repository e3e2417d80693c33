// SPDX-License-Identifier: MIT
#include "streaming.h"

#include <filesystem>

#include <catch2/catch_test_macros.hpp>

#include "analyzer.h"
#include "cpu_map.h"
#include "merger.h"
#include "testing/scenario.h"

namespace ipitrace {
namespace {

uint64_t C(const StreamTracker& t, Verdict v) { return t.counts()[static_cast<size_t>(v)]; }

TEST_CASE("streaming - synthetic stream: losses found, memory bounded by open requests") {
  SyntheticSource src(100'500, 4, /*loss_every=*/1000);
  StreamOptions o;
  o.window_ticks = 100'000;  // 100 requests of stream time
  StreamTracker t(o);
  StreamRecord r;
  while (src.Next(&r)) t.Push(r);
  t.Finish();
  CHECK(t.records() == src.records());
  CHECK(C(t, Verdict::kLostInRouting) == 100);
  CHECK(C(t, Verdict::kServedByIpi) == 100'400);
  CHECK(C(t, Verdict::kInFlight) == 0);
  CHECK(t.peak_open() <= 4);        // a lost one or two plus the current
  CHECK(t.slab_capacity() <= 4);
}

// Feeds a snapshot's merged timeline to the streaming tracker.
StreamTracker Stream(const Snapshot& snap, const CpuMap& map, uint64_t window) {
  StreamOptions o;
  o.vec_call_function = snap.guest.header.vec_call_function;
  o.vec_call_function_single = snap.guest.header.vec_call_function_single;
  o.window_ticks = window;
  for (uint32_t c = 0; c < IPT_MAX_CPUS; ++c) o.vcpu_of_cpu.push_back(map.VcpuOf(c));
  StreamTracker t(o);
  for (const RecordRef& ref : Merger(&snap).Merge()) t.Push({ref.stream, *ref.rec});
  t.Finish();
  return t;
}

TEST_CASE("streaming - agrees with the batch tracker on the route golden snapshot") {
  const char* root = std::getenv("IPITRACE_GOLDEN_DIR");
  REQUIRE(root != nullptr);
  Stats stats;
  auto snap = SnapshotLoader(&stats).Load(std::string(root) + "/route-2vcpu");
  REQUIRE(snap.ok());
  CpuMap map(snap.value().guest, snap.value().hv, &stats);
  const uint64_t khz = snap.value().guest.header.tsc_khz;
  REQUIRE(khz > 0);
  StreamTracker t = Stream(snap.value(), map, 100 * khz);  // 100 ms window
  const Analysis a = Analyzer(&stats, {}).Analyze(std::move(snap).value());
  CHECK(C(t, Verdict::kLostInRouting) == 1);
  uint64_t batch_losses = 0, stream_losses = 0;
  for (size_t v = 0; v < kNumVerdicts; ++v) {
    UNSCOPED_INFO(VerdictName(static_cast<Verdict>(v)) << " batch " << a.verdict_counts[v]
                                                       << " stream " << t.counts()[v]);
    if (!IsLoss(static_cast<Verdict>(v))) continue;
    batch_losses += a.verdict_counts[v];
    stream_losses += t.counts()[v];
  }
  // The streaming path decides with a stream-time window instead of
  // look-ahead; on this real trace it differs from the batch tracker on at
  // most a handful of requests (known: 1 handler-missed-work and 2
  // in-flight at the end of the trace vs served in batch).
  CHECK(stream_losses <= batch_losses + 1);
  const uint64_t served_s = C(t, Verdict::kServedByIpi) + C(t, Verdict::kServedWithoutIpi);
  const uint64_t served_b = a.verdict_counts[0] + a.verdict_counts[1];
  CHECK(served_s + 5 >= served_b);
  CHECK(served_s <= served_b);
}

TEST_CASE("streaming - rider behind a lost IPI; first-in-queue without send") {
  StreamOptions o;
  o.window_ticks = 1000;
  StreamTracker t(o);
  auto rec = [](uint16_t type, uint16_t cpu, uint16_t target, uint64_t tsc) {
    StreamRecord r;
    r.stream = type >= 32 ? StreamKind::kHv : StreamKind::kGuest;
    r.rec.type = type;
    r.rec.cpu = cpu;
    r.rec.target = target;
    r.rec.tsc = tsc;
    return r;
  };
  // Owner 0 -> 1, lost in routing; rider 0 -> 1 queued behind it.
  auto q = rec(IPT_G_QUEUE, 0, 1, 100);
  q.rec.a[1] = 0x1000;
  t.Push(q);
  auto s = rec(IPT_G_SEND, 0, 1, 110);
  s.rec.a[0] = 1;
  t.Push(s);
  auto icr = rec(IPT_H_ICR, 0, IPT_CPU_NONE, 120);
  icr.rec.vector = 0xfb;
  icr.rec.a[0] = 2;
  t.Push(icr);
  auto q2 = rec(IPT_G_QUEUE, 0, 1, 130);
  q2.rec.a[1] = 0x2000;
  t.Push(q2);
  // CPU 2 -> 3, first in queue, no send.
  auto q3 = rec(IPT_G_QUEUE, 2, 3, 140);
  q3.rec.a[1] = 0x3000;
  t.Push(q3);
  t.Push(rec(IPT_G_MARK, 2, IPT_CPU_NONE, 10'000));
  t.Finish();
  CHECK(C(t, Verdict::kLostInRouting) == 1);
  CHECK(C(t, Verdict::kQueuedBehindLoss) == 1);
  CHECK(C(t, Verdict::kLostBeforeSend) == 1);
}

}  // namespace
}  // namespace ipitrace
