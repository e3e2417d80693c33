// SPDX-License-Identifier: MIT
//
// ipitrace: find where a lost inter-processor interrupt vanished.
//
//   ipitrace analyze SNAPSHOT_DIR [--json] [--threshold-ms N]
//   ipitrace dump SNAPSHOT_DIR [--limit N]
//   ipitrace --version
//
// Exit codes: 0 ok, 1 internal error, 2 usage, 3 unreadable/missing input
// file, 4 malformed region.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "analyzer.h"
#include "json_report.h"
#include "merger.h"
#include "snapshot.h"
#include "text_report.h"

namespace {

constexpr const char* kVersion = "ipitrace 0.1.0 (ABI " 
#define IPT_STR2(x) #x
#define IPT_STR(x) IPT_STR2(x)
    IPT_STR(IPT_ABI_MAJOR) "." IPT_STR(IPT_ABI_MINOR) ")";

int Fail(const ipitrace::Status& s) {
  std::fprintf(stderr, "ipitrace: %s\n", s.message().c_str());
  return static_cast<int>(s.code());
}

int RunAnalyze(const std::string& dir, bool json, double threshold_ms) {
  ipitrace::Stats stats;
  ipitrace::Analyzer analyzer(&stats, {threshold_ms});
  auto analysis = analyzer.AnalyzeDir(dir);
  if (!analysis.ok()) return Fail(analysis.status());
  if (json) {
    const auto j = ipitrace::JsonReport(&analysis.value()).Build();
    std::string s = j.dump(2, ' ', false,
                           nlohmann::ordered_json::error_handler_t::replace);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    const std::string s = ipitrace::TextReport(&analysis.value()).Render();
    std::fwrite(s.data(), 1, s.size(), stdout);
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int RunDump(const std::string& dir, uint64_t limit) {
  ipitrace::Stats stats;
  auto snap = ipitrace::SnapshotLoader(&stats).Load(dir);
  if (!snap.ok()) return Fail(snap.status());
  const auto timeline = ipitrace::Merger(&snap.value()).Merge();
  uint64_t n = 0;
  for (const ipitrace::RecordRef& r : timeline) {
    if (limit && n++ >= limit) break;
    const ipt_record& rec = *r.rec;
    fmt::print("{:>16} {:<5} ring {:>3} seq {:>8} {:<12} cpu {:>3} target {:>5} "
               "vec {:#04x} flags {:#04x} arg0 {:#x} arg1 {:#x} a [{:#x} {:#x} "
               "{:#x} {:#x}]\n",
               rec.tsc, ipitrace::StreamName(r.stream), r.ring, rec.seq,
               ipitrace::RecordTypeName(rec.type), rec.cpu, rec.target,
               rec.vector, rec.flags, rec.arg0, rec.arg1, rec.a[0], rec.a[1],
               rec.a[2], rec.a[3]);
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  CLI::App app{"ipitrace: find where a lost inter-processor interrupt vanished "
               "in a QEMU/TCG guest"};
  app.set_version_flag("--version", kVersion);
  app.require_subcommand(1);

  std::string dir;
  bool json = false;
  double threshold_ms = 10.0;
  auto* analyze = app.add_subcommand(
      "analyze", "Join the hypervisor and guest streams of a snapshot and name "
                 "the stage where each lost IPI vanished");
  analyze->add_option("SNAPSHOT_DIR", dir,
                      "snapshot directory (manifest.json, hv.region, "
                      "guest.region)")
      ->required();
  analyze->add_flag("--json", json, "print a JSON object instead of text");
  analyze->add_option("--threshold-ms", threshold_ms,
                      "list served requests slower than this (default 10)")
      ->check(CLI::NonNegativeNumber);

  uint64_t limit = 0;
  auto* dump = app.add_subcommand(
      "dump", "Print the merged timeline of both streams (TSC order)");
  dump->add_option("SNAPSHOT_DIR", dir, "snapshot directory")->required();
  dump->add_option("--limit", limit, "print at most N records (0: all)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ipitrace::ErrorCode::kUsage);
  }
  if (analyze->parsed()) return RunAnalyze(dir, json, threshold_ms);
  if (dump->parsed()) return RunDump(dir, limit);
  return static_cast<int>(ipitrace::ErrorCode::kUsage);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipitrace: internal error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "ipitrace: internal error\n");
  }
  return static_cast<int>(ipitrace::ErrorCode::kInternal);
}
