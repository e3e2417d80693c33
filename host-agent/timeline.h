// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_TIMELINE_H_
#define IPITRACE_HOST_AGENT_TIMELINE_H_

#include <string>

#include "analyzer.h"
#include "result.h"

namespace ipitrace {

// Writes a Chrome trace-event JSON (chrome://tracing, ui.perfetto.dev) of an
// analysed snapshot: one process per vCPU with a guest track (guest CPU
// ring) and a host track (QEMU vCPU ring); IRQ handlers and csd functions
// as slices, other records as short slices; one flow arrow per followed IPI
// through G_SEND -> H_ICR -> H_IRR -> H_ACK -> G_IRQ_ENTRY -> G_FUNC_ENTRY
// (as far as its chain goes).  Timestamps are microseconds from the
// earliest record (TSC ticks when tsc_khz is unknown).
Status WriteTimeline(const Analysis& a, const std::string& path);

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_TIMELINE_H_
