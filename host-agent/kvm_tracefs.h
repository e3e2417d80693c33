// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_KVM_TRACEFS_H_
#define IPITRACE_HOST_AGENT_KVM_TRACEFS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvm_events.h"
#include "result.h"

struct tep_handle;
struct tracefs_instance;
struct kbuffer;

namespace ipitrace {

// KvmTracefs reads the host's KVM tracepoints for one VM from a tracefs
// instance of its own (never the top-level buffer other tools use), with
// the x86-tsc clock, and decodes them into KvmEvents.
//
// The events are filtered in the kernel to the VM's threads
// (set_event_pid, event-fork) and, for kvm_hypercall, to KVM_HC_SEND_IPI;
// each CPU's buffer is read page by page (trace_pipe_raw, decoded with
// libtraceevent's kbuffer), and a page's missed-events count becomes a
// kLost event.  It needs no compiler, BTF or verifier: the fallback where
// KvmBpf cannot load (an older kernel, no BTF), and the slower of the two
// (results/kvm-bench.md).
//
// Each poll reads every CPU's buffer, merges the CPUs' events by host TSC,
// and releases those stamped before the poll began less a margin (an event
// being committed on another CPU while we read is released next time), so
// the translator sees one ordered stream.  Drain() releases the rest.
class KvmTracefs : public KvmEventReader {
 public:
  struct Options {
    std::string instance;         // instance name (ipitrace-kvm-<pid>-<vm>)
    std::vector<int32_t> tids;    // the VM's threads
    uint32_t buffer_kb = 4096;    // per CPU
    bool trace_entry = true;      // kvm_entry, to check the thread map
  };

  static Result<std::unique_ptr<KvmTracefs>> Open(const Options& o);
  // Removes instances left by a collector that died (ipitrace-kvm-<pid>-*
  // whose pid is gone).  Returns how many.
  static int CleanStale();
  ~KvmTracefs() override;

  Status Poll(uint64_t now_tsc, uint64_t margin_ticks, std::vector<KvmEvent>* out) override;
  Status Drain(std::vector<KvmEvent>* out) override;
  void StopEntryEvents() override;
  // Overruns the kernel counted in the instance's per-CPU stats.
  uint64_t KernelDropped() const override;
  const char* name() const override { return "kvm-tracefs"; }
  std::string where() const override { return "tracefs instance " + dir_; }

 private:
  KvmTracefs() = default;
  // Open()'s steps: the formats of the events read (only those: no
  // kallsyms or printk formats) and their decoders; the instance, its
  // clock, buffer, filters and events; a reader per CPU buffer.
  Status LoadFormats(const char* top);
  Status CreateInstance(const Options& o);
  Status OpenCpuBuffers();
  Status ReadCpu(size_t k, std::vector<KvmEvent>* cpu_events);
  bool Decode(const void* data, size_t len, uint64_t ts, KvmEvent* ev) const;

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
  KvmEventOrder order_;          // read, not released yet
  std::vector<KvmEvent> fresh_;  // one CPU's events of a poll
  std::string dir_;
  bool entry_on_ = false;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_KVM_TRACEFS_H_
