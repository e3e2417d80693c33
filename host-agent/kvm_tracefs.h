// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_KVM_TRACEFS_H_
#define IPITRACE_HOST_AGENT_KVM_TRACEFS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvm_translator.h"
#include "result.h"

struct tep_handle;
struct tracefs_instance;
struct kbuffer;

namespace ipitrace {

// KvmTracefs reads the host's KVM tracepoints for one VM from a tracefs
// instance of its own (never the top-level buffer other tools use), with
// the x86-tsc clock, and decodes them into KvmEvents.
//
// Why tracefs and not BPF: the events are fixed-format tracepoints that
// ftrace already writes into per-CPU buffers without a program per event;
// reading those buffers page by page (trace_pipe_raw, decoded with
// libtraceevent's kbuffer) costs the host one copy per page, needs no
// compiler, BTF or verifier on the fleet's hosts, and tells exactly where
// the kernel overwrote events it could not keep (the page's missed-events
// count), which becomes an H_GAP.  The events are filtered in the kernel to
// the VM's threads (set_event_pid, event-fork) and, for kvm_hypercall, to
// KVM_HC_SEND_IPI.
//
// Each poll reads every CPU's buffer, merges the CPUs' events by host TSC,
// and releases those stamped before the poll began less a margin (an event
// being committed on another CPU while we read is released next time), so
// the translator sees one ordered stream.  Stop() releases the rest.
class KvmTracefs {
 public:
  struct Options {
    std::string instance;         // instance name (ipitrace-kvm-<pid>-<vm>)
    std::vector<int32_t> tids;    // the VM's threads
    uint32_t buffer_kb = 4096;    // per CPU
    bool trace_entry = true;      // kvm_entry, to check the thread map
  };
  // The events this source reads (system "kvm"): the one list, which
  // `ipitrace kvm-events` prints for the benchmarks.  Optional ones may be
  // missing on older kernels or other vendors; start_only ones are turned
  // off once they served (kvm_entry: the thread map).  kvm_pv_eoi is not
  // read: KVM traces kvm_eoi for a PV EOI too.
  struct EventSpec {
    const char* name;
    bool required;
    const char* filter;  // kernel-side filter, or null
    bool start_only;
    KvmEvent::Kind kind;                   // what Decode() makes of it
    std::array<const char*, 5> fields;     // into KvmEvent::f (null: 0)
  };
  static std::span<const EventSpec> Events();

  static Result<std::unique_ptr<KvmTracefs>> Open(const Options& o);
  // Removes instances left by a collector that died (ipitrace-kvm-<pid>-*
  // whose pid is gone).  Returns how many.
  static int CleanStale();
  ~KvmTracefs();

  // Appends the released events, in host-TSC order.
  Status Poll(uint64_t now_tsc, uint64_t margin_ticks, std::vector<KvmEvent>* out);
  // Stops tracing and releases every event still held.
  Status Drain(std::vector<KvmEvent>* out);
  // Stops recording kvm_entry (once the thread map is checked).
  void StopEntryEvents();
  // Overruns the kernel counted in the instance's per-CPU stats.
  uint64_t KernelOverruns() const;
  const std::string& dir() const { return dir_; }

 private:
  KvmTracefs() = default;
  Status ReadCpu(size_t k, std::vector<KvmEvent>* cpu_events);
  bool Decode(const void* data, size_t len, uint64_t ts, KvmEvent* ev) const;
  void Release(uint64_t upto, std::vector<KvmEvent>* out);

  struct Decoder;
  struct Cpu {
    int cpu = -1;
    int fd = -1;
    uint64_t last_ts = 0;
  };
  tracefs_instance* inst_ = nullptr;
  tep_handle* tep_ = nullptr;
  kbuffer* kbuf_ = nullptr;
  std::unique_ptr<Decoder> dec_;
  std::vector<Cpu> cpus_;
  std::vector<uint8_t> page_;
  std::vector<KvmEvent> held_;  // read, not released yet (sorted)
  std::vector<KvmEvent> fresh_, merged_;  // Poll()'s buffers
  std::string dir_;
  bool entry_on_ = false;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_KVM_TRACEFS_H_
