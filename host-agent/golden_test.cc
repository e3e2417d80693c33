// SPDX-License-Identifier: MIT
//
// Golden tests: real snapshots taken with harness/ipitrace-run, kept in
// host-agent/testdata/golden/NAME/ (regions zstd-compressed), each with an
// expected.json holding a stable subset of `analyze --json`:
// verdict_counts, the losses' verdict/source/target/vector, per-CPU counts.
// The test also grades the losses against the injector's ground truth
// (faults.jsonl), which only tests may read.
//
// Regenerate after an intended change:
//   IPITRACE_GOLDEN_UPDATE=1 meson test -C build golden
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch_test_macros.hpp>
#include <nlohmann/json.hpp>

#include "analyzer.h"
#include "json_report.h"

namespace ipitrace {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

Json StableSubset(const Json& full) {
  Json j;
  j["requests"] = full["requests"];
  j["verdict_counts"] = full["verdict_counts"];
  Json losses = Json::array();
  for (const auto& l : full["losses"]) {
    losses.push_back({{"verdict", l["verdict"]},
                      {"source_cpu", l["source_cpu"]},
                      {"target_cpu", l["target_cpu"]},
                      {"source_vcpu", l["source_vcpu"]},
                      {"target_vcpu", l["target_vcpu"]},
                      {"vector", l["vector"]},
                      {"served_late", l["served_late"]}});
  }
  j["losses"] = std::move(losses);
  Json per_cpu = Json::array();
  for (const auto& c : full["per_cpu"]) {
    per_cpu.push_back({{"cpu", c["cpu"]},
                       {"vcpu", c["vcpu"]},
                       {"hv_ack_callfunc", c["hv_ack_callfunc"]},
                       {"guest_irq_callfunc", c["guest_irq_callfunc"]}});
  }
  j["per_cpu"] = std::move(per_cpu);
  Json stats = Json::object();
  for (const auto& s : full["stats"])
    if (s["count"] != 0) stats[s["name"].get<std::string>()] = s["count"];
  j["stats_nonzero"] = std::move(stats);
  return j;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_CASE("golden - real snapshots match expected.json and ground truth") {
  const char* root = std::getenv("IPITRACE_GOLDEN_DIR");
  REQUIRE(root != nullptr);
  const bool update = std::getenv("IPITRACE_GOLDEN_UPDATE") != nullptr;
  size_t dirs = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!entry.is_directory()) continue;
    ++dirs;
    const fs::path dir = entry.path();
    INFO("golden snapshot " << dir.string());
    Stats stats;
    Analyzer analyzer(&stats, AnalyzerOptions{});
    auto a = analyzer.AnalyzeDir(dir.string());
    REQUIRE(a.ok());
    const Json got = StableSubset(JsonReport(&a.value()).Build());
    const fs::path expected_path = dir / "expected.json";
    if (update) {
      std::ofstream(expected_path) << got.dump(2) << "\n";
      continue;
    }
    REQUIRE(fs::exists(expected_path));
    const Json want = Json::parse(Slurp(expected_path));
    CHECK(got.dump(2) == want.dump(2));

    // Ground truth: every injected fault is a loss of that stage between
    // the same vCPUs, and there are no other losses.
    size_t faults = 0, kick_faults = 0;
    std::ifstream truth(dir / "faults.jsonl");
    std::string line;
    while (std::getline(truth, line)) {
      if (line.empty()) continue;
      ++faults;
      const Json f = Json::parse(line);
      // Stage names of the injector -> the verdict the agent must give
      // (unknown stages: only the endpoints and vector are graded).
      const std::string stage = f.value("stage", "");
      // A withheld kick may end in a late ACK (served, just slow): no loss
      // is required for it.
      if (stage == "kick") {
        --faults;
        ++kick_faults;
        continue;
      }
      const std::string verdict = stage == "route"    ? "lost-in-routing"
                                  : stage == "inject" ? "lost-in-injection"
                                  : stage == "icr"    ? "lost-guest-to-hypervisor"
                                  : stage == "entry"  ? "lost-in-guest-entry"
                                                      : "";
      bool found = false;
      for (const auto& l : got["losses"])
        if (l["source_vcpu"] == f["source"] && l["target_vcpu"] == f["target"] &&
            l["vector"] == f["vector"] &&
            (verdict.empty() || l["verdict"] == verdict))
          found = true;
      CHECK(found);
    }
    CHECK(got["losses"].size() >= faults);
    CHECK(got["losses"].size() <= faults + kick_faults);
  }
  CHECK(dirs >= 2);
}

}  // namespace
}  // namespace ipitrace
