// SPDX-License-Identifier: MIT
// The command line and CPU clock of watch_rss.
#ifndef IPITRACE_HOST_AGENT_BENCH_STREAM_ARGS_H_
#define IPITRACE_HOST_AGENT_BENCH_STREAM_ARGS_H_

#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace ipitrace::bench {

// RECORDS [CPUS] [LOSS_EVERY] ...: false (after printing usage) when
// RECORDS is missing.
struct StreamArgs {
  uint64_t records = 0;
  uint32_t cpus = 8;
  uint64_t loss_every = 100000;
};
inline bool ParseStreamArgs(int argc, char** argv, const char* usage, StreamArgs* a) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s\n", usage);
    return false;
  }
  a->records = std::strtoull(argv[1], nullptr, 10);
  if (argc > 2) a->cpus = static_cast<uint32_t>(std::atoi(argv[2]));
  if (argc > 3) a->loss_every = std::strtoull(argv[3], nullptr, 10);
  return true;
}

// CPU time of the process, in seconds.
inline double CpuSeconds() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace ipitrace::bench

#endif  // IPITRACE_HOST_AGENT_BENCH_STREAM_ARGS_H_
