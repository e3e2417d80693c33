// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_JSON_REPORT_H_
#define IPITRACE_HOST_AGENT_JSON_REPORT_H_

#include <nlohmann/json.hpp>

#include "analyzer.h"

namespace ipitrace {

// JsonReport renders an Analysis as one JSON object for scripts (the Python
// harness compares it with fault-injection ground truth).  Keys are stable;
// every verdict and every stat appears even when zero, 64-bit pointers are
// hex strings, TSCs are integers.  Schema: see docs in main.cc --help and
// the top-level keys built below.
// The data-problem table (every stat, zero or not: name, severity, count,
// description), as every report and watch's hang events carry it.
nlohmann::ordered_json StatsTableJson(const Stats& stats);

// JsonReport renders an Analysis as one JSON object (what `analyze --json`
// prints and watch writes beside a hang): it reads the analysis' results
// and decides nothing itself.
class JsonReport {
 public:
  explicit JsonReport(const Analysis* analysis) : a_(analysis) {}

  nlohmann::ordered_json Build() const;

 private:
  nlohmann::ordered_json RequestJson(const Request& r) const;
  // The parts of Build(): losses, unresolved and served-without-IPI
  // requests (with their evidence); the slowest served; the per-stage
  // latencies; the per-CPU counts.
  void AddRequestLists(nlohmann::ordered_json* out) const;
  static nlohmann::ordered_json SlowJson(const Analysis& a);
  static nlohmann::ordered_json LatencyJson(const Analysis& a);
  static nlohmann::ordered_json PerCpuJson(const Analysis& a);
  const Analysis* a_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_JSON_REPORT_H_
