// SPDX-License-Identifier: MIT
#include "records.h"

namespace ipitrace {

std::string_view StreamName(StreamKind kind) {
  return kind == StreamKind::kGuest ? "guest" : "hv";
}

std::string_view RecordTypeName(uint16_t type) {
  switch (type) {
#define IPT_NAME_CASE(name, value, desc) \
  case value:                            \
    return #name;
    IPT_RECORD_TYPES(IPT_NAME_CASE)
#undef IPT_NAME_CASE
    default:
      return "";
  }
}

bool IsKnownRecordType(uint16_t type) { return !RecordTypeName(type).empty(); }

bool RecordHasTarget(uint16_t type) {
  switch (type) {
    case IPT_G_QUEUE:
    case IPT_G_SEND:
    case IPT_G_ELIDE:
    case IPT_G_HANG:
    case IPT_H_IRR:
    case IPT_H_KICK:
    case IPT_H_HELD:
    case IPT_H_NMI:
    case IPT_H_INIT:
    case IPT_H_SIPI:
      return true;
    default:
      return false;
  }
}

}  // namespace ipitrace
