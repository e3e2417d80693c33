// SPDX-License-Identifier: MIT
//
// stream_rss RECORDS [CPUS] [LOSS_EVERY]: runs the streaming tracker over a
// synthetic stream of about RECORDS records and prints one JSON line:
// records, seconds, records_per_s, max_rss_mib, peak_open, verdict counts.
// Used by scripts/bench-agent.sh for the 1-billion-record memory bound.
#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/stream_args.h"
#include "streaming.h"

int main(int argc, char** argv) {
  ipitrace::bench::StreamArgs args;
  if (!ipitrace::bench::ParseStreamArgs(argc, argv, "stream_rss RECORDS [CPUS] [LOSS_EVERY]",
                                        &args))
    return 2;
  const uint64_t records = args.records;
  const uint32_t cpus = args.cpus;
  const uint64_t loss_every = args.loss_every;
  // ~8 records per request.
  ipitrace::SyntheticSource src(records / 8, cpus, loss_every);
  ipitrace::StreamOptions o;
  o.window_ticks = 10'000'000;  // 10k requests of stream time
  ipitrace::StreamTracker t(o);
  auto cpu_now = ipitrace::bench::CpuSeconds;
  const double c0 = cpu_now();
  const auto t0 = std::chrono::steady_clock::now();
  ipitrace::StreamRecord r;
  while (src.Next(&r)) t.Push(r);
  t.Finish();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_now() - c0;
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  std::string counts;
  for (size_t v = 0; v < ipitrace::kNumVerdicts; ++v) {
    if (!t.counts()[v]) continue;
    counts += (counts.empty() ? "" : ",");
    counts += "\"" + std::string(ipitrace::VerdictName(static_cast<ipitrace::Verdict>(v))) +
              "\":" + std::to_string(t.counts()[v]);
  }
  std::printf("{\"records\":%llu,\"wall_s\":%.3f,\"cpu_s\":%.3f,"
              "\"records_per_cpu_s\":%.0f,\"records_per_wall_s\":%.0f,"
              "\"max_rss_mib\":%.1f,\"peak_open\":%zu,\"verdicts\":{%s}}\n",
              static_cast<unsigned long long>(t.records()), secs, cpu,
              static_cast<double>(t.records()) / cpu,
              static_cast<double>(t.records()) / secs,
              static_cast<double>(ru.ru_maxrss) / 1024.0, t.peak_open(), counts.c_str());
  return 0;
}
