// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_STREAMING_H_
#define IPITRACE_HOST_AGENT_STREAMING_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "ipitrace_abi.h"
#include "records.h"
#include "tracker.h"

namespace ipitrace {

// One record of the merged (TSC-ordered) stream.
struct StreamRecord {
  StreamKind stream = StreamKind::kGuest;
  ipt_record rec{};  // rec.cpu = writer CPU / vCPU
};

// A pull source of TSC-ordered records (a snapshot's merged timeline, a
// live follower, or a synthetic generator).
class RecordSource {
 public:
  virtual ~RecordSource() = default;
  virtual bool Next(StreamRecord* out) = 0;
};

// SyntheticSource generates 'requests' call-function requests round-robin
// over 'cpus' CPUs (guest CPU i = vCPU i), each a full chain of 8 records
// (QUEUE, SEND, ICR, IRR, ACK, IRQ_ENTRY, FUNC_ENTRY, FUNC_EXIT), and drops
// the IRR (and everything after it) of every loss_every-th request (0: no
// losses): a route fault.  Records come out in TSC order; nothing is stored.
class SyntheticSource : public RecordSource {
 public:
  static constexpr uint8_t kVecSingle = 0xfb;
  static constexpr uint8_t kVecMask = 0xfc;
  SyntheticSource(uint64_t requests, uint32_t cpus, uint64_t loss_every);
  bool Next(StreamRecord* out) override;
  uint64_t records() const { return emitted_; }

 private:
  void Fill();
  uint64_t requests_, loss_every_;
  uint32_t cpus_;
  uint64_t next_req_ = 0;
  std::array<StreamRecord, 8> batch_{};
  uint32_t batch_len_ = 0, batch_pos_ = 0;
  std::vector<uint64_t> seq_;  // per (stream, cpu) ring seq
  uint64_t emitted_ = 0;
};

struct StreamOptions {
  uint8_t vec_call_function = SyntheticSource::kVecMask;
  uint8_t vec_call_function_single = SyntheticSource::kVecSingle;
  // A stage that has not matched within this many TSC ticks of stream time
  // is a loss at that stage (the streaming counterpart of "the ring goes
  // on"); also the hang threshold of watch.
  uint64_t window_ticks = 100'000'000;
  // guest CPU -> vCPU (identity when empty).
  std::vector<int32_t> vcpu_of_cpu;
};

// StreamTracker follows requests in one pass over a TSC-ordered stream and
// keeps only outstanding requests: memory is bounded by the number of
// requests in flight (slab + free list), not by trace length.  It applies
// the stage logic of Tracker (docs/streams.md) with a stream-time window in
// place of look-ahead; verdicts are counted, and the first 'keep_losses'
// loss requests are kept for reports.
class StreamTracker {
 public:
  explicit StreamTracker(StreamOptions options);
  void Push(const StreamRecord& r);
  // End of stream: every request still open is in-flight.
  void Finish();

  const std::array<uint64_t, kNumVerdicts>& counts() const { return counts_; }
  uint64_t records() const { return records_; }
  size_t open() const { return open_; }
  size_t peak_open() const { return peak_open_; }
  size_t slab_capacity() const { return slab_.size(); }

 private:
  enum Stage : uint8_t { kDecide, kIcr, kIrr, kAck, kIrq, kServe, kRider, kFree };
  struct Req {
    Stage stage = kFree;
    bool served = false;
    bool elided = false;
    uint8_t vector = 0;
    uint16_t src = 0, dst = 0;  // guest CPUs
    uint32_t epoch = 0;         // bumped at each stage change (timeouts)
    uint64_t csd = 0, func = 0, icr_seq = 0;
    uint64_t queue_tsc = 0, stage_tsc = 0;
  };
  struct Timeout {
    uint64_t deadline;
    uint32_t id;
    uint32_t epoch;
  };
  uint32_t Alloc();
  void Resolve(uint32_t id, Verdict v);
  void Advance(uint32_t id, Stage s, uint64_t tsc);
  void Expire(uint64_t now);
  int32_t Vcpu(uint32_t cpu) const;
  void Erase(std::vector<uint32_t>* v, uint32_t id);

  StreamOptions o_;
  std::vector<Req> slab_;
  std::vector<uint32_t> free_;
  std::deque<Timeout> timeouts_;  // deadlines are monotone: one FIFO
  // Per guest CPU (target): open requests in queue order.
  std::vector<std::vector<uint32_t>> open_by_target_;
  // Per (source, target): the request awaiting its send decision.
  std::vector<uint32_t> undecided_;  // [src * kMax + dst], UINT32_MAX none
  // Per vCPU: requests awaiting ICR (on the source), IRR (source), ACK
  // (target); per guest CPU: awaiting IRQ entry.
  std::vector<std::vector<uint32_t>> await_icr_, await_irr_, await_ack_, await_irq_;
  std::vector<uint64_t> last_ack_tsc_;  // per vCPU: any ACK (injection vs blocked)
  std::vector<uint64_t> loss_queue_tsc_;  // per target: queue tsc of its last unserved loss
  std::array<uint64_t, kNumVerdicts> counts_{};
  uint64_t records_ = 0;
  size_t open_ = 0, peak_open_ = 0;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_STREAMING_H_
