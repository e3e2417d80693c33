// SPDX-License-Identifier: MIT
#include "ring_merge.h"

#include <catch2/catch_test_macros.hpp>

#include "testing/scenario.h"

namespace ipitrace {
namespace {

TEST_CASE("ring merge - one timeline in TSC order, ring order kept") {
  testing::Scenario sc(2);
  sc.Mark(1, 10);
  sc.FullChain(0, 1, 100, 0x1000, 0x2000);
  sc.Mark(0, 95);  // guest ring 0 goes backwards: stays after its predecessor
  Stats stats;
  const Snapshot snap = sc.Load(&stats);
  const auto timeline = MergedRecords(snap);
  REQUIRE(timeline.size() == 11);  // FullChain writes G_FUNC_EXIT too
  CHECK(timeline.front().rec->tsc == 10);
  // Program order within guest ring 0: QUEUE(100), SEND(110), MARK(95).
  std::vector<uint64_t> ring0;
  for (const RecordRef& r : timeline)
    if (r.stream == StreamKind::kGuest && r.ring == 0) ring0.push_back(r.rec->tsc);
  CHECK(ring0 == std::vector<uint64_t>{100, 110, 95});
  // Across rings, the hv ICR (120) comes after the guest SEND (110).
  size_t send = 0, icr = 0;
  for (size_t i = 0; i < timeline.size(); ++i) {
    if (timeline[i].rec->type == IPT_G_SEND) send = i;
    if (timeline[i].rec->type == IPT_H_ICR) icr = i;
  }
  CHECK(send < icr);
}

TEST_CASE("ring merge - ties by rank, empty lanes skipped, lanes keep their order") {
  // Lane 0: 5 7 3 (goes back); lane 1: empty; lane 2: 5 6; rank 2 < rank 0.
  const std::vector<std::vector<uint64_t>> tsc = {{5, 7, 3}, {}, {5, 6}};
  const std::vector<MergeLane> lanes = {{9, 3}, {0, 0}, {2, 2}};
  std::vector<std::pair<uint32_t, uint32_t>> order;
  MergeLanes(
      lanes, [&](uint32_t l, uint32_t k) { return tsc[l][k]; },
      [&](uint32_t l, uint32_t k) { order.push_back({l, k}); });
  const std::vector<std::pair<uint32_t, uint32_t>> want = {{2, 0}, {0, 0}, {2, 1}, {0, 1}, {0, 2}};
  CHECK(order == want);
}

}  // namespace
}  // namespace ipitrace
