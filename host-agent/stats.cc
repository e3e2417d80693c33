// SPDX-License-Identifier: MIT
#include "stats.h"

#include "result.h"

namespace ipitrace {
namespace {

struct StatInfo {
  std::string_view name;
  Severity severity;
  std::string_view description;
};

constexpr StatInfo kStatInfo[] = {
#define IPT_STAT_INFO(name, sev, desc) {#name, Severity::sev, desc},
    IPT_STATS(IPT_STAT_INFO)
#undef IPT_STAT_INFO
};
static_assert(sizeof(kStatInfo) / sizeof(kStatInfo[0]) == kNumStats);

const StatInfo& Info(StatId id) {
  IPT_CHECK(static_cast<size_t>(id) < kNumStats);
  return kStatInfo[static_cast<size_t>(id)];
}

}  // namespace

std::string_view Stats::Name(StatId id) { return Info(id).name; }
Severity Stats::SeverityOf(StatId id) { return Info(id).severity; }
std::string_view Stats::Description(StatId id) { return Info(id).description; }

std::string_view Stats::SeverityName(Severity s) {
  switch (s) {
    case Severity::kInfo:
      return "info";
    case Severity::kDataLoss:
      return "data_loss";
    case Severity::kError:
      return "error";
  }
  return "?";
}

}  // namespace ipitrace
