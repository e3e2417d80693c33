// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_HANG_SCREEN_H_
#define IPITRACE_HOST_AGENT_HANG_SCREEN_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "file_bytes.h"
#include "ipitrace_abi.h"
#include "records.h"
#include "served_rule.h"
#include "stats.h"

namespace ipitrace {

// HangScreen follows two live regions (QEMU's and the guest's) in one pass
// and keeps only what is outstanding: the requests (G_QUEUE) whose function
// has not run on the target yet.  It is what `ipitrace watch` polls; only
// when its oldest request has waited longer than the hang threshold does
// watch copy the regions and run the full analysis (the verdict).  So
// watch's memory while following VMs is bounded by the outstanding
// requests, not by the length of the trace or the size of the regions.
//
// Each Update() reads, from each guest ring, only the records written since
// the previous call (each copied once, under the SIGBUS guard, and accepted
// only if its seq is the index expected), and from each hv ring only its
// header and newest record (for stream time).
//
// "Served" is the full analysis's rule, the one in served_rule.h (a
// request is served by the target's first record at or after its queue TSC
// that carries its key).  Records arrive ring by ring, so an entry can be read
// before the queue it serves: per key, the newest entry TSC is kept, and a
// queue with an entry at or after it is served on arrival.
//
// Everything read is untrusted: the layout is checked as RegionReader
// checks it; a hostile guest that queues without end is capped at
// kMaxOutstanding requests (the oldest are kept: they are the hang
// candidates) and kMaxKeys keys (then the key table starts over, which can
// only make a request look outstanding, i.e. cost a full analysis).
class HangScreen {
 public:
  static constexpr size_t kMaxOutstanding = size_t{1} << 20;
  static constexpr size_t kMaxKeys = size_t{1} << 16;

  enum class UpdateResult {
    kOk,
    kNotReady,  // a header is not (yet) a valid ipitrace layout
    kSigbus,    // a mapping shrank under us: the caller detaches
  };
  struct CorruptRing {
    StreamKind stream;
    uint32_t ring;
    uint64_t head, previous_head;
  };
  struct Outstanding {
    uint16_t source_cpu;
    uint16_t target_cpu;
    uint64_t queue_tsc;
  };

  // Reads what the rings gained since the last call.  A region whose
  // generation changed (the producer re-initialised it) starts over; a ring
  // whose head moved backwards within one generation is latched corrupt
  // (reported once in *corrupt, then ignored until the next generation).
  // An empty hv: guest-only, the guest's rings alone.
  UpdateResult Update(std::span<const std::byte> hv, std::span<const std::byte> guest,
                      std::vector<CorruptRing>* corrupt);

  // The oldest outstanding request (smallest queue TSC), if any.
  std::optional<Outstanding> Oldest() const;
  // Forgets the outstanding requests queued at or before tsc (after watch
  // has had the full analysis look at them).
  void DropQueuedUpTo(uint64_t tsc);
  void Reset();

  uint64_t newest_tsc() const { return newest_tsc_; }
  uint32_t tsc_khz() const { return tsc_khz_; }
  // Whether the region's generation changed in the last Update (the
  // caller forgets what it reported).
  bool restarted() const { return restarted_; }
  // Whether each ring of the stream is latched corrupt, by ring index: what
  // a reader of a copy of the region must distrust (RegionReader::Read's
  // distrusted).
  std::vector<bool> CorruptRings(StreamKind stream) const;
  size_t outstanding() const { return by_tsc_.size(); }
  size_t keys() const { return latest_.size(); }
  // Records read so far.
  uint64_t records() const { return records_; }
  // The data problems seen while following, in the one table (Stats):
  // torn_record, unknown_record_type, ring_overwritten (lost to ring wrap
  // between two updates), ring_head_backwards (rings latched corrupt),
  // screen_requests_not_kept.  Since the screen was made; Reset() keeps them.
  const Stats& stats() const { return stats_; }

 private:
  struct Key {
    uint16_t target;
    ServedKey served;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return (k.served.value * 0x9E3779B97F4A7C15ull) ^ (uint64_t{k.target} << 8) ^
             static_cast<uint8_t>(k.served.by);
    }
  };
  struct Layout {
    uint64_t header_size = 0, ring_stride = 0, generation = 0;
    uint32_t ring_count = 0, capacity = 0, tsc_khz = 0;
    uint8_t vcf = 0, vcfs = 0;
    bool func_observed = true;  // guest: GuestStages::Observes(IPT_G_STAGE_FUNC)
  };
  struct RingState {
    uint64_t cursor = 0;  // next index to read
    uint64_t head = 0;    // last head seen
    uint64_t last_tsc = 0;  // TSC of the newest record accepted
    bool corrupt = false;
  };
  struct Entry {
    Outstanding o;
    Key key;
  };
  using ByTsc = std::multimap<uint64_t, Entry>;
  static constexpr uint64_t kChunk = 4096;  // records copied at a time

  UpdateResult ReadLayout(const SigbusGuard& guard, std::span<const std::byte> bytes,
                          StreamKind kind, Layout* out);
  bool ReadRings(const SigbusGuard& guard, std::span<const std::byte> bytes, StreamKind kind,
                 const Layout& l, std::vector<CorruptRing>* corrupt);
  void OnGuestRecord(const ipt_record& r, uint32_t ring_cpu, const Layout& l);
  void Serve(const Key& key, uint64_t tsc);
  void Queue(const Key& key, const Outstanding& o);
  void Unlink(ByTsc::iterator e);

  Layout layout_[2];                      // [0] hv, [1] guest
  std::vector<RingState> rings_[2];
  std::vector<int32_t> cpu_of_ring_;      // guest ring -> its CPU, -1 if none/duplicate
  std::array<int32_t, IPT_MAX_CPUS> ring_of_cpu_{};  // guest CPU -> its ring, -1 if none
  ByTsc by_tsc_;
  std::unordered_map<Key, std::vector<ByTsc::iterator>, KeyHash> waiting_;
  std::unordered_map<Key, uint64_t, KeyHash> latest_;  // newest entry TSC per key
  std::vector<ipt_record> buf_;
  uint64_t newest_tsc_ = 0;
  uint32_t tsc_khz_ = 0;
  bool started_ = false, restarted_ = false;
  uint64_t records_ = 0;
  Stats stats_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_HANG_SCREEN_H_
