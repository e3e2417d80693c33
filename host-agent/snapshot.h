// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_SNAPSHOT_H_
#define IPITRACE_HOST_AGENT_SNAPSHOT_H_

#include <string>

#include <nlohmann/json.hpp>

#include "region_reader.h"
#include "result.h"
#include "stats.h"

namespace ipitrace {

// Both regions of one snapshot, validated and copied.
struct Snapshot {
  std::string dir;
  Region hv;
  Region guest;
  nlohmann::ordered_json manifest;  // null when missing or invalid
};

// SnapshotLoader reads a snapshot directory: manifest.json (optional,
// passed through to reports), hv.region and guest.region.  The directory
// also holds faults.jsonl (fault-injection ground truth) and console.log;
// the agent never opens them, so a verdict can never be informed by the
// answer it is graded against.
class SnapshotLoader {
 public:
  explicit SnapshotLoader(Stats* stats) : stats_(stats) {}

  Result<Snapshot> Load(const std::string& dir);

 private:
  Stats* stats_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_SNAPSHOT_H_
