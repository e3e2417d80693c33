// SPDX-License-Identifier: MIT
#include "ring_index.h"

#include <algorithm>
#include <random>
#include <vector>

#include <catch2/catch_test_macros.hpp>

#include "testing/scenario.h"

namespace ipitrace {
namespace {

using testing::Scenario;

constexpr uint64_t kFunc = 0xffffffff81001000ULL;
constexpr uint64_t kCsd = 0xffff888000002000ULL;

TEST_CASE("ring_index - galloping from any hint answers like std::partition_point") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2000; ++round) {
    const size_t n = rng() % 40;
    std::vector<uint64_t> v(n);
    for (auto& x : v) x = rng() % 20;
    const bool sorted = round % 3 != 0;
    if (sorted) std::sort(v.begin(), v.end());
    const uint64_t key = rng() % 22;
    auto less = [&](size_t k) { return v[k] < key; };
    const size_t want = static_cast<size_t>(
        std::partition_point(v.begin(), v.end(), [&](uint64_t x) { return x < key; }) -
        v.begin());
    // No hint: the same probes as std::partition_point, sorted or not.
    CHECK(internal::GallopLowerBound(n, nullptr, less) == want);
    if (!sorted) continue;
    uint32_t hint = static_cast<uint32_t>(rng() % (n + 3));  // even past the end
    CHECK(internal::GallopLowerBound(n, &hint, less) == want);
    CHECK(hint == want);
  }
}

TEST_CASE("ring_index - each queue is linked to its next send decision") {
  Scenario sc(3);
  sc.Queue(0, 1, 100, kFunc, kCsd);       // q0 -> send at 110
  sc.Queue(0, 2, 105, kFunc, kCsd + 1);   // q1 -> elide at 130
  sc.Send(0, 1, 110);
  sc.Queue(0, 1, 120, kFunc, kCsd + 2);   // q2 -> q3 (a queue is a decision)
  sc.Elide(0, 2, 130);
  sc.Queue(0, 1, 140, kFunc, kCsd + 3);   // q3 -> none
  Stats stats;
  const Snapshot snap = sc.Load(&stats);
  const RingIndex index(snap);
  const RingIndex::Guest& g = index.guest(0);
  REQUIRE(g.queues.size() == 4);
  CHECK(g.next_decision == std::vector<uint32_t>{2, 4, 5, RingIndex::kNoPosition});
  // The send's index in the sends to CPU 1.
  CHECK(g.decision_send[0] == 0);
  CHECK(g.decision_send[1] == RingIndex::kNoPosition);
}

TEST_CASE("ring_index - each function entry is linked to its first exit") {
  Scenario sc(2);
  sc.FuncEntry(1, kFunc, kCsd, 100, /*with_exit=*/false);  // exit at 300
  sc.FuncEntry(1, kFunc, kCsd + 8, 150);                   // exit at 151
  sc.FuncEntry(1, kFunc, kCsd, 200, /*with_exit=*/false);  // exit at 300 too
  sc.FuncExit(1, kFunc, kCsd, 300);
  sc.FuncEntry(1, kFunc, kCsd, 400, /*with_exit=*/false);  // none
  Stats stats;
  const Snapshot snap = sc.Load(&stats);
  const RingIndex index(snap);
  const EntryLists::List l = index.guest(1).func_by_csd.Get(kCsd);
  REQUIRE(l.entries.size() == 3);
  const RecordView& recs = snap.guest.rings[1].records;
  CHECK(recs[l.entries[0]].tsc == 100);
  CHECK(recs[l.exit_after[0]].tsc == 300);
  CHECK(recs[l.exit_after[1]].tsc == 300);
  CHECK(l.exit_after[2] == EntryLists::kNone);
  const EntryLists::List other = index.guest(1).func_by_csd.Get(kCsd + 8);
  REQUIRE(other.entries.size() == 1);
  CHECK(recs[other.exit_after[0]].tsc == 151);
  CHECK(index.guest(1).func_by_csd.Get(kCsd + 16).entries.empty());
}

TEST_CASE("ring_index - indexed while read or afterwards: the same tables") {
  Scenario sc(4, 64);  // small rings: they wrap
  for (uint64_t i = 0; i < 300; ++i)
    sc.FullChain(static_cast<uint32_t>(i % 4), static_cast<uint32_t>((i + 1) % 4),
                 1000 + i * 100, kFunc, kCsd + (i % 3));
  const std::vector<std::byte> hv = sc.hv().Bytes(), guest = sc.guest().Bytes();
  Stats s1, s2;
  RingIndex streamed;
  RegionReader while_read(&s1, &streamed);
  Snapshot a;
  a.hv = while_read.Read(RegionBytes::FromBuffer(hv), StreamKind::kHv, "hv").value();
  a.guest = while_read.Read(RegionBytes::FromBuffer(guest), StreamKind::kGuest, "guest").value();
  streamed.Finish(a);
  Snapshot b;
  b.hv = RegionReader(&s2).Read(hv, StreamKind::kHv, "hv").value();
  b.guest = RegionReader(&s2).Read(guest, StreamKind::kGuest, "guest").value();
  const RingIndex after(b);
  CHECK(streamed.snapshot_end_tsc() == after.snapshot_end_tsc());
  for (uint32_t r = 0; r < 4; ++r) {
    CHECK(streamed.guest(r).queues == after.guest(r).queues);
    CHECK(streamed.guest(r).next_decision == after.guest(r).next_decision);
    CHECK(streamed.guest(r).irq_callfunc == after.guest(r).irq_callfunc);
    CHECK(streamed.hv(r).ack_callfunc == after.hv(r).ack_callfunc);
    CHECK(streamed.irr_sets(r) == after.irr_sets(r));
    const PositionList x = streamed.hv(r).icr_by_vector.Get(Scenario::kVecSingle);
    const PositionList y = after.hv(r).icr_by_vector.Get(Scenario::kVecSingle);
    CHECK(std::vector<uint32_t>(x.begin(), x.end()) == std::vector<uint32_t>(y.begin(), y.end()));
  }
}

}  // namespace
}  // namespace ipitrace
