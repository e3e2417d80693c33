// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_ANALYZER_H_
#define IPITRACE_HOST_AGENT_ANALYZER_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu_map.h"
#include "ring_index.h"
#include "result.h"
#include "snapshot.h"
#include "stats.h"
#include "tracker.h"

namespace ipitrace {

// Per guest CPU counters for cross-checking the two streams.
struct CpuSummary {
  uint32_t cpu = 0;
  int32_t vcpu = -1;
  uint32_t apic_id = IPT_APIC_ID_NONE;
  bool matched = false;
  // H_ACK of the two call-function vectors on the vCPU's ring with tsc >=
  // the guest header's start_tsc, and all of them.
  uint64_t hv_ack_callfunc = 0;
  uint64_t hv_ack_callfunc_total = 0;
  // G_IRQ_ENTRY of the two call-function vectors on the CPU's guest ring.
  uint64_t guest_irq_callfunc = 0;
};

// Per-stage latency over served-by-ipi requests, in TSC ticks.
struct StageLatency {
  std::string name;  // "send->IRR", "IRR->ACK", "ACK->IRQ", "IRQ->function"
  uint64_t count = 0;
  uint64_t p50 = 0;
  uint64_t p99 = 0;
  uint64_t max = 0;
  // hist[b]: samples v with std::bit_width(v) == b, i.e. in [2^(b-1), 2^b)
  // ticks (hist[0]: v == 0).
  std::array<uint64_t, 65> hist{};
};

struct AnalyzerOptions {
  double threshold_ms = 10.0;  // served requests slower than this are listed
  // A missing asynchronous stage (TrackerInputs::settle_ticks) is a loss
  // only once the trace went on this long past the stage the request
  // reached; before, the request is in-flight.
  double settle_ms = kDefaultSettleMs;
  static constexpr double kDefaultSettleMs = 500.0;
  // Keep every request whole, with its evidence (the timeline draws every
  // IPI's chain; tests read any request).  Otherwise the analysis keeps
  // what the reports list: every request with a verdict other than
  // served-by-ipi / served-without-ipi, and the first kMaxListed
  // served-without-ipi ones.
  bool whole_requests = false;
};

// Guest-only mode (HvSource::guest_only): the one line every report prints,
// on what a hypervisor stream would add.
inline constexpr std::string_view kGuestOnlyNote =
    "guest-only: no hypervisor stream, so the verdicts are the guest's alone "
    "(lost-before-send, handler-missed-work, callback-stuck, and 'sent, never "
    "received: hypervisor stage unknown'); a hypervisor stream would name the "
    "stage where a sent IPI vanished (ICR write, routing, injection, guest entry)";

// A guest kernel without function records (GuestStages, before Linux 6.3):
// the one line every report prints, on what the verdicts then rest on.
inline constexpr std::string_view kNoFuncNote =
    "the guest kernel shows no function records (its csd tracepoints came in "
    "Linux 6.3): a request counts served when its target entered the "
    "call-function handler after the queue; handler-missed-work and "
    "callback-stuck are never judged, and a request no handler entry followed "
    "is service-unobserved";

// The most requests of one kind a report lists (the rest are counted).
inline constexpr size_t kMaxListed = 1000;

// Everything a report needs.  'stats' points at the Stats the analysis
// counted into (owned by the caller).
struct Analysis {
  Snapshot snapshot;
  const Stats* stats = nullptr;
  AnalyzerOptions options;
  RequestTable requests;
  std::array<uint64_t, kNumVerdicts> verdict_counts{};
  std::vector<CpuSummary> per_cpu;
  uint64_t tsc_khz = 0;
  std::vector<size_t> slow;  // served requests above threshold, slowest first
  std::vector<StageLatency> latency;  // empty when nothing was served by IPI
};

// Per-stage latency over the served-by-ipi requests, from their evidence
// (the first G_SEND, H_IRR, H_ACK, G_IRQ_ENTRY, G_FUNC_ENTRY of each chain).
std::vector<StageLatency> StageLatencies(const RequestTable& requests);
// The same from samples already gathered per stage (Tracker::latency_samples):
// count, p50, p99, max of each non-empty stage.  Reorders the samples.
std::vector<StageLatency> SummariseLatency(StageSamples samples);

// Analyzer runs the pipeline: load a snapshot, join CPUs to vCPUs, index
// the rings, follow every request, and summarise per CPU.  It is the one place main.cc and the
// tests enter, so both exercise the same path.
class Analyzer {
 public:
  Analyzer(Stats* stats, AnalyzerOptions options)
      : stats_(stats), options_(options) {}

  Result<Analysis> AnalyzeDir(const std::string& dir);
  Analysis Analyze(Snapshot snapshot);

 private:
  Analysis Analyze(Snapshot snapshot, std::shared_ptr<const RingIndex> index);

  Stats* stats_;
  AnalyzerOptions options_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_ANALYZER_H_
