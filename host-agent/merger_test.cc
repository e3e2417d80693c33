// SPDX-License-Identifier: MIT
#include "merger.h"

#include <catch2/catch_test_macros.hpp>

#include "testing/scenario.h"

namespace ipitrace {
namespace {

TEST_CASE("merger - one timeline in TSC order, ring order kept") {
  testing::Scenario sc(2);
  sc.Mark(1, 10);
  sc.FullChain(0, 1, 100, 0x1000, 0x2000);
  sc.Mark(0, 95);  // guest ring 0 goes backwards: stays after its predecessor
  Stats stats;
  const Snapshot snap = sc.Load(&stats);
  const auto timeline = Merger(&snap).Merge();
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

}  // namespace
}  // namespace ipitrace
