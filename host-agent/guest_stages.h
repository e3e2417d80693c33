// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_GUEST_STAGES_H_
#define IPITRACE_HOST_AGENT_GUEST_STAGES_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "ipitrace_abi.h"

namespace ipitrace {

// How the guest module observed each guest stage (IPT_G_STAGES) on its
// kernel: the header extension's stage_src (ABI 1.2).  Linux 6.3 added the
// csd:* and ipi:ipi_send_* tracepoints; before it the module sees the
// queue and the send through kprobes and cannot see the function a request
// runs.  The agent then judges a request up to its target's call-function
// handler and never blames the service (docs/streams.md, "Guest kernels
// before 6.3").  Read once per region by GuestStagesOf; RegionReader and
// the live HangScreen both call it.
struct GuestStages {
  // IPT_G_SRC_* per IPT_G_STAGE_*; UNSTATED (a module before ABI 1.2, which
  // needed the tracepoints) counts as tracepoint.  A value the ABI does not
  // define reads as NONE: a stage nobody vouches for is never blamed.
  std::array<uint8_t, IPT_G_STAGE_MAX> src{};

  bool Observes(unsigned stage) const {
    return stage < src.size() && src[stage] != IPT_G_SRC_NONE;
  }
  // The stages a tracker needs: the queue, the send, the elision and the
  // handler's entry.  A region without one of them cannot be analysed.
  bool ObservesRequired() const;
  // The stages the ABI defines (QUEUE .. FUNC).
  static constexpr unsigned kStages = IPT_G_STAGE_FUNC + 1;
  // "queue", "send", ...: the stage's key in reports.
  static std::string StageKey(unsigned stage);
  // "tracepoint", "kprobe" or "not observable".
  std::string_view Source(unsigned stage) const;
  bool AllTracepoints() const;
  // "G_QUEUE kprobe, G_SEND kprobe, ..., G_FUNC_ENTRY/EXIT not observable".
  std::string Describe() const;
  bool operator==(const GuestStages&) const = default;
};

GuestStages GuestStagesOf(const ipt_region_header& h);

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_GUEST_STAGES_H_
