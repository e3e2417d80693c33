// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_REGION_READER_H_
#define IPITRACE_HOST_AGENT_REGION_READER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ipitrace_abi.h"
#include "records.h"
#include "result.h"
#include "stats.h"

namespace ipitrace {

// A slot of a ring's valid window that held no acceptable record (torn: seq
// mismatch; or a record with an out-of-range cpu id).  tsc_bound is the TSC
// of the next accepted record in the ring (UINT64_MAX if none): the lost
// record was written no later than that.
struct RingGap {
  uint64_t index;
  uint64_t tsc_bound;
};

// One ring after validation: the accepted records in program order.
struct Ring {
  uint32_t index = 0;  // position in the region
  uint32_t cpu = 0;    // writer CPU / vCPU (IPT_CPU_NONE: misc ring)
  uint32_t flags = 0;
  uint64_t head = 0;         // records ever written
  uint64_t capacity = 0;
  uint64_t dropped = 0;      // producer-side drops (ring header)
  uint64_t first_index = 0;  // first index of the valid window
  uint64_t overwritten = 0;  // records lost to wrap (head - capacity)
  std::vector<ipt_record> records;  // accepted, ascending seq
  std::vector<RingGap> gaps;        // torn / rejected slots in the window

  bool empty() const { return records.empty(); }
  uint64_t first_tsc() const { return records.empty() ? 0 : records.front().tsc; }
  uint64_t last_tsc() const { return records.empty() ? 0 : records.back().tsc; }
};

struct Symbol {
  uint64_t addr = 0;
  uint32_t offset = 0;
  uint32_t size = 0;
  std::string name;
};

// A validated region: a private copy of its header and of every record.
struct Region {
  StreamKind kind = StreamKind::kGuest;
  ipt_region_header header{};
  std::vector<Ring> rings;
  std::vector<Symbol> symbols;
  // cpu id -> index into rings, -1 when absent.
  std::array<int32_t, IPT_MAX_CPUS> ring_of_cpu{};
  int32_t misc_ring = -1;  // ring with cpu == IPT_CPU_NONE (hv only)

  const Ring* RingForCpu(uint32_t cpu) const {
    if (cpu >= IPT_MAX_CPUS || ring_of_cpu[cpu] < 0) return nullptr;
    return &rings[static_cast<size_t>(ring_of_cpu[cpu])];
  }
  // Symbol for a function pointer, or nullptr.
  const Symbol* FindSymbol(uint64_t addr) const;
};

// RegionReader turns untrusted bytes (a mapped file that a producer may still
// be writing, or a test buffer) into a Region.
//
// Every field is read exactly once into a local copy (the header, each ring
// header, each record slot) and validated on the copy, so a concurrent
// writer or a hostile file can make the result wrong but never make the
// reader read out of bounds.  Layout problems (magic, ABI major, sizes that
// do not fit) are an error Status; per-ring and per-record problems are
// counted in Stats and the offending ring/record is skipped.
//
// Ring protocol (abi/ipitrace_abi.h): the valid window of a ring is
// [max(0, head - capacity), head); slot i % capacity is accepted only if its
// seq equals i.
class RegionReader {
 public:
  explicit RegionReader(Stats* stats) : stats_(stats) {}

  // 'name' appears in error messages ("hv.region").
  Result<Region> Read(std::span<const std::byte> bytes, StreamKind kind,
                      std::string_view name);

 private:
  Status Fail(StatId id, ErrorCode code, std::string message);
  void ReadRing(std::span<const std::byte> bytes, uint64_t offset,
                uint32_t index, Region* region);
  void ReadSymbols(std::span<const std::byte> bytes, Region* region);

  Stats* stats_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_REGION_READER_H_
