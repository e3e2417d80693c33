// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_MERGER_H_
#define IPITRACE_HOST_AGENT_MERGER_H_

#include <cstdint>
#include <vector>

#include "records.h"
#include "snapshot.h"

namespace ipitrace {

// A reference to one accepted record of a snapshot.
struct RecordRef {
  StreamKind stream = StreamKind::kGuest;
  uint32_t ring = 0;  // ring index in its region
  const ipt_record* rec = nullptr;
};

// Merger produces the single timeline of a snapshot: every ring is already
// in program order (ring order), and all records carry the one guest TSC
// clock, so a k-way merge by TSC joins them.  Ties keep guest before hv and
// lower ring first, and a ring's own order is never changed (even if its TSC
// went backwards), so per-CPU program order is preserved.
class Merger {
 public:
  explicit Merger(const Snapshot* snap) : snap_(snap) {}

  std::vector<RecordRef> Merge() const;

 private:
  const Snapshot* snap_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_MERGER_H_
