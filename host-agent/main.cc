// SPDX-License-Identifier: MIT
//
// ipitrace: find where a lost inter-processor interrupt vanished.
//
//   ipitrace analyze SNAPSHOT_DIR [--json] [--threshold-ms N] [--settle-ms N]
//   ipitrace dump SNAPSHOT_DIR [--limit N]
//   ipitrace watch DIR_OR_HV:GUEST... [--hang-ms N] [--settle-ms N] [--out DIR]
//   ipitrace export --timeline OUT.json SNAPSHOT_DIR
//   ipitrace claim FILE --size-mb N
//   ipitrace --version
//
// Exit codes: 0 ok, 1 internal error, 2 usage, 3 unreadable/missing input
// file, 4 malformed region.
#include <malloc.h>
#include <signal.h>
#include <time.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "analyzer.h"
#include "json_report.h"
#include "kvm_source.h"
#include "kvm_events.h"
#include "claim.h"
#include "ring_merge.h"
#include "snapshot.h"
#include "text_report.h"
#include "timeline.h"
#include "watch.h"

namespace {

constexpr const char* kVersion = "ipitrace 0.1.0 (ABI " 
#define IPT_STR2(x) #x
#define IPT_STR(x) IPT_STR2(x)
    IPT_STR(IPT_ABI_MAJOR) "." IPT_STR(IPT_ABI_MINOR) ")";

// For the one-shot commands (analyze, dump, export): keep freed heap
// memory for reuse instead of returning it to the kernel.  An analysis
// builds tens of MB of index lists and tables, many of them grown by
// doubling: with glibc's defaults each large buffer is a fresh mmap
// (page-faulted in, then unmapped when it grows or is freed), which cost
// about as much system time as reading the records themselves.  From the
// heap, freed buffers are reused already mapped.  Not for watch, which
// runs for days and should give memory back.
void KeepHeapForOneShot() {
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed value
  ::mallopt(M_TRIM_THRESHOLD, 512 << 20);
  ::mallopt(M_TOP_PAD, 16 << 20);
}

int Fail(const ipitrace::Status& s) {
  std::fprintf(stderr, "ipitrace: %s\n", s.message().c_str());
  return static_cast<int>(s.code());
}

int RunAnalyze(const std::string& dir, bool json, double threshold_ms, double settle_ms) {
  KeepHeapForOneShot();
  ipitrace::Stats stats;
  ipitrace::Analyzer analyzer(&stats, {threshold_ms, settle_ms});
  auto analysis = analyzer.AnalyzeDir(dir);
  if (!analysis.ok()) return Fail(analysis.status());
  std::string s;
  if (json) {
    const auto j = ipitrace::JsonReport(&analysis.value()).Build();
    s = j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    s += '\n';
  } else {
    s = ipitrace::TextReport(&analysis.value()).Render();
  }
  // The report reads the mapped regions too (evidence, slices).
  if (std::string t = analysis.value().snapshot.Truncated(); !t.empty())
    return Fail(ipitrace::Status::Error(ipitrace::ErrorCode::kIo, t));
  std::fwrite(s.data(), 1, s.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int RunDump(const std::string& dir, uint64_t limit) {
  KeepHeapForOneShot();
  ipitrace::Stats stats;
  auto snap = ipitrace::SnapshotLoader(&stats).Load(dir);
  if (!snap.ok()) return Fail(snap.status());
  const auto timeline = ipitrace::MergedRecords(snap.value());
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
  if (std::fflush(stdout) != 0) return 1;
  if (std::string t = snap.value().Truncated(); !t.empty())
    return Fail(ipitrace::Status::Error(ipitrace::ErrorCode::kIo, t));
  return 0;
}

volatile std::sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }

uint64_t NowNs() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int RunWatch(const std::vector<std::string>& specs, const ipitrace::WatchOptions& opts,
             double poll_ms, double duration_s) {
  std::vector<ipitrace::WatchTarget> targets;
  for (const auto& s : specs) targets.push_back(ipitrace::ParseWatchTarget(s));
  ipitrace::Watcher watcher(std::move(targets), opts);
  ::signal(SIGINT, OnStop);
  ::signal(SIGTERM, OnStop);
  const uint64_t start = NowNs();
  while (!g_stop) {
    const uint64_t now = NowNs();
    for (const auto& e : watcher.Poll(now)) {
      const std::string line = e.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
      std::fprintf(stdout, "%s\n", line.c_str());
    }
    std::fflush(stdout);
    if (duration_s > 0 && static_cast<double>(NowNs() - start) / 1e9 >= duration_s) break;
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(poll_ms * 1000)));
  }
  return 0;
}

int RunExport(const std::string& dir, const std::string& out) {
  KeepHeapForOneShot();
  ipitrace::Stats stats;
  // The timeline draws every IPI's chain: keep every request whole.
  ipitrace::AnalyzerOptions options;
  options.whole_requests = true;
  ipitrace::Analyzer analyzer(&stats, options);
  auto analysis = analyzer.AnalyzeDir(dir);
  if (!analysis.ok()) return Fail(analysis.status());
  auto st = ipitrace::WriteTimeline(analysis.value(), out);
  if (!st.ok()) return Fail(st);
  if (std::string t = analysis.value().snapshot.Truncated(); !t.empty())
    return Fail(ipitrace::Status::Error(ipitrace::ErrorCode::kIo, t));
  return 0;
}

// The verdict table (tracker.h IPT_VERDICTS), for the harness and people.
// Version of `verdicts --json`: 2 wraps the table in an object and adds
// each verdict's stage.
constexpr int kVerdictsSchemaVersion = 2;

int RunVerdicts(bool json) {
  nlohmann::ordered_json table = nlohmann::ordered_json::array();
  for (size_t i = 0; i < ipitrace::kNumVerdicts; ++i) {
    const auto v = static_cast<ipitrace::Verdict>(i);
    if (json) {
      table.push_back({{"name", ipitrace::VerdictName(v)},
                       {"loss", ipitrace::IsLoss(v)},
                       {"normal", ipitrace::IsNormal(v)},
                       {"stage", ipitrace::StageName(ipitrace::VerdictStage(v))},
                       {"meaning", ipitrace::VerdictMeaning(v)}});
    } else {
      std::printf("%-26s %-5s %-14s %s\n", std::string(ipitrace::VerdictName(v)).c_str(),
                  ipitrace::IsLoss(v) ? "loss" : "", std::string(ipitrace::StageName(ipitrace::VerdictStage(v))).c_str(),
                  std::string(ipitrace::VerdictMeaning(v)).c_str());
    }
  }
  if (json) {
    const nlohmann::ordered_json out = {{"schema_version", kVerdictsSchemaVersion},
                                        {"verdicts", table}};
    std::printf("%s\n", out.dump(2).c_str());
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int RunKvmSource(const ipitrace::KvmSourceOptions& o) {
  ::signal(SIGINT, OnStop);
  ::signal(SIGTERM, OnStop);
  const ipitrace::Status s = ipitrace::RunKvmSource(o, &g_stop);
  if (!s.ok()) return Fail(s);
  return 0;
}

// Every command's options, filled by the parser.
struct Args {
  std::string dir;
  bool json = false;
  double threshold_ms = 10.0;
  double settle_ms = ipitrace::AnalyzerOptions::kDefaultSettleMs;
  uint64_t limit = 0;
  std::vector<std::string> specs;
  ipitrace::WatchOptions wopts;
  double poll_ms = 200;
  double duration_s = 0;
  std::string timeline_out;
  bool verdicts_json = false;
  ipitrace::KvmSourceOptions kopts;
  std::string claim_path;
  uint64_t claim_mb = 0;
};

constexpr const char* kSettleHelp =
    "a request whose next stage is asynchronous and missing (the target's "
    "acknowledge, the APIC write after a send, the send after a queue, the "
    "service after an elision) is lost only once the trace went on this "
    "long past the stage it reached, in-flight before (default 500)";

CLI::App* AddAnalyze(CLI::App& app, Args* g) {
  auto* analyze = app.add_subcommand(
      "analyze", "Join the hypervisor and guest streams of a snapshot and name "
                 "the stage where each lost IPI vanished");
  analyze->add_option("SNAPSHOT_DIR", g->dir,
                      "snapshot directory (manifest.json, hv.region, "
                      "guest.region)")
      ->required();
  analyze->add_flag("--json", g->json, "print a JSON object instead of text");
  analyze->add_option("--threshold-ms", g->threshold_ms,
                      "list served requests slower than this (default 10)")
      ->check(CLI::NonNegativeNumber);
  analyze->add_option("--settle-ms", g->settle_ms, kSettleHelp)->check(CLI::PositiveNumber);
  return analyze;
}

CLI::App* AddWatch(CLI::App& app, Args* g) {
  auto* watch = app.add_subcommand(
      "watch", "Follow the live regions of one or more VMs, detect a hang "
               "(a request outstanding longer than --hang-ms) and write a "
               "snapshot and a verdict report; prints JSON-lines events "
               "(vm_attached, hang_detected, ring_corrupt, vm_detached).  "
               "Each poll reads only the records written since the last one "
               "and keeps only the outstanding requests; the regions are "
               "copied and analysed only for a hang");
  watch->add_option("VM", g->specs,
                    "a directory holding hv.region and guest.region, or "
                    "HV_FILE:GUEST_FILE (e.g. /dev/shm files), or :GUEST_FILE for a "
                    "guest without a hypervisor stream (guest-only verdicts)")
      ->required();
  watch->add_option("--hang-ms", g->wopts.hang_ms,
                    "outstanding time that counts as a hang (default 1000)")
      ->check(CLI::PositiveNumber);
  watch->add_option("--settle-ms", g->wopts.settle_ms, kSettleHelp)->check(CLI::PositiveNumber);
  watch->add_option("--out", g->wopts.out_dir,
                    "directory for hang snapshots (default .)");
  watch->add_option("--poll-ms", g->poll_ms, "poll interval (default 200)")
      ->check(CLI::Range(1.0, 1000.0));
  watch->add_option("--duration-s", g->duration_s,
                    "stop after this many seconds (default 0: until SIGINT/SIGTERM)")
      ->check(CLI::NonNegativeNumber);
  return watch;
}

CLI::App* AddKvmSource(CLI::App& app, Args* g) {
  ipitrace::KvmSourceOptions& kopts = g->kopts;
  auto* kvm = app.add_subcommand(
      "kvm-source",
      "Be the hypervisor stream of one KVM VM: read the host's KVM tracepoints "
      "(BPF programs on them, or its own tracefs instance with the x86-tsc "
      "clock) for the VM's QEMU process and write "
      "them, stamped with each vCPU's guest TSC, into a hypervisor region file "
      "that analyze and watch read like the patched QEMU's.  Runs until the VM "
      "exits or SIGINT/SIGTERM; leaves no program or tracefs instance behind.  "
      "Exit codes: 0 done, 2 usage, 3 region file, 5 permission (run as root), "
      "6 tracefs or KVM tracepoints missing, 7 debugfs missing, 8 not a KVM VM, "
      "9 --backend bpf and the BPF programs would not load or attach");
  kvm->add_option("--pid", kopts.pid, "the VM's QEMU process id")->required();
  kvm->add_option("--out", kopts.out, "hypervisor region file to write (e.g. /dev/shm/ipt-hv-NAME)")
      ->required();
  kvm->add_option("--capacity", kopts.capacity, "records per vCPU ring, a power of two (default 2^19)");
  kvm->add_option("--buffer-kb", kopts.buffer_kb, "host trace buffer per CPU, KiB (default 4096; the BPF ring holds this times the CPUs)")
      ->check(CLI::Range(4u, 1u << 20));
  kvm->add_option("--poll-ms", kopts.poll_ms, "how often the trace buffers are read (default 100)")
      ->check(CLI::Range(1.0, 1000.0));
  kvm->add_option("--backend", kopts.backend,
                  "how to read the tracepoints: bpf, tracefs, or auto (bpf, else tracefs)")
      ->check(CLI::IsMember({"auto", "bpf", "tracefs"}))
      ->default_str(kopts.backend);
  kvm->add_option("--ready-file", kopts.ready_file, "create this file once tracing is armed");
  kvm->add_option("--accel-from", kopts.accel_from,
                  "read the KVM modules' acceleration parameters from this tree "
                  "(<dir>/kvm_intel/parameters/enable_apicv, ...) instead of /sys/module");
  kvm->add_option("--debugfs-kvm", kopts.paths.debugfs_kvm, "KVM's debugfs directory")
      ->default_str(kopts.paths.debugfs_kvm);

  return kvm;
}

int Main(int argc, char** argv) {
  CLI::App app{"ipitrace: find where a lost inter-processor interrupt vanished "
               "in a QEMU/TCG guest"};
  app.set_version_flag("--version", kVersion);
  app.require_subcommand(1);
  Args g;
  auto* analyze = AddAnalyze(app, &g);
  auto* dump = app.add_subcommand(
      "dump", "Print the merged timeline of both streams (TSC order)");
  dump->add_option("SNAPSHOT_DIR", g.dir, "snapshot directory")->required();
  dump->add_option("--limit", g.limit, "print at most N records (0: all)");
  auto* watch = AddWatch(app, &g);
  auto* exportc = app.add_subcommand(
      "export", "Export a snapshot for other tools (Chrome trace-event timeline)");
  exportc->add_option("--timeline", g.timeline_out,
                      "write a Chrome trace-event JSON (chrome://tracing, "
                      "Perfetto UI) to this file")
      ->required();
  exportc->add_option("SNAPSHOT_DIR", g.dir, "snapshot directory")->required();
  auto* verdicts =
      app.add_subcommand("verdicts", "List the verdicts: name, loss or not, the stage it names, meaning");
  verdicts->add_flag("--json", g.verdicts_json,
                     "as JSON: {schema_version, verdicts: [{name, loss, normal, stage, meaning}]}");
  auto* kvm = AddKvmSource(app, &g);
  auto* claim = app.add_subcommand(
      "claim", "Mark a guest region file, before the guest boots, as meant for ipitrace: "
               "the guest module writes only into an ivshmem device whose region is "
               "claimed (or the one its device= parameter names).  Creates the file "
               "(sparse, mode 0666) or claims an existing ipitrace region or zeroed "
               "file; refuses one holding other data (exit 10), changing nothing");
  claim->add_option("FILE", g.claim_path, "the file behind the ivshmem device")->required();
  claim->add_option("--size-mb", g.claim_mb, "its size in MiB (extended if smaller)")
      ->required()
      ->check(CLI::PositiveNumber);
  auto* kvm_events = app.add_subcommand(
      "kvm-events",
      "List the KVM tracepoints the KVM source reads, one per line: name, "
      "required or optional, the kernel-side filter it sets (or -), and "
      "'start' for one it reads only at its start (tab-separated)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ipitrace::ErrorCode::kUsage);
  }
  if (analyze->parsed()) return RunAnalyze(g.dir, g.json, g.threshold_ms, g.settle_ms);
  if (dump->parsed()) return RunDump(g.dir, g.limit);
  if (watch->parsed()) return RunWatch(g.specs, g.wopts, g.poll_ms, g.duration_s);
  if (exportc->parsed()) return RunExport(g.dir, g.timeline_out);
  if (kvm->parsed()) return RunKvmSource(g.kopts);
  if (claim->parsed()) {
    const ipitrace::Status s = ipitrace::ClaimGuestRegion(g.claim_path, g.claim_mb << 20);
    return s.ok() ? 0 : Fail(s);
  }
  if (verdicts->parsed()) return RunVerdicts(g.verdicts_json);
  if (kvm_events->parsed()) {
    for (const ipitrace::KvmEventSpec& e : ipitrace::KvmEventSpecs())
      fmt::print("{}\t{}\t{}\t{}\n", e.name, e.required ? "required" : "optional",
                 e.filter ? e.filter : "-", e.start_only ? "start" : "always");
    return 0;
  }
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
