// SPDX-License-Identifier: MIT
#include "result.h"

#include <cstdio>
#include <cstdlib>

namespace ipitrace::internal {

void CheckFailed(const char* cond, const char* file, int line) {
  std::fprintf(stderr, "ipitrace: internal error: CHECK(%s) failed at %s:%d\n",
               cond, file, line);
  std::abort();
}

}  // namespace ipitrace::internal
