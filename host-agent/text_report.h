// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_TEXT_REPORT_H_
#define IPITRACE_HOST_AGENT_TEXT_REPORT_H_

#include <string>

#include "analyzer.h"

namespace ipitrace {

// TextReport renders an Analysis for a human: verdict counts, each loss
// with the chain of records that supports it, slow requests, per-CPU
// cross-checks, the ring windows and the data-quality table (non-zero
// stats), so a verdict is never read without the data quality beneath it.
class TextReport {
 public:
  explicit TextReport(const Analysis* analysis) : a_(analysis) {}

  std::string Render() const;

 private:
  std::string FuncName(uint64_t func) const;
  // The parts of Render(), in order: each loss with its evidence and the
  // target's rings around it; the first unresolved requests; the stage
  // latencies and slowest requests; per-CPU counts, ring windows and the
  // data-problem table.
  void AppendLosses(std::string* out) const;
  void AppendUnresolved(std::string* out) const;
  void AppendLatencyAndSlow(std::string* out) const;
  void AppendCpusAndQuality(std::string* out) const;
  const Analysis* a_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_TEXT_REPORT_H_
