// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_KVM_EVENTS_H_
#define IPITRACE_HOST_AGENT_KVM_EVENTS_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvm_translator.h"
#include "result.h"

namespace ipitrace {

// The KVM tracepoints the source reads (system "kvm"): the one list, which
// both readers follow (KvmTracefs enables these events and decodes these
// fields; KvmBpf attaches the program of the same name) and which `ipitrace
// kvm-events` prints for the benchmarks.  Optional ones may be missing on
// older kernels or other vendors; start_only ones are turned off once they
// served (kvm_entry: the thread map).  kvm_pv_eoi is not read: KVM traces
// kvm_eoi for a PV EOI too.
struct KvmEventSpec {
  const char* name;
  bool required;
  const char* filter;  // kernel-side filter (tracefs syntax), or null
  bool start_only;
  KvmEvent::Kind kind;                // what a reader makes of it
  std::array<const char*, 5> fields;  // into KvmEvent::f (null: 0)
};
std::span<const KvmEventSpec> KvmEventSpecs();

// A reader of the host's KVM tracepoints for one VM: hands the translator
// the VM's events in host-TSC order, with a kLost event where the kernel
// side dropped some.  Two implementations, chosen by measurement
// (results/kvm-bench.md): KvmBpf (BPF programs on the tracepoints, one ring
// buffer) and KvmTracefs (an ftrace instance, its per-CPU buffers).
class KvmEventReader {
 public:
  virtual ~KvmEventReader() = default;
  // Appends the events stamped at or before now_tsc - margin_ticks, in
  // host-TSC order; later ones are held for the next poll (an event being
  // committed on another CPU while we read is released next time).
  virtual Status Poll(uint64_t now_tsc, uint64_t margin_ticks, std::vector<KvmEvent>* out) = 0;
  // Stops tracing and appends every event still held.
  virtual Status Drain(std::vector<KvmEvent>* out) = 0;
  // Stops reading kvm_entry (once the thread map is checked).
  virtual void StopEntryEvents() = 0;
  // Events the kernel side dropped (known counts).
  virtual uint64_t KernelDropped() const = 0;
  // "kvm-bpf" or "kvm-tracefs": the source name in the region header.
  virtual const char* name() const = 0;
  // Where it reads from, for the log.
  virtual std::string where() const = 0;
};

// KvmEventOrder puts runs of events read from several CPUs (each run in
// order, or nearly: it is sorted) into one host-TSC order and releases
// them up to a time.  Its buffers are kept between calls: no allocation
// once they have grown.
class KvmEventOrder {
 public:
  // Takes run's events (sorting it, stably, if needed) and clears it.
  void Add(std::vector<KvmEvent>* run);
  void Release(uint64_t upto, std::vector<KvmEvent>* out);
  size_t held() const { return held_.size(); }

 private:
  std::vector<KvmEvent> held_, merged_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_KVM_EVENTS_H_
