// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_SNAPSHOT_H_
#define IPITRACE_HOST_AGENT_SNAPSHOT_H_

#include <string>

#include <nlohmann/json.hpp>

#include "region_reader.h"
#include "result.h"
#include "stats.h"

namespace ipitrace {

// Both regions of one snapshot, validated; records viewed in place in the
// mapped region files where possible (see RegionReader).
struct Snapshot {
  std::string dir;
  Region hv;
  Region guest;
  nlohmann::ordered_json manifest;  // null when missing or invalid

  // Non-empty when a region file shrank while it was mapped: some records
  // read as zeros, and anything computed from them must be discarded.
  std::string Truncated() const;
};

// SnapshotLoader reads a snapshot directory: manifest.json (optional,
// passed through to reports), hv.region and guest.region (mapped, see
// RegionBytes; or PATH.zst, decompressed).  The directory
// also holds faults.jsonl (fault-injection ground truth) and console.log;
// the agent never opens them, so a verdict can never be informed by the
// answer it is graded against.
class SnapshotLoader {
 public:
  // 'sink' (optional) sees every ring as it is read (RegionReader).
  explicit SnapshotLoader(Stats* stats, RingSink* sink = nullptr)
      : stats_(stats), sink_(sink) {}

  Result<Snapshot> Load(const std::string& dir);

 private:
  Stats* stats_;
  RingSink* sink_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_SNAPSHOT_H_
