// SPDX-License-Identifier: MIT
//
// Guest kernels before Linux 6.3 (docs/streams.md, "Guest kernels before
// 6.3"): the module says per stage how it observed it; without function
// records the agent judges a request up to its target's handler and never
// blames the service.
#include <cstring>
#include <filesystem>
#include <string>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "analyzer.h"
#include "guest_stages.h"
#include "json_report.h"
#include "testing/region_builder.h"
#include "testing/scenario.h"
#include "text_report.h"

namespace ipitrace {
namespace {

using testing::Scenario;

// A function and a csd address as a guest's records carry them.
constexpr uint64_t kFunc = 0xffffffff81002000ULL;
constexpr uint64_t kCsd = 0xffff888003b00000ULL;
constexpr uint64_t kLater = 5000ull * testing::RegionBuilder::kTscKhz;

// The guest header extension with these stage sources (QUEUE .. FUNC).
void SetStages(testing::RegionBuilder* g, std::array<uint8_t, 5> src) {
  ipt_ghdr_ext x{};
  x.magic = IPT_GHDR_EXT_MAGIC;
  std::memcpy(x.stage_src, src.data(), src.size());
  std::memcpy(reinterpret_cast<std::byte*>(&g->header()) + IPT_GHDR_EXT_OFFSET, &x, sizeof(x));
}

constexpr std::array<uint8_t, 5> kStock61 = {IPT_G_SRC_KPROBE, IPT_G_SRC_KPROBE,
                                             IPT_G_SRC_TRACEPOINT, IPT_G_SRC_TRACEPOINT,
                                             IPT_G_SRC_NONE};
constexpr std::array<uint8_t, 5> kAllTracepoints = {IPT_G_SRC_TRACEPOINT, IPT_G_SRC_TRACEPOINT,
                                                    IPT_G_SRC_TRACEPOINT, IPT_G_SRC_TRACEPOINT,
                                                    IPT_G_SRC_TRACEPOINT};

TEST_CASE("guest stages - read from the header extension, unknown values never trusted") {
  ipt_region_header h{};
  // No extension: a module before ABI 1.2, which needed every tracepoint.
  GuestStages none = GuestStagesOf(h);
  CHECK(none.ObservesRequired());
  CHECK(none.Observes(IPT_G_STAGE_FUNC));
  CHECK(none.AllTracepoints());

  testing::RegionBuilder g(StreamKind::kGuest, 2, 256);
  SetStages(&g, kStock61);
  GuestStages s = GuestStagesOf(g.header());
  CHECK(s.ObservesRequired());
  CHECK_FALSE(s.Observes(IPT_G_STAGE_FUNC));
  CHECK_FALSE(s.AllTracepoints());
  CHECK(s.Describe() ==
        "G_QUEUE kprobe, G_SEND kprobe, G_ELIDE tracepoint, G_IRQ_ENTRY/EXIT tracepoint, "
        "G_FUNC_ENTRY/EXIT not observable");
  CHECK(GuestStages::StageKey(IPT_G_STAGE_IRQ) == "irq");

  // A value the ABI does not define: nobody vouches for that stage.
  SetStages(&g, {IPT_G_SRC_TRACEPOINT, IPT_G_SRC_TRACEPOINT, IPT_G_SRC_TRACEPOINT,
                 IPT_G_SRC_TRACEPOINT, 0xee});
  CHECK_FALSE(GuestStagesOf(g.header()).Observes(IPT_G_STAGE_FUNC));
}

// Four requests: a full chain but for the function record; an elided one
// no handler entry followed; one acknowledged whose handler never ran; one
// never sent.
Scenario WithoutFunctionRecords(std::array<uint8_t, 5> stages) {
  Scenario sc(4);
  SetStages(&sc.guest(), stages);
  sc.ChainToEntry(0, 1, 100, kFunc, kCsd);
  sc.IrqExit(1, Scenario::kVecSingle, 160);
  sc.Queue(1, 3, 1000, kFunc, kCsd + 0x40);  // elided, then silence on 3
  sc.Elide(1, 3, 1010);
  sc.Queue(0, 2, 2000, kFunc, kCsd + 0x80);  // acknowledged, never entered
  sc.Send(0, 2, 2010);
  const uint64_t icr2 = sc.Icr(0, Scenario::kVecSingle, 2020, {2});
  sc.Irr(0, 2, Scenario::kVecSingle, icr2, 2030);
  sc.Ack(2, Scenario::kVecSingle, 2040);
  sc.Queue(3, 0, 3000, kFunc, kCsd + 0xc0);  // queued, never sent
  for (uint32_t c = 0; c < 4; ++c) sc.Mark(c, kLater);
  for (uint32_t v = 0; v < 4; ++v) sc.Ack(v, 0xec, kLater);  // every vCPU goes on
  return sc;
}

TEST_CASE("guest stages - without function records the service is never blamed") {
  Stats stats;
  const Analysis a = WithoutFunctionRecords(kStock61).Analyze(&stats);
  REQUIRE(a.requests.size() == 4);
  CHECK(a.requests[0].verdict == Verdict::kServedByIpi);
  INFO(a.requests[1].reason);
  CHECK(a.requests[1].verdict == Verdict::kServiceUnobserved);
  CHECK_THAT(a.requests[1].reason, Catch::Matchers::ContainsSubstring("cannot show"));
  // Losses at the stages the guest does observe are still named.
  CHECK(a.requests[2].verdict == Verdict::kLostInGuestEntry);
  CHECK(a.requests[3].verdict == Verdict::kLostBeforeSend);
  for (const Request& q : a.requests) {
    CHECK(q.verdict != Verdict::kHandlerMissedWork);
    CHECK(q.verdict != Verdict::kCallbackStuck);
  }
  CHECK(stats.Get(StatId::guest_stage_unobserved) == 1);
  // Every report says which stages the guest saw, and what that means.
  const auto j = JsonReport(&a).Build();
  CHECK(j["guest_stages"]["queue"] == "kprobe");
  CHECK(j["guest_stages"]["func"] == "not observable");
  CHECK(j["guest_stages"]["note"] == std::string(kNoFuncNote));
  const std::string text = TextReport(&a).Render();
  CHECK_THAT(text, Catch::Matchers::ContainsSubstring(std::string(kNoFuncNote)));
  CHECK_THAT(text, Catch::Matchers::ContainsSubstring("G_FUNC_ENTRY/EXIT not observable"));
}

TEST_CASE("guest stages - the same records from a kernel with function records are losses") {
  // The contrast: a guest that shows function records and shows none for
  // these requests did not run them.
  Stats stats;
  const Analysis a = WithoutFunctionRecords(kAllTracepoints).Analyze(&stats);
  REQUIRE(a.requests.size() == 4);
  CHECK(a.requests[0].verdict == Verdict::kHandlerMissedWork);
  CHECK(a.requests[1].verdict == Verdict::kHandlerMissedWork);
  CHECK(a.requests[2].verdict == Verdict::kLostInGuestEntry);
  CHECK(a.requests[3].verdict == Verdict::kLostBeforeSend);
  const auto j = JsonReport(&a).Build();
  CHECK(j["guest_stages"]["func"] == "tracepoint");
  CHECK_FALSE(j["guest_stages"].contains("note"));
  CHECK(stats.Get(StatId::guest_stage_unobserved) == 0);
}

TEST_CASE("guest stages - a guest that showed no send cannot be analysed") {
  Scenario sc = WithoutFunctionRecords(kStock61);
  SetStages(&sc.guest(), {IPT_G_SRC_KPROBE, IPT_G_SRC_NONE, IPT_G_SRC_TRACEPOINT,
                          IPT_G_SRC_TRACEPOINT, IPT_G_SRC_NONE});
  std::string dir = (std::filesystem::temp_directory_path() / "ipitrace-gs-XXXXXX").string();
  REQUIRE(::mkdtemp(dir.data()) != nullptr);
  sc.WriteDir(dir);
  Stats stats;
  auto r = Analyzer(&stats, {}).AnalyzeDir(dir);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == ErrorCode::kMalformed);
  CHECK_THAT(r.status().message(), Catch::Matchers::ContainsSubstring("G_SEND not observable"));
  CHECK(stats.Get(StatId::guest_stages_missing) == 1);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ipitrace
