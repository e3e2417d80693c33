// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_KVM_BPF_H_
#define IPITRACE_HOST_AGENT_KVM_BPF_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvm_events.h"
#include "result.h"

struct kvm_source_bpf;
struct ring_buffer;
struct bpf_link;
struct ipt_kvm_bpf_event;

namespace ipitrace {

// MonoTscMap turns CLOCK_MONOTONIC nanoseconds (what a BPF program can
// read: bpf_ktime_get_ns) into host TSC ticks (what the translator needs:
// KVM's guest TSC is the host TSC plus the vCPU's offset).  Both count the
// same TSC on a host whose clocksource is the TSC; the kernel converts with
// a multiplier NTP may adjust, so the map keeps pairs (ns, tsc) sampled
// together at every poll and interpolates linearly between the two around
// an instant (extrapolating from the nearest segment outside them).
class MonoTscMap {
 public:
  explicit MonoTscMap(uint32_t tsc_khz)
      : nominal_rate_((uint64_t{tsc_khz} << 32) / 1000000) {}
  // Samples the two clocks now (the closest of three tries).
  void Sample();
  // Adds a pair (tests; Sample() uses it).  Pairs come in time order.
  void Add(uint64_t ns, uint64_t tsc);
  uint64_t Tsc(uint64_t ns) const;
  // Pairs older than this many are dropped (an event is converted within
  // a poll or two of its time).
  static constexpr size_t kKeep = 64;

 private:
  // A pair, and the rate (TSC ticks per ns, 32.32 fixed point) of the
  // segment that ends at it (from the previous pair): converting an event
  // is a multiply, not a 128-bit division.
  struct Pair {
    uint64_t ns, tsc;
    uint64_t rate = 0;
  };
  uint64_t Extrapolate(const Pair& p, uint64_t rate, uint64_t ns) const;
  std::deque<Pair> pairs_;
  uint64_t nominal_rate_;  // from tsc_khz, until two pairs give one
  mutable size_t last_ = 0;  // the segment the previous event fell in
};

// KvmBpf reads the host's KVM tracepoints for one VM with BPF programs
// (bpf/kvm_source.bpf.c, one per tracepoint of KvmEventSpecs(), attached as
// raw tracepoints): each keeps only the VM's threads and copies the
// tracepoint's arguments into one ring buffer; the collector reads it
// without a system call per event.
//
// Why BPF first: on the nested bed the tracefs path cost the guest three
// times the floor of the enabled tracepoints (the ftrace write, then a
// read, a copy and a decode per event in the collector); the programs skip
// the ftrace buffer and the decoding (results/kvm-bench.md).  Events are
// stamped with CLOCK_MONOTONIC (MonoTscMap turns it into host TSC) and
// ordered by it across CPUs (KvmEventOrder).  Needs BTF (the kvm_eoi and
// kvm_entry programs read vcpu_id by CO-RE) and 6.12's tracepoint
// arguments; Open() fails with the reason otherwise, and the source falls
// back to KvmTracefs.  Nothing outlives the process: the programs and the
// ring are released with its file descriptors.
class KvmBpf : public KvmEventReader {
 public:
  struct Options {
    int32_t pid = 0;            // the VM's QEMU process (its tgid)
    uint32_t ring_kb = 8192;    // ring buffer, rounded up to a power of two
    bool trace_entry = true;    // kvm_entry, to check the thread map
    uint32_t tsc_khz = 0;
  };
  static Result<std::unique_ptr<KvmBpf>> Open(const Options& o);
  ~KvmBpf() override;

  Status Poll(uint64_t now_tsc, uint64_t margin_ticks, std::vector<KvmEvent>* out) override;
  Status Drain(std::vector<KvmEvent>* out) override;
  void StopEntryEvents() override;
  uint64_t KernelDropped() const override { return dropped_; }
  const char* name() const override { return "kvm-bpf"; }
  std::string where() const override;

  // The ring buffer's records, converted (tests: made-up records).
  static void Convert(const ipt_kvm_bpf_event& raw, const MonoTscMap& clock, KvmEvent* ev);

 private:
  explicit KvmBpf(uint32_t tsc_khz) : clock_(tsc_khz) {}
  static int OnRecord(void* self, void* data, size_t size);
  Status ReadRing();
  // Converts one record into fresh_, counting what the kernel dropped.
  void Take(const ipt_kvm_bpf_event& r);

  kvm_source_bpf* skel_ = nullptr;
  ring_buffer* rb_ = nullptr;
  uint32_t ring_bytes_ = 0;
  MonoTscMap clock_;
  std::vector<uint8_t> raw_;     // one poll's records, as read
  std::vector<KvmEvent> fresh_;  // converted
  KvmEventOrder order_;
  std::vector<std::pair<const char*, struct bpf_link*>> links_;  // by event name
  uint64_t dropped_ = 0;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_KVM_BPF_H_
