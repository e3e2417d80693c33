// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_TESTING_REGION_BUILDER_H_
#define IPITRACE_HOST_AGENT_TESTING_REGION_BUILDER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ipitrace_abi.h"
#include "records.h"

namespace ipitrace::testing {

// RegionBuilder synthesises a region in memory exactly as a producer would
// lay it out (header, ring headers, slots, optional symbol table), so tests
// can build precise scenarios, including wrapped and torn rings, and then
// corrupt the bytes at will.
class RegionBuilder {
 public:
  static constexpr uint8_t kVecCallFunction = 0xfc;
  static constexpr uint8_t kVecCallFunctionSingle = 0xfb;
  static constexpr uint8_t kVecReschedule = 0xfd;
  static constexpr uint32_t kTscKhz = 1'000'000;  // 1 ms = 1e6 ticks

  // Ring i is written by cpu i; an hv region with misc_ring gets one more
  // ring with cpu IPT_CPU_NONE.
  RegionBuilder(StreamKind kind, uint32_t cpus, uint32_t capacity,
                bool misc_ring = false);

  ipt_region_header& header() { return header_; }
  ipt_ring_header& ring_header(uint32_t ring) { return rings_.at(ring).header; }

  // Writes rec into ring's next slot with the ring protocol: seq = head,
  // cpu = ring cpu (unless set), then head++.  Returns the seq.
  uint64_t Append(uint32_t ring, ipt_record rec);
  // Overwrites the seq of the slot holding 'index' (a torn record).
  void Tear(uint32_t ring, uint64_t index);
  // name NUL [module NUL], as the module writes them; 'raw' (48 bytes) is
  // copied as it is (a hostile table).
  void AddSymbol(uint64_t addr, const char* name, uint32_t size, const char* module = nullptr,
                 uint32_t offset = 0);
  void AddRawSymbol(uint64_t addr, const char (&raw)[48]);

  std::vector<std::byte> Bytes() const;

 private:
  struct RingData {
    ipt_ring_header header{};
    std::vector<ipt_record> slots;
  };
  uint64_t stride_ = 0;  // real layout, even if a test edits the header
  ipt_region_header header_{};
  std::vector<RingData> rings_;
  std::vector<ipt_sym> syms_;
};

}  // namespace ipitrace::testing

#endif  // IPITRACE_HOST_AGENT_TESTING_REGION_BUILDER_H_
