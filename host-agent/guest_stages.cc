// SPDX-License-Identifier: MIT
#include "guest_stages.h"

#include <cctype>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

namespace ipitrace {

namespace {

constexpr std::string_view StageRecords(unsigned stage) {
  switch (stage) {
#define IPT_G_STAGE_CASE(name, index, recs, desc) \
  case index:                                     \
    return recs;
    IPT_G_STAGES(IPT_G_STAGE_CASE)
#undef IPT_G_STAGE_CASE
  }
  return "?";
}

constexpr std::string_view StageKeyOf(unsigned stage) {
  switch (stage) {
#define IPT_G_STAGE_KEY(name, index, recs, desc) \
  case index:                                    \
    return #name;
    IPT_G_STAGES(IPT_G_STAGE_KEY)
#undef IPT_G_STAGE_KEY
  }
  return "?";
}

}  // namespace

GuestStages GuestStagesOf(const ipt_region_header& h) {
  static_assert(IPT_GHDR_EXT_OFFSET + sizeof(ipt_ghdr_ext) <= sizeof(ipt_region_header));
  ipt_ghdr_ext x;
  std::memcpy(&x, reinterpret_cast<const std::byte*>(&h) + IPT_GHDR_EXT_OFFSET, sizeof(x));
  GuestStages g;
  if (x.magic != IPT_GHDR_EXT_MAGIC) return g;  // unstated: a module before 1.2
  // Slots past the ABI's stages stay UNSTATED: nothing to observe there.
  for (size_t i = 0; i < GuestStages::kStages; ++i) {
    const uint8_t v = x.stage_src[i];
    g.src[i] = v <= IPT_G_SRC_NONE ? v : uint8_t{IPT_G_SRC_NONE};
  }
  return g;
}

bool GuestStages::ObservesRequired() const {
  return Observes(IPT_G_STAGE_QUEUE) && Observes(IPT_G_STAGE_SEND) &&
         Observes(IPT_G_STAGE_ELIDE) && Observes(IPT_G_STAGE_IRQ);
}

std::string GuestStages::StageKey(unsigned stage) {
  std::string k(StageKeyOf(stage));
  for (char& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return k;
}

std::string_view GuestStages::Source(unsigned stage) const {
  switch (stage < src.size() ? src[stage] : uint8_t{IPT_G_SRC_NONE}) {
    case IPT_G_SRC_UNSTATED:
    case IPT_G_SRC_TRACEPOINT:
      return "tracepoint";
    case IPT_G_SRC_KPROBE:
      return "kprobe";
    default:
      return "not observable";
  }
}

bool GuestStages::AllTracepoints() const {
  for (unsigned s = 0; s < kStages; ++s)
    if (Source(s) != "tracepoint") return false;
  return true;
}

std::string GuestStages::Describe() const {
  std::string out;
  for (unsigned s = 0; s < kStages; ++s) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} {}", StageRecords(s), Source(s));
  }
  return out;
}

}  // namespace ipitrace
