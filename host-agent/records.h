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
bool IsKnownRecordType(uint16_t type);
// True for record types whose 'target' field names a CPU/vCPU.
bool RecordHasTarget(uint16_t type);

// True iff bit 'vcpu' is set in an H_ICR target bitmap (a[0..3]).
inline bool IcrTargets(const ipt_record& icr, uint32_t vcpu) {
  if (vcpu >= IPT_MAX_CPUS) return false;
  return (icr.a[vcpu / 64] >> (vcpu % 64)) & 1u;
}

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_RECORDS_H_
