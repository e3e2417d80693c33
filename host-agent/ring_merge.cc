// SPDX-License-Identifier: MIT
#include "ring_merge.h"

namespace ipitrace {

std::vector<RecordRef> MergedRecords(const Snapshot& snap) {
  struct Lane {
    StreamKind stream;
    const Ring* ring;
  };
  std::vector<Lane> rings;
  std::vector<MergeLane> lanes;
  size_t total = 0;
  for (const Region* region : {&snap.guest, &snap.hv}) {
    const uint64_t stream = region == &snap.guest ? 0 : 1;
    for (const Ring& r : region->rings) {
      rings.push_back({region->kind, &r});
      lanes.push_back({(stream << 32) | r.index, static_cast<uint32_t>(r.records.size())});
      total += r.records.size();
    }
  }
  std::vector<RecordRef> out;
  out.reserve(total);
  MergeLanes(
      lanes, [&](uint32_t lane, uint32_t k) { return rings[lane].ring->records[k].tsc; },
      [&](uint32_t lane, uint32_t k) {
        out.push_back({rings[lane].stream, rings[lane].ring->index, &rings[lane].ring->records[k]});
      });
  return out;
}

}  // namespace ipitrace
