// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_RING_MERGE_H_
#define IPITRACE_HOST_AGENT_RING_MERGE_H_

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "records.h"
#include "snapshot.h"

namespace ipitrace {

// One lane of a merge: a sequence in its own program order (a ring's
// records, or a ring's G_QUEUE list), and its rank among lanes for ties.
struct MergeLane {
  uint64_t rank;
  uint32_t size;
};

// The one merge of the agent's streams: lanes joined into one order by
// TSC, ties by lane rank, each lane's own order never changed (a ring
// whose TSC went backwards keeps its program order).  Every record carries
// the one guest TSC clock, so a k-way merge is all it takes: a binary
// min-heap of lane heads whose top is replaced in place by its lane's next
// element and sifted down (one pass instead of pop + push).  The tracker
// follows requests in this order (lanes: the source rings' G_QUEUE lists,
// rank: CPU); `dump` and the timeline list records in it (lanes: every
// ring, rank: guest before hypervisor, then ring index).
//
// tsc(lane, k) is element k's TSC; visit(lane, k) is called for every
// element in merged order.  Lanes of size 0 are skipped.
template <typename Tsc, typename Visit>
void MergeLanes(std::span<const MergeLane> lanes, Tsc&& tsc, Visit&& visit) {
  struct Head {
    uint64_t tsc;
    uint64_t rank;
    uint32_t lane;
    uint32_t k;
  };
  auto later = [](const Head& a, const Head& b) {
    return a.tsc != b.tsc ? a.tsc > b.tsc : a.rank > b.rank;
  };
  std::vector<Head> heap;
  heap.reserve(lanes.size());
  for (uint32_t i = 0; i < lanes.size(); ++i)
    if (lanes[i].size) heap.push_back({tsc(i, uint32_t{0}), lanes[i].rank, i, 0});
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    Head& top = heap.front();
    visit(top.lane, top.k);
    if (++top.k < lanes[top.lane].size) {
      top.tsc = tsc(top.lane, top.k);
    } else {
      top = heap.back();
      heap.pop_back();
      if (heap.empty()) break;
    }
    // Sift the top down.
    size_t i = 0;
    const Head h = heap[0];
    for (;;) {
      size_t c = 2 * i + 1;
      if (c >= heap.size()) break;
      if (c + 1 < heap.size() && later(heap[c], heap[c + 1])) ++c;
      if (!later(h, heap[c])) break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = h;
  }
}

// A reference to one accepted record of a snapshot.
struct RecordRef {
  StreamKind stream = StreamKind::kGuest;
  uint32_t ring = 0;  // ring index in its region
  const ipt_record* rec = nullptr;
};

// Every record of a snapshot in MergeLanes order: one timeline of both
// streams.  Ties: guest before hypervisor, lower ring first.
std::vector<RecordRef> MergedRecords(const Snapshot& snap);

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_RING_MERGE_H_
