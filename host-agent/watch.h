// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_WATCH_H_
#define IPITRACE_HOST_AGENT_WATCH_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "analyzer.h"
#include "hang_screen.h"
#include "mapped_file.h"
#include "result.h"
#include "snapshot.h"
#include "stats.h"

namespace ipitrace {

struct WatchOptions {
  double hang_ms = 1000.0;    // a request outstanding longer than this is a hang
  std::string out_dir = ".";  // where hang snapshots are written
  double threshold_ms = 10.0;
  double settle_ms = AnalyzerOptions::kDefaultSettleMs;  // see AnalyzerOptions
};

// One VM to follow: its two live region files (QEMU's and the ivshmem BAR).
struct WatchTarget {
  std::string name;
  std::string hv_path;  // empty: guest-only (no hypervisor stream)
  std::string guest_path;
  bool guest_only() const { return hv_path.empty(); }
};

// Parses a command-line VM spec: a directory (DIR/hv.region and
// DIR/guest.region), "HV_FILE:GUEST_FILE", or ":GUEST_FILE" for a guest
// without a hypervisor stream (guest-only: docs/streams.md).
WatchTarget ParseWatchTarget(const std::string& spec);

// Watcher follows live regions: every Poll() it (re)attaches to the files
// (a replaced file - new inode, size or header generation - is re-opened; a
// vanished file detaches the VM) and reads what the rings gained since the
// last poll into a HangScreen, which keeps only the outstanding requests.
// When one has been outstanding longer than hang_ms in stream time (the
// newest TSC of any ring, plus the wall time since the rings last moved),
// it copies both mappings once under a SIGBUS guard, runs the full analysis
// over the copy and reports the worst such request: it writes
// DIR/<vm>-hang-<n>/ (hv.region, guest.region, manifest.json, report.txt,
// report.json) and emits hang_detected once per request.  Between hangs
// nothing is copied and nothing is analysed, so watch's memory is bounded
// by the outstanding requests (HangScreen), not by the trace or region
// size.
//
// Events (JSON objects, one per line on stdout in `ipitrace watch`), each
// first stamped {"schema_version":kWatchEventSchemaVersion,"time":unix
// seconds (wall clock),"monotonic_ns":the poll's monotonic clock}, then:
//   {"event":"vm_attached","vm":..,"hv":..,"guest":..,"generation":..}
//   {"event":"hang_detected","vm":..,"snapshot":DIR,"verdict":..,...}
//   {"event":"vm_detached","vm":..,"reason":..}
inline constexpr int kWatchEventSchemaVersion = 1;

class Watcher {
 public:
  Watcher(std::vector<WatchTarget> targets, WatchOptions options);
  ~Watcher();

  // One round over every VM; returns the events it produced.  now_ns is a
  // monotonic wall clock (tests pass their own).
  std::vector<nlohmann::ordered_json> Poll(uint64_t now_ns);
  // How many polls copied the regions and ran the full analysis (only
  // those that found a request outstanding longer than hang_ms).
  uint64_t full_checks() const { return full_checks_; }

 private:
  struct Vm;
  void PollVm(Vm* vm, uint64_t now_ns, std::vector<nlohmann::ordered_json>* ev);
  // Copies the regions, runs the analysis and reports the worst request
  // outstanding longer than hang_ms, if any.
  void FullCheck(Vm* vm, uint64_t newest, uint64_t khz, double idle_ms,
                 std::vector<nlohmann::ordered_json>* ev);
  // FullCheck's steps: the copies read as a snapshot (the rings the screen
  // latched corrupt emptied, its counters in *stats); the request to report
  // (unserved past hang_ms, not reported before; a loss before its riders,
  // then the oldest); the hang's snapshot directory with its reports.
  std::optional<Snapshot> ReadCopies(const Vm& vm, std::span<const std::byte> hv_copy,
                                     std::span<const std::byte> guest_copy, Stats* stats) const;
  std::optional<size_t> Worst(const Vm& vm, const Analysis& a, uint64_t newest, uint64_t khz,
                              double idle_ms, double* worst_ms) const;
  bool WriteHangSnapshot(const Vm& vm, const std::string& dir,
                         std::span<const std::byte> hv_copy,
                         std::span<const std::byte> guest_copy, Analysis* a) const;
  bool Attach(Vm* vm, std::vector<nlohmann::ordered_json>* ev);
  void Detach(Vm* vm, const std::string& reason,
              std::vector<nlohmann::ordered_json>* ev);

  WatchOptions options_;
  std::vector<std::unique_ptr<Vm>> vms_;
  uint64_t snapshots_ = 0;
  uint64_t full_checks_ = 0;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_WATCH_H_
