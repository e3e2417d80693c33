// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_VERDICT_H_
#define IPITRACE_HOST_AGENT_VERDICT_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ipitrace {

// The stages of docs/streams.md, "Following one request", in chain order
// (X(enumerator, name)), then two that are not on the chain: a loss between
// two observed stages whose in-between the source cannot see, and "none"
// (verdicts that name no stage).  A Request records the last stage its
// chain reached (Request::reached); a loss verdict names the stage where
// the chain broke.
#define IPT_STAGES(X)                   \
  X(kQueue, "queue")                    \
  X(kSendDecision, "send decision")     \
  X(kIcr, "ICR")                        \
  X(kRouting, "routing")                \
  X(kAcknowledge, "acknowledge")        \
  X(kGuestEntry, "guest entry")         \
  X(kService, "service")                \
  X(kUnobserved, "unobserved")          \
  X(kNone, "-")

enum class Stage : uint8_t {
#define IPT_STAGE_ENUM(e, name) e,
  IPT_STAGES(IPT_STAGE_ENUM)
#undef IPT_STAGE_ENUM
};
std::string_view StageName(Stage s);

// X(enumerator, name, is_loss, stage, meaning).  Loss verdicts name the
// stage of docs/streams.md ("Following one request") where an IPI
// vanished; the others say it did not (or that the data cannot tell), and
// name none ("-").  The one table: `ipitrace verdicts --json` publishes
// it, and the harness reads it from there.
#define IPT_VERDICTS(X)                                                       \
  X(kServedByIpi, "served-by-ipi", false, kNone, "served through its own IPI (full chain)") \
  X(kServedWithoutIpi, "served-without-ipi", false, kNone,                    \
    "served by an idle flush, a polling wake or an IPI it rode on")           \
  X(kLostBeforeSend, "lost-before-send", true, kSendDecision,                 \
    "queued, target not polling, but the guest never sent an IPI")            \
  X(kLostGuestToHypervisor, "lost-guest-to-hypervisor", true, kIcr,           \
    "the guest sent it, the hypervisor saw no ICR write for it")              \
  X(kLostInRouting, "lost-in-routing", true, kRouting,                        \
    "ICR write seen, the target's IRR never set for it")                      \
  X(kLostInInjection, "lost-in-injection", true, kAcknowledge,                \
    "IRR set, the target acknowledged other vectors, never this one")         \
  X(kTargetBlocked, "target-blocked", true, kAcknowledge,                     \
    "IRR set, the target acknowledged nothing at all since")                  \
  X(kLostInGuestEntry, "lost-in-guest-entry", true, kGuestEntry,              \
    "acknowledged by the vCPU, the guest never entered its handler")          \
  X(kHandlerMissedWork, "handler-missed-work", true, kService,                \
    "the target's handler ran after the queue but not this request")          \
  X(kCallbackStuck, "callback-stuck", true, kService,                         \
    "the function entered and never returned")                                \
  X(kLostInUnobservedStage, "lost-in-unobserved-stage", true, kUnobserved,    \
    "lost between two observed stages; the ones in between are invisible to " \
    "the source (named, with what would show them)")                          \
  X(kInconclusiveGap, "inconclusive-gap", false, kNone,                       \
    "a ring lost records in the window that matters")                         \
  X(kQueuedBehindLoss, "queued-behind-loss", false, kNone,                    \
    "rode on an IPI that was itself lost; the blame stays with that one")     \
  X(kServiceUnobserved, "service-unobserved", false, kNone,                   \
    "no handler entry followed it, and the guest kernel cannot show whether " \
    "its function ran (no function records before Linux 6.3)")                \
  X(kInFlight, "in-flight", false, kNone, "still on its way at the end of the trace")

enum class Verdict : uint8_t {
#define IPT_VERDICT_ENUM(e, name, loss, stage, meaning) e,
  IPT_VERDICTS(IPT_VERDICT_ENUM)
#undef IPT_VERDICT_ENUM
      kNumVerdicts
};
inline constexpr size_t kNumVerdicts = static_cast<size_t>(Verdict::kNumVerdicts);

std::string_view VerdictName(Verdict v);
std::string_view VerdictMeaning(Verdict v);
// The stage a loss verdict names (Stage::kNone for the others).
Stage VerdictStage(Verdict v);
// Loss verdicts name a stage (the third column of IPT_VERDICTS).
inline bool IsLoss(Verdict v) {
  static constexpr bool kLoss[] = {
#define IPT_VERDICT_LOSS(e, name, loss, stage, meaning) loss,
      IPT_VERDICTS(IPT_VERDICT_LOSS)
#undef IPT_VERDICT_LOSS
  };
  static_assert(sizeof(kLoss) / sizeof(kLoss[0]) == kNumVerdicts);
  const auto i = static_cast<size_t>(v);
  return i < kNumVerdicts && kLoss[i];
}
// Normal outcomes: served-by-ipi, served-without-ipi.  Every other verdict
// gets a TargetActivity and a slice in the text report.
inline bool IsNormal(Verdict v) {
  return v == Verdict::kServedByIpi || v == Verdict::kServedWithoutIpi;
}

// The reasons a normal verdict can have: RequestTable rows store an index,
// and the tracker sets them by index (a string only where one is needed).
enum class NormalReason : uint8_t {
  kFullChain,
  kFlushBeforeIpi,
  kElidedServedOnWakeup,
  kRodeOnPendingIpi,
  kIpiFatePastEnd,
  kLaterIpiUnobservedAck,
  kLaterIpiCoalesceUnobserved,
  kNone,  // the request's reason is its own string
};
inline constexpr std::string_view kNormalReasons[] = {
    "full chain",
    "served by a flush before its IPI arrived",
    "IPI elided (target polling); served on wakeup",
    "no IPI of its own (rode on a pending IPI); served by a flush",
    "served; its IPI's fate is past the end of the trace",
    "served by a handler entered after a later IPI of the vector; whether its own "
    "IPI arrived is not observable (the source cannot see the acknowledge)",
    "served by an acknowledge that followed a later IRR set of the vector; whether its "
    "own IPI coalesced with that one or vanished is not observable (the source cannot "
    "see coalescing)",
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_VERDICT_H_
