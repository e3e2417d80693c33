// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_STATS_H_
#define IPITRACE_HOST_AGENT_STATS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ipitrace {

enum class Severity { kInfo, kDataLoss, kError };

// Every data problem the agent can notice in a snapshot:
// X(name, severity, description).  Severity: kInfo (noteworthy, analysis
// unaffected), kDataLoss (records are missing; verdicts near the gap become
// inconclusive), kError (the region was rejected).
#define IPT_STATS(X)                                                          \
  X(region_truncated, kError,                                                 \
    "region shorter than its header, ring layout or declared size")           \
  X(bad_magic, kError, "region magic is not IPITRACE")                        \
  X(abi_major_mismatch, kError, "region ABI major version not supported")     \
  X(abi_minor_newer, kInfo, "region ABI minor newer than the agent's")        \
  X(header_field_out_of_range, kError,                                        \
    "a region header field is inconsistent or out of range")                  \
  X(producer_mismatch, kError, "region written by the wrong producer")        \
  X(region_not_ready, kInfo, "region header READY flag not set")              \
  X(region_still_tracing, kInfo,                                              \
    "producer was still recording when the snapshot was taken")               \
  X(ring_cpu_out_of_range, kDataLoss,                                         \
    "ring header cpu id out of range; ring ignored")                          \
  X(ring_cpu_duplicate, kDataLoss,                                            \
    "two rings claim the same cpu id; later ring ignored")                    \
  X(ring_overwritten, kDataLoss,                                              \
    "records lost to ring wrap (flight recorder kept the newest)")            \
  X(records_dropped, kDataLoss,                                               \
    "records the producer chose not to write (ring header dropped)")          \
  X(torn_record, kDataLoss,                                                   \
    "slot seq did not match its index (torn or overwritten during read)")     \
  X(unknown_record_type, kInfo, "record of a type the agent does not know")   \
  X(cpu_out_of_range, kDataLoss,                                              \
    "record cpu/target id out of range; record ignored")                      \
  X(record_cpu_mismatch, kInfo, "record cpu differs from its ring's cpu")     \
  X(tsc_backwards, kInfo, "TSC went backwards within one ring")               \
  X(ring_head_backwards, kDataLoss,                                           \
    "ring head moved backwards while followed live; ring latched corrupt "   \
    "until the producer re-initialises")                                      \
  X(unmatched_cpu_map, kInfo,                                                 \
    "guest CPU without a matching vCPU APIC ID; identity map used")           \
  X(missing_ring, kDataLoss, "a CPU/vCPU a request needs has no ring")        \
  X(request_bad_target, kDataLoss,                                            \
    "G_QUEUE with a target that has no guest ring; request skipped")          \
  X(symbol_table_invalid, kInfo,                                              \
    "symbol table out of bounds; function names not resolved")               \
  X(manifest_missing, kInfo, "snapshot has no manifest.json")                 \
  X(manifest_invalid, kInfo, "manifest.json is not valid JSON")               \
  X(tsc_khz_unknown, kInfo, "tsc_khz is zero; latencies not converted")       \
  X(hv_source_gap, kDataLoss,                                                 \
    "H_GAP markers: the hypervisor source lost records there (per ring)")     \
  X(hv_source_lost, kDataLoss,                                                \
    "records the hypervisor source lost (buffer overrun, unmapped thread)")   \
  X(hv_source_unknown, kInfo,                                                 \
    "KVM source region without its header extension; no hv stage blamed")     \
  X(hv_stage_unobserved, kInfo,                                               \
    "the hypervisor source cannot observe some stages; none of them blamed")  \
  X(guest_stage_unobserved, kInfo,                                            \
    "the guest kernel cannot show some stages (before 6.3: the function run); "\
    "none of them blamed")                                                    \
  X(guest_stages_missing, kError,                                             \
    "guest region whose kernel showed no queue, send, elision or handler")    \
  X(screen_requests_not_kept, kInfo,                                          \
    "outstanding requests watch's live screen did not keep (over its cap, "   \
    "the newest first); the full analysis of a hang still judges them")

enum class StatId : size_t {
#define IPT_STAT_ENUM(name, sev, desc) name,
  IPT_STATS(IPT_STAT_ENUM)
#undef IPT_STAT_ENUM
      kNumStats
};

inline constexpr size_t kNumStats = static_cast<size_t>(StatId::kNumStats);

// Stats counts data problems by StatId.  One instance is shared (by pointer)
// by every stage of an analysis, and every report prints it, so a verdict can
// always be read next to the data quality it rests on.
class Stats {
 public:
  void Increment(StatId id, uint64_t n = 1) {
    counts_[static_cast<size_t>(id)] += n;
  }
  uint64_t Get(StatId id) const { return counts_[static_cast<size_t>(id)]; }
  // Adds every count of other (e.g. the live screen's to a hang's analysis).
  void Add(const Stats& other) {
    for (size_t i = 0; i < kNumStats; ++i) counts_[i] += other.counts_[i];
  }

  static std::string_view Name(StatId id);
  static Severity SeverityOf(StatId id);
  static std::string_view Description(StatId id);
  static std::string_view SeverityName(Severity s);

 private:
  std::array<uint64_t, kNumStats> counts_{};
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_STATS_H_
