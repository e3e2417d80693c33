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

class JsonReport {
 public:
  explicit JsonReport(const Analysis* analysis) : a_(analysis) {}

  nlohmann::ordered_json Build() const;

 private:
  nlohmann::ordered_json RequestJson(const Request& r) const;
  const Analysis* a_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_JSON_REPORT_H_
