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

}  // namespace ipitrace
