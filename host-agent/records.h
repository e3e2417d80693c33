// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_RECORDS_H_
#define IPITRACE_HOST_AGENT_RECORDS_H_

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
