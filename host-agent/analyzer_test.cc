// SPDX-License-Identifier: MIT
//
// The fast paths of the analysis give what the plain ones give, on the
// golden snapshots (IPITRACE_GOLDEN_DIR) and on synthetic ones with wrapped
// and torn rings:
//   * AnalyzeDir (regions mapped, records viewed in place, rings indexed
//     while they are read) == regions read into memory and copied record by
//     record, indexed afterwards: the same JSON and text reports;
//   * the compact request table (rows, and whole requests only where the
//     reports read them) agrees with one that keeps every request whole,
//     and the stage latencies from the kept evidence equal those gathered
//     while tracking;
//   * a loss names the stage after the last one its chain reached;
//   * the latency summary's histogram selection == sorting the samples.
#include <algorithm>
#include <bit>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch_test_macros.hpp>
#include <nlohmann/json.hpp>

#include "analyzer.h"
#include "file_bytes.h"
#include "json_report.h"
#include "text_report.h"
#include "testing/scenario.h"

namespace ipitrace {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string Reports(const Analysis& a) {
  return JsonReport(&a).Build().dump(2, ' ', false, Json::error_handler_t::replace) +
         TextReport(&a).Render();
}

// The snapshot in 'dir' read with read(2) (or zstd) and copied record by
// record, indexed after loading: the path without any of the shortcuts.
Analysis AnalyzeCopied(const std::string& dir, Stats* stats) {
  Snapshot snap;
  snap.dir = dir;
  RegionReader reader(stats);
  auto hv = ReadRegionFile(dir + "/hv.region");
  auto guest = ReadRegionFile(dir + "/guest.region");
  REQUIRE(hv.ok());
  REQUIRE(guest.ok());
  snap.hv = reader.Read(hv.value(), StreamKind::kHv, dir + "/hv.region").value();
  snap.guest = reader.Read(guest.value(), StreamKind::kGuest, dir + "/guest.region").value();
  if (fs::exists(dir + "/manifest.json")) {
    // As SnapshotLoader: the manifest is passed through.
    Stats scratch;
    snap.manifest = SnapshotLoader(&scratch).Load(dir).value().manifest;
  }
  return Analyzer(stats, {}).Analyze(std::move(snap));
}

std::vector<std::string> Dirs() {
  std::vector<std::string> dirs;
  if (const char* root = std::getenv("IPITRACE_GOLDEN_DIR"))
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) dirs.push_back(e.path().string());
  // Synthetic: wrapped rings, a torn record, losses, riders.
  const std::string tmp = [] {
    std::string t = (fs::temp_directory_path() / "ipitrace-an-XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    return t;
  }();
  testing::Scenario sc(4, 128);
  for (uint64_t i = 0; i < 500; ++i) {
    const auto s = static_cast<uint32_t>(i % 4), t = static_cast<uint32_t>((i + 1) % 4);
    const uint64_t tsc = 1000 + i * 100;
    if (i % 37 == 5) {  // lost in routing, a rider behind it
      sc.Queue(s, t, tsc, 0xffffffff81001000ULL, 0xffff888000003000ULL);
      sc.Send(s, t, tsc + 10);
      sc.Icr(s, testing::Scenario::kVecSingle, tsc + 20, {t});
      sc.Queue((s + 2) % 4, t, tsc + 30, 0xffffffff81001000ULL, 0xffff888000004000ULL);
      continue;
    }
    sc.FullChain(s, t, tsc, 0xffffffff81001000ULL, 0xffff888000001000ULL + (i % 3) * 64);
  }
  sc.guest().Tear(2, sc.guest().ring_header(2).head - 40);
  sc.WriteDir(tmp + "/wrapped");
  dirs.push_back(tmp + "/wrapped");
  return dirs;
}

TEST_CASE("analyzer - in place and indexed while read == copied, indexed after") {
  const std::vector<std::string> dirs = Dirs();
  REQUIRE(dirs.size() >= 3);
  for (const std::string& dir : dirs) {
    INFO("snapshot " << dir);
    Stats fast_stats, slow_stats;
    auto fast = Analyzer(&fast_stats, {}).AnalyzeDir(dir);
    REQUIRE(fast.ok());
    const Analysis slow = AnalyzeCopied(dir, &slow_stats);
    CHECK(Reports(fast.value()) == Reports(slow));
  }
}

TEST_CASE("analyzer - the compact table agrees with one that keeps every request whole") {
  for (const std::string& dir : Dirs()) {
    INFO("snapshot " << dir);
    Stats stats, whole_stats;
    auto a = Analyzer(&stats, {}).AnalyzeDir(dir);
    AnalyzerOptions all;
    all.whole_requests = true;
    auto w = Analyzer(&whole_stats, all).AnalyzeDir(dir);
    REQUIRE(a.ok());
    REQUIRE(w.ok());
    const RequestTable& t = a.value().requests;
    const RequestTable& wt = w.value().requests;
    REQUIRE(t.size() == wt.size());
    CHECK(StatsTableJson(stats) == StatsTableJson(whole_stats));
    size_t compact = 0, without_ipi = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      const RequestTable::Row& row = t.row(i);
      REQUIRE(wt.detail(i) != nullptr);
      const Request& whole = *wt.detail(i);
      const Request r = t[i];
      CHECK(r.verdict == row.verdict);
      CHECK(r.queue_tsc == row.queue_tsc);
      CHECK(r.source_cpu == row.source_cpu);
      CHECK(r.target_cpu == row.target_cpu);
      CHECK(r.owns_ipi == row.owns_ipi());
      CHECK(r.served_tsc.has_value() == row.served());
      if (r.served_tsc) CHECK(*r.served_tsc == row.served_tsc);
      CHECK(r.func == t.func(i));
      // The same request either way: the row's fields, and all of it where kept.
      CHECK(wt.row(i).verdict == row.verdict);
      CHECK(wt.row(i).served_tsc == row.served_tsc);
      CHECK(whole.source_vcpu == r.source_vcpu);
      CHECK(whole.target_vcpu == r.target_vcpu);
      CHECK(whole.csd == r.csd);
      CHECK(whole.csd_type == r.csd_type);
      CHECK(whole.reason == r.reason);
      REQUIRE(!whole.evidence.empty());
      CHECK(whole.evidence[0].rec.type == IPT_G_QUEUE);
      CHECK(whole.evidence[0].rec.tsc == r.queue_tsc);
      if (const Request* d = t.detail(i)) {
        CHECK(d->evidence.size() == whole.evidence.size());
        CHECK(d->vector == whole.vector);
      } else {
        ++compact;
        CHECK(IsNormal(row.verdict));
        CHECK(r.evidence.empty());
      }
      // The first kMaxListed served-without-ipi are kept: the JSON lists them.
      if (row.verdict == Verdict::kServedWithoutIpi && without_ipi++ < kMaxListed)
        CHECK(t.detail(i) != nullptr);
    }
    CHECK(compact > 0);
    // Latency from the kept evidence == latency gathered while tracking.
    const std::vector<StageLatency> from_evidence = StageLatencies(wt);
    const std::vector<StageLatency>& tracked = a.value().latency;
    REQUIRE(from_evidence.size() == tracked.size());
    for (size_t k = 0; k < tracked.size(); ++k) {
      CHECK(from_evidence[k].name == tracked[k].name);
      CHECK(from_evidence[k].count == tracked[k].count);
      CHECK(from_evidence[k].p50 == tracked[k].p50);
      CHECK(from_evidence[k].p99 == tracked[k].p99);
      CHECK(from_evidence[k].max == tracked[k].max);
    }
  }
}

// The stage a request's chain reached agrees with its verdict: a lost IPI
// names the stage right after the last one matched.
TEST_CASE("analyzer - each loss names the stage after the last one its chain reached") {
  size_t losses = 0;
  for (const std::string& dir : Dirs()) {
    INFO("snapshot " << dir);
    Stats stats;
    AnalyzerOptions all;
    all.whole_requests = true;
    auto a = Analyzer(&stats, all).AnalyzeDir(dir);
    REQUIRE(a.ok());
    for (const Request& r : a.value().requests) {
      INFO(VerdictName(r.verdict) << " reached " << StageName(r.reached));
      if (r.verdict == Verdict::kServedByIpi) CHECK(r.reached == Stage::kService);
      if (!IsLoss(r.verdict)) continue;
      ++losses;
      if (r.verdict == Verdict::kCallbackStuck) {
        CHECK(r.served_tsc.has_value());
      } else if (r.verdict == Verdict::kLostInUnobservedStage) {
        CHECK(r.owns_ipi);
        CHECK(r.reached >= Stage::kSendDecision);
        CHECK(r.reached <= Stage::kRouting);
      } else if (r.owns_ipi) {
        CHECK(static_cast<int>(VerdictStage(r.verdict)) == static_cast<int>(r.reached) + 1);
      } else {
        CHECK((r.verdict == Verdict::kLostBeforeSend || r.verdict == Verdict::kHandlerMissedWork));
        CHECK(r.reached <= Stage::kSendDecision);
      }
    }
  }
  CHECK(losses > 0);
}

TEST_CASE("analyzer - latency summary: 32-bit and wider samples together") {
  StageSamples s;
  for (uint64_t v : {5ull, 1ull, 9ull, (1ull << 40), 3ull}) s[0].push_back(v);
  const std::vector<StageLatency> l = SummariseLatency(s);
  REQUIRE(l.size() == 1);
  CHECK(l[0].count == 5);
  CHECK(l[0].p50 == 5);           // sorted: 1 3 5 9 2^40
  CHECK(l[0].p99 == (1ull << 40));  // index min(4, 4)
  CHECK(l[0].max == (1ull << 40));
}

TEST_CASE("analyzer - latency summary equals sorting the samples") {
  // Distributions that put the ranks in linear buckets, in log buckets, in
  // one crowded bucket, at bucket edges, among the wide samples, and at the
  // 32-bit limit.
  std::mt19937_64 rng(42);
  auto uniform = [&](uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  const std::vector<std::pair<const char*, std::function<uint64_t()>>> shapes = {
      {"small", [&] { return uniform(0, 300); }},
      {"spread", [&] { return uint64_t{1} << uniform(0, 31) | uniform(0, 1023); }},
      {"crowded", [&] { return 5000 + uniform(0, 3); }},
      {"edges", [&] { return (uint64_t{1} << uniform(8, 31)) - uniform(0, 1); }},
      {"top", [&] { return UINT32_MAX - uniform(0, 2); }},
      {"half wide", [&] { return uniform(0, 1) ? uniform(0, 1 << 20) : uniform(1ull << 32, 1ull << 40); }},
      {"few wide", [&] { return uniform(0, 50) ? uniform(100, 100000) : (1ull << 33) + uniform(0, 9); }},
  };
  for (const auto& [name, draw] : shapes) {
    for (size_t n : {1, 2, 3, 99, 100, 101, 1000, 20011}) {
      CAPTURE(name, n);
      StageSamples s;
      std::vector<uint64_t> all;
      for (size_t i = 0; i < n; ++i) {
        const uint64_t v = draw();
        s[1].push_back(v);
        all.push_back(v);
      }
      const std::vector<StageLatency> l = SummariseLatency(s);
      REQUIRE(l.size() == 1);
      CHECK(l[0].name == "IRR->ACK");
      std::sort(all.begin(), all.end());
      CHECK(l[0].count == n);
      CHECK(l[0].p50 == all[(n - 1) / 2]);
      CHECK(l[0].p99 == all[std::min(n - 1, n * 99 / 100)]);
      CHECK(l[0].max == all.back());
      std::array<uint64_t, 65> hist{};
      for (const uint64_t v : all) ++hist[std::bit_width(v)];
      CHECK(l[0].hist == hist);
    }
  }
}

}  // namespace
}  // namespace ipitrace
