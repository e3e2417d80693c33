// SPDX-License-Identifier: MIT
#include "merger.h"

#include <queue>
#include <tuple>

namespace ipitrace {

std::vector<RecordRef> Merger::Merge() const {
  struct Cursor {
    uint64_t tsc;
    int stream;  // 0 guest, 1 hv
    uint32_t ring;
    size_t pos;
  };
  auto later = [](const Cursor& a, const Cursor& b) {
    return std::tie(a.tsc, a.stream, a.ring) > std::tie(b.tsc, b.stream, b.ring);
  };
  std::priority_queue<Cursor, std::vector<Cursor>, decltype(later)> heap(later);
  const Region* regions[2] = {&snap_->guest, &snap_->hv};
  size_t total = 0;
  for (int s = 0; s < 2; ++s) {
    for (const Ring& r : regions[s]->rings) {
      total += r.records.size();
      if (!r.records.empty()) heap.push({r.records[0].tsc, s, r.index, 0});
    }
  }
  std::vector<RecordRef> out;
  out.reserve(total);
  while (!heap.empty()) {
    Cursor c = heap.top();
    heap.pop();
    const Ring& ring = regions[c.stream]->rings[c.ring];
    out.push_back({c.stream == 0 ? StreamKind::kGuest : StreamKind::kHv, c.ring,
                   &ring.records[c.pos]});
    if (++c.pos < ring.records.size()) {
      c.tsc = ring.records[c.pos].tsc;
      heap.push(c);
    }
  }
  return out;
}

}  // namespace ipitrace
