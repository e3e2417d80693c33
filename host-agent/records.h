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
inline constexpr unsigned kTypeKnown = 1, kTypeHasTarget = 2;
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

// True iff bit 'vcpu' is set in an H_ICR target bitmap (a[0..3]).
inline bool IcrTargets(const ipt_record& icr, uint32_t vcpu) {
  if (vcpu >= IPT_MAX_CPUS) return false;
  return (icr.a[vcpu / 64] >> (vcpu % 64)) & 1u;
}

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_RECORDS_H_
