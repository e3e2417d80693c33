// SPDX-License-Identifier: MIT
#include "verdict.h"

#include "result.h"

namespace ipitrace {
namespace {

constexpr std::string_view kVerdictNames[] = {
#define IPT_VERDICT_NAME(e, name, loss, stage, meaning) name,
    IPT_VERDICTS(IPT_VERDICT_NAME)
#undef IPT_VERDICT_NAME
};
static_assert(sizeof(kVerdictNames) / sizeof(kVerdictNames[0]) == kNumVerdicts);
constexpr std::string_view kVerdictMeanings[] = {
#define IPT_VERDICT_MEANING(e, name, loss, stage, meaning) meaning,
    IPT_VERDICTS(IPT_VERDICT_MEANING)
#undef IPT_VERDICT_MEANING
};
constexpr Stage kVerdictStages[] = {
#define IPT_VERDICT_STAGE(e, name, loss, stage, meaning) Stage::stage,
    IPT_VERDICTS(IPT_VERDICT_STAGE)
#undef IPT_VERDICT_STAGE
};

// A reference beyond EvidenceChain's inline ones: stream (bit 48), ring
// (bits 32..47), position.

}  // namespace

std::string_view VerdictName(Verdict v) {
  IPT_CHECK(static_cast<size_t>(v) < kNumVerdicts);
  return kVerdictNames[static_cast<size_t>(v)];
}

std::string_view VerdictMeaning(Verdict v) {
  IPT_CHECK(static_cast<size_t>(v) < kNumVerdicts);
  return kVerdictMeanings[static_cast<size_t>(v)];
}

std::string_view StageName(Stage s) {
  static constexpr std::string_view kNames[] = {
#define IPT_STAGE_NAME(e, name) name,
      IPT_STAGES(IPT_STAGE_NAME)
#undef IPT_STAGE_NAME
  };
  const auto i = static_cast<size_t>(s);
  IPT_CHECK(i < sizeof(kNames) / sizeof(kNames[0]));
  return kNames[i];
}

Stage VerdictStage(Verdict v) {
  IPT_CHECK(static_cast<size_t>(v) < kNumVerdicts);
  return kVerdictStages[static_cast<size_t>(v)];
}

}  // namespace ipitrace
