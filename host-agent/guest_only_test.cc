// SPDX-License-Identifier: MIT
//
// Guest-only mode (docs/streams.md): with no hypervisor region, or one
// whose source wrote no record, the agent gives the verdicts the guest
// stream alone supports and never names a hypervisor stage.
#include <filesystem>
#include <string>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "analyzer.h"
#include "json_report.h"
#include "testing/region_builder.h"
#include "testing/scenario.h"
#include "text_report.h"

namespace ipitrace {
namespace {

using testing::Scenario;
namespace fs = std::filesystem;

constexpr uint64_t kFunc = 0xffffffff81001000ULL;
constexpr uint64_t kCsd = 0xffff888003a00000ULL;
constexpr uint8_t kVs = Scenario::kVecSingle;
constexpr uint64_t kSettle = 500ull * testing::RegionBuilder::kTscKhz;

std::string TempDir() {
  std::string t = (fs::temp_directory_path() / "ipitrace-go-XXXXXX").string();
  REQUIRE(::mkdtemp(t.data()) != nullptr);
  return t;
}

Result<Analysis> AnalyzeWhole(const std::string& dir, Stats* stats) {
  AnalyzerOptions all;
  all.whole_requests = true;
  return Analyzer(stats, all).AnalyzeDir(dir);
}

// Five requests, one of each shape the guest stream can judge alone.
void FiveShapes(Scenario* sc) {
  sc->FullChain(0, 1, 100, kFunc, kCsd);  // served through an IPI
  sc->Queue(0, 2, 1000, kFunc, kCsd + 0x40);  // sent, never received
  sc->Send(0, 2, 1010);
  sc->Queue(1, 3, 2000, kFunc, kCsd + 0x80);  // elided, never served
  sc->Elide(1, 3, 2010);
  sc->Queue(3, 0, 3000, kFunc, kCsd + 0xc0);  // queued, never sent
  sc->Queue(0, 1, 4000, kFunc, kCsd + 0x100);  // function never returned
  sc->Send(0, 1, 4010);
  sc->IrqEntry(1, kVs, 4030);
  sc->FuncEntry(1, kFunc, kCsd + 0x100, 4040, /*with_exit=*/false);
  for (uint32_t c = 0; c < 4; ++c) sc->Mark(c, 10 * kSettle);  // every ring goes on
}

TEST_CASE("guest-only - no hv.region: the guest's verdicts, no hypervisor stage") {
  Scenario sc(4);
  FiveShapes(&sc);
  const std::string dir = TempDir();
  sc.WriteDir(dir);
  fs::remove(dir + "/hv.region");
  Stats stats;
  auto r = AnalyzeWhole(dir, &stats);
  REQUIRE(r.ok());
  const Analysis& a = r.value();
  REQUIRE(a.snapshot.hv.source.guest_only);
  REQUIRE(a.requests.size() == 5);
  CHECK(a.requests[0].verdict == Verdict::kServedByIpi);
  CHECK(a.requests[1].verdict == Verdict::kLostInUnobservedStage);
  CHECK_THAT(a.requests[1].reason, Catch::Matchers::ContainsSubstring("sent, never received"));
  CHECK_THAT(a.requests[1].reason,
             Catch::Matchers::ContainsSubstring("hypervisor stage unknown"));
  CHECK(a.requests[2].verdict == Verdict::kHandlerMissedWork);
  CHECK(a.requests[3].verdict == Verdict::kLostBeforeSend);
  INFO(a.requests[4].reason);
  CHECK(a.requests[4].verdict == Verdict::kCallbackStuck);
  // No verdict names a stage the guest cannot see, and no served request
  // is called served-without-ipi for want of a hypervisor stream.
  for (const Request& q : a.requests) {
    INFO(VerdictName(q.verdict));
    const Stage s = VerdictStage(q.verdict);
    CHECK(s != Stage::kIcr);
    CHECK(s != Stage::kRouting);
    CHECK(s != Stage::kAcknowledge);
    CHECK(s != Stage::kGuestEntry);
    CHECK(q.verdict != Verdict::kServedWithoutIpi);
    CHECK(q.verdict != Verdict::kInconclusiveGap);
  }
  CHECK(stats.Get(StatId::unmatched_cpu_map) == 0);
  CHECK(stats.Get(StatId::missing_ring) == 0);
  // Every report says so in one line.
  const auto j = JsonReport(&a).Build();
  REQUIRE(j.contains("guest_only"));
  CHECK(j["guest_only"]["why"] == "no hv.region in the snapshot");
  CHECK(j["guest_only"]["note"] == std::string(kGuestOnlyNote));
  CHECK_THAT(TextReport(&a).Render(), Catch::Matchers::ContainsSubstring(std::string(kGuestOnlyNote)));
}

TEST_CASE("guest-only - a hypervisor region whose source wrote nothing is guest-only") {
  Scenario sc(4);
  // Guest records only: the hv region is there, every ring empty.
  sc.Queue(0, 2, 1000, kFunc, kCsd);
  sc.Send(0, 2, 1010);
  sc.IrqEntry(2, kVs, 1030);
  sc.FuncEntry(2, kFunc, kCsd, 1040);
  for (uint32_t c = 0; c < 4; ++c) sc.Mark(c, 10 * kSettle);
  Stats stats;
  const Analysis a = sc.Analyze(&stats);
  REQUIRE(a.snapshot.hv.source.guest_only);
  CHECK(a.snapshot.hv.source.guest_only_why == "the qemu source wrote no record");
  REQUIRE(a.requests.size() == 1);
  CHECK(a.requests[0].verdict == Verdict::kServedByIpi);
  CHECK(JsonReport(&a).Build().contains("guest_only"));
}

TEST_CASE("guest-only - a hypervisor region that lost records is not silent") {
  Scenario sc(4);
  sc.Queue(0, 2, 1000, kFunc, kCsd);
  sc.Send(0, 2, 1010);
  sc.Ack(3, 0xec, 1020);  // the source's one record, then torn
  sc.hv().Tear(3, 0);
  for (uint32_t c = 0; c < 4; ++c) sc.Mark(c, 10 * kSettle);
  Stats stats;
  const Analysis a = sc.Analyze(&stats);
  CHECK_FALSE(a.snapshot.hv.source.guest_only);
  CHECK_FALSE(JsonReport(&a).Build().contains("guest_only"));
  REQUIRE(a.requests.size() == 1);
  // Judged as before: with the hypervisor stream, no ICR for the send.
  CHECK(a.requests[0].verdict != Verdict::kLostInUnobservedStage);
}

}  // namespace
}  // namespace ipitrace
