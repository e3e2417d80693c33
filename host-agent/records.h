// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_RECORDS_H_
#define IPITRACE_HOST_AGENT_RECORDS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ipitrace_abi.h"

namespace ipitrace {

// Which producer wrote a region: the guest module or the patched QEMU.
enum class StreamKind { kGuest, kHv };

std::string_view StreamName(StreamKind kind);

// Name of a record type from the ABI X-macro ("G_QUEUE"), or "" if unknown.
std::string_view RecordTypeName(uint16_t type);

namespace internal {
// Per record type below 64 (all of the ABI's): bit 0 known, bit 1 has a
// target.  A table, because the region reader asks for every record.
// bit 2: a marker of records the producer lost (H_GAP), which the reader
// turns into a RingGap instead of a record.
inline constexpr unsigned kTypeKnown = 1, kTypeHasTarget = 2, kTypeGap = 4;
struct RecordTypeTable {
  unsigned char bits[64] = {};
  constexpr RecordTypeTable() {
#define IPT_TYPE_BITS(name, value, desc) \
  static_assert((value) < 64);           \
  bits[value] = kTypeKnown;
    IPT_RECORD_TYPES(IPT_TYPE_BITS)
#undef IPT_TYPE_BITS
    for (unsigned t : {IPT_G_QUEUE, IPT_G_SEND, IPT_G_ELIDE, IPT_G_HANG, IPT_H_IRR,
                       IPT_H_KICK, IPT_H_HELD, IPT_H_NMI, IPT_H_INIT, IPT_H_SIPI})
      bits[t] |= kTypeHasTarget;
    bits[IPT_H_GAP] |= kTypeGap;
  }
};
inline constexpr RecordTypeTable kRecordTypeTable{};
inline unsigned RecordTypeBits(uint16_t type) {
  return type < 64 ? kRecordTypeTable.bits[type] : 0;
}
}  // namespace internal

inline bool IsKnownRecordType(uint16_t type) {
  return internal::RecordTypeBits(type) & internal::kTypeKnown;
}
// True for record types whose 'target' field names a CPU/vCPU.
inline bool RecordHasTarget(uint16_t type) {
  return internal::RecordTypeBits(type) & internal::kTypeHasTarget;
}

// True for H_GAP: the producer lost records before this one.
inline bool IsGapMarker(uint16_t type) {
  return internal::RecordTypeBits(type) & internal::kTypeGap;
}

// Record acceptance (docs/streams.md, "Trust"), the one rule every reader
// of a ring applies (RegionReader's copying and in-place passes, watch's
// HangScreen): the slot of index 'index' holds an acceptable record iff its
// seq is that index (else torn, overwritten or garbage), it is not a gap
// marker (the producer lost records before it: a gap, not a record), its
// type is known (else possibly a newer minor ABI: skipped), and its cpu and,
// for types that name one, its target are in range (< IPT_MAX_CPUS, or
// IPT_CPU_NONE).  In that order: the first failing check names the slot.
enum class RecordCheck : uint8_t { kOk, kTorn, kGapMarker, kUnknownType, kCpuOutOfRange };
inline constexpr size_t kRecordChecks = 5;
[[gnu::always_inline]] inline RecordCheck CheckRecord(uint64_t seq, uint16_t type, uint16_t cpu,
                                                      uint16_t target, uint64_t index) {
  const unsigned bits = internal::RecordTypeBits(type);
  // In range: < IPT_MAX_CPUS or IPT_CPU_NONE (0xffff + 1 wraps to 0).
  static_assert(IPT_CPU_NONE == 0xffff);
  const bool cpu_ok = static_cast<uint16_t>(cpu + 1) <= IPT_MAX_CPUS;
  const bool target_ok =
      !(bits & internal::kTypeHasTarget) || static_cast<uint16_t>(target + 1) <= IPT_MAX_CPUS;
  // Every check at once, without a branch per check (the readers' hot
  // loop); which one failed only for the rare slot that fails.
  if ((seq == index) & bool(bits & internal::kTypeKnown) & !(bits & internal::kTypeGap) &
      cpu_ok & target_ok) [[likely]]
    return RecordCheck::kOk;
  if (seq != index) return RecordCheck::kTorn;
  if (bits & internal::kTypeGap) return RecordCheck::kGapMarker;
  if (!(bits & internal::kTypeKnown)) return RecordCheck::kUnknownType;
  return RecordCheck::kCpuOutOfRange;
}
inline RecordCheck CheckRecord(const ipt_record& r, uint64_t index) {
  return CheckRecord(r.seq, r.type, r.cpu, r.target, index);
}

// Ring -> CPU (docs/streams.md, "Trust"), the one rule for every reader of
// a region (RegionReader, HangScreen): a ring serves the CPU (guest) or
// vCPU (hv) its header names if that is in range and no earlier ring of the
// region named it; the hv region's one ring of IPT_CPU_NONE holds records
// of no vCPU (kMisc).  The others serve nothing (kept, empty, so ring
// indexes stay positional).  ring_of_cpu (-1: none) and misc_ring record
// the claims so far.
enum class RingClaim : uint8_t { kCpu, kMisc, kOutOfRange, kDuplicate };
inline RingClaim ClaimRing(StreamKind kind, uint32_t cpu, uint32_t index,
                           std::array<int32_t, IPT_MAX_CPUS>* ring_of_cpu, int32_t* misc_ring) {
  if (cpu == IPT_CPU_NONE && kind == StreamKind::kHv) {
    if (*misc_ring >= 0) return RingClaim::kDuplicate;
    *misc_ring = static_cast<int32_t>(index);
    return RingClaim::kMisc;
  }
  if (cpu >= IPT_MAX_CPUS) return RingClaim::kOutOfRange;
  if ((*ring_of_cpu)[cpu] >= 0) return RingClaim::kDuplicate;
  (*ring_of_cpu)[cpu] = static_cast<int32_t>(index);
  return RingClaim::kCpu;
}

// True iff an H_ICR may have been meant for 'vcpu': its bit is set in the
// target bitmap (a[0..3]), or the source could not resolve the destination
// (IPT_ICR_F_UNRESOLVED: the bitmap holds only the targets it saw reached).
inline bool IcrTargets(const ipt_record& icr, uint32_t vcpu) {
  if (vcpu >= IPT_MAX_CPUS) return false;
  if (icr.flags & IPT_ICR_F_UNRESOLVED) return true;
  return (icr.a[vcpu / 64] >> (vcpu % 64)) & 1u;
}

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_RECORDS_H_
