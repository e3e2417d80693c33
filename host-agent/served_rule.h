// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_SERVED_RULE_H_
#define IPITRACE_HOST_AGENT_SERVED_RULE_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "ipitrace_abi.h"

namespace ipitrace {

// The served rule (docs/streams.md, "Following one request", step 6),
// written once for every consumer: the offline tracker (Tracker::
// FindService, Tracker::CheckCallbackExit) and watch's live hang screen
// (HangScreen).  A request (its G_QUEUE) is served by the first record on
// its target, at or after its queue TSC, that carries its key:
//   kCsd      a G_FUNC_ENTRY with the request's csd (a[1]);
//   kFunc     TTWU and csd-less requests: a G_FUNC_ENTRY with its function
//             (a[0]);
//   kCallfunc irq_work requests have no function record: the first
//             call-function G_IRQ_ENTRY or G_FUNC_ENTRY.  So is every
//             request of a guest kernel that shows no function records
//             (GuestStages, before Linux 6.3): its target's handler, entered
//             after the queue, stands for the function.
enum class ServedBy : uint8_t { kCsd, kFunc, kCallfunc };

struct ServedKey {
  ServedBy by;
  uint64_t value;  // the csd or the function; 0 for kCallfunc
  bool operator==(const ServedKey&) const = default;
};

// The key a request's G_QUEUE waits for; func_observed: whether the guest
// kernel shows function records (GuestStages::Observes(IPT_G_STAGE_FUNC)).
constexpr ServedKey ServedKeyOf(const ipt_record& queue, bool func_observed) {
  if (queue.flags == IPT_CSD_IRQ_WORK || !func_observed) return {ServedBy::kCallfunc, 0};
  if (queue.flags == IPT_CSD_TTWU || queue.a[1] == 0) return {ServedBy::kFunc, queue.a[0]};
  return {ServedBy::kCsd, queue.a[1]};
}

// The keys a record on the target serves (none, one or three), given the
// region's two call-function vectors.
struct ServedKeys {
  std::array<ServedKey, 3> keys{};
  size_t size = 0;
};
constexpr ServedKeys KeysServedBy(const ipt_record& r, uint8_t vec_call_function,
                                  uint8_t vec_call_function_single) {
  ServedKeys k;
  if (r.type == IPT_G_FUNC_ENTRY) {
    k.keys = {ServedKey{ServedBy::kCsd, r.a[1]}, ServedKey{ServedBy::kFunc, r.a[0]},
              ServedKey{ServedBy::kCallfunc, 0}};
    k.size = 3;
  } else if (r.type == IPT_G_IRQ_ENTRY &&
             (r.vector == vec_call_function || r.vector == vec_call_function_single)) {
    k.keys[0] = {ServedBy::kCallfunc, 0};
    k.size = 1;
  }
  return k;
}

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_SERVED_RULE_H_
