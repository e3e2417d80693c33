// SPDX-License-Identifier: MIT
#include "kvm_source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "hv_region_writer.h"
#include "kvm_bpf.h"
#include "kvm_tracefs.h"
#include "kvm_translator.h"

namespace ipitrace {
namespace {

__extension__ typedef unsigned __int128 U128;

// The region file, mapped shared: readers (watch, a snapshot copy) see it
// live; it outlives this process.
class MappedRegion {
 public:
  ~MappedRegion() {
    if (mem_) {
      ::msync(mem_, size_, MS_SYNC);
      ::munmap(mem_, size_);
    }
  }
  Status Create(const std::string& path, uint64_t size) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
      return Status::Error(errno == EACCES ? ErrorCode::kPermission : ErrorCode::kIo,
                           fmt::format("cannot create {}: {}", path, std::strerror(errno)));
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      const int e = errno;
      ::close(fd);
      return Status::Error(ErrorCode::kIo, fmt::format("cannot size {} to {} bytes: {}", path,
                                                       size, std::strerror(e)));
    }
    // Every page allocated and mapped now, not at the first record that
    // lands on it: a collector runs for days, and its steady state should
    // not pay a page fault per 64 records while the rings first fill.
    (void)::posix_fallocate(fd, 0, static_cast<off_t>(size));  // tmpfs: its pages
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    ::close(fd);
    if (m == MAP_FAILED)
      return Status::Error(ErrorCode::kIo, fmt::format("cannot map {}: {}", path, std::strerror(errno)));
    mem_ = m;
    size_ = size;
    return Status::Ok();
  }
  std::span<std::byte> bytes() { return {static_cast<std::byte*>(mem_), size_}; }

 private:
  void* mem_ = nullptr;
  size_t size_ = 0;
};

bool Alive(int32_t pid, const std::string& proc) {
  // A zombie (exited, not reaped) counts as gone.
  FILE* f = std::fopen(fmt::format("{}/{}/stat", proc, pid).c_str(), "r");
  if (!f) return false;
  char buf[512] = {};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  const char* rp = std::strrchr(buf, ')');
  return n > 0 && rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

void Log(const KvmSourceOptions& o, const std::string& s) {
  if (!o.quiet) std::fprintf(stderr, "kvm-source: %s\n", s.c_str());
}

// The reader o.backend asks for; "auto": BPF, else tracefs (saying why).
Result<std::unique_ptr<KvmEventReader>> OpenReader(const KvmSourceOptions& o, const KvmVm& vm,
                                                   uint32_t host_khz) {
  if (o.backend != "tracefs") {
    KvmBpf::Options bo;
    bo.pid = o.pid;
    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    bo.ring_kb = o.buffer_kb * static_cast<uint32_t>(cpus > 0 ? cpus : 1);
    bo.tsc_khz = host_khz;
    auto b = KvmBpf::Open(bo);
    if (b.ok()) return std::unique_ptr<KvmEventReader>(std::move(b).value());
    if (o.backend == "bpf") return b.status();
    Log(o, fmt::format("BPF unavailable ({}); reading tracefs instead", b.status().message()));
  }
  KvmTracefs::Options to;
  to.instance = fmt::format("ipitrace-kvm-{}-{}", ::getpid(), o.pid);
  to.tids = vm.tids;
  to.buffer_kb = o.buffer_kb;
  auto t = KvmTracefs::Open(to);
  if (!t.ok()) return t.status();
  return std::unique_ptr<KvmEventReader>(std::move(t).value());
}

// The region's layout for the VM: one ring per vCPU, its APIC IDs, its
// TSC rate (the host's, scaled where KVM scales it).
HvRegionWriter::Layout LayoutFor(const KvmSourceOptions& o, const KvmVm& vm, uint32_t host_khz) {
  HvRegionWriter::Layout layout;
  layout.vcpus = static_cast<uint32_t>(vm.info.vcpu_id.size());
  layout.capacity = o.capacity;
  layout.apic_id = vm.info.vcpu_id;
  layout.tsc_khz = vm.info.tsc_ratio
                       ? static_cast<uint32_t>((static_cast<U128>(host_khz) *
                                                vm.info.tsc_ratio) >> vm.info.tsc_frac_bits)
                       : host_khz;
  utsname u{};
  ::uname(&u);
  layout.release = fmt::format("kvm {}", u.release);
  return layout;
}

// Polls the reader into the translator until *stop or the VM exits;
// returns whether the VM exited.  kvm_entry fires on every guest entry; it
// is only needed to check the thread map: off once every vCPU was seen
// entering (or after 10 s, for a vCPU that never runs).
Result<bool> PollUntilDone(const KvmSourceOptions& o, uint64_t margin, KvmEventReader* reader,
                           KvmTranslator* translator, volatile std::sig_atomic_t* stop) {
  std::vector<KvmEvent> batch;
  const auto start = std::chrono::steady_clock::now();
  bool entry_on = true;
  while (!*stop) {
    batch.clear();
    if (Status s = reader->Poll(ReadTsc(), margin, &batch); !s.ok()) return s;
    for (const KvmEvent& ev : batch) translator->Push(ev);
    if (!Alive(o.pid, o.paths.proc)) return true;
    if (entry_on && (translator->ThreadMapChecked() ||
                     std::chrono::steady_clock::now() - start > std::chrono::seconds(10))) {
      reader->StopEntryEvents();
      entry_on = false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(o.poll_ms * 1000)));
  }
  return false;
}

}  // namespace

Status RunKvmSource(const KvmSourceOptions& o, volatile std::sig_atomic_t* stop) {
  if (::geteuid() != 0)
    Log(o, "warning: not running as root; tracefs and debugfs usually need it");
  auto vm_r = FindKvmVm(o.pid, o.paths);
  if (!vm_r.ok()) return vm_r.status();
  KvmVm vm = std::move(vm_r).value();
  const KvmAccel accel = ReadKvmAccel(o.accel_from.empty() ? o.paths.sys_module : o.accel_from);
  vm.info.stages = accel.stages;

  const int stale = KvmTracefs::CleanStale();
  if (stale > 0) Log(o, fmt::format("removed {} stale tracefs instance(s) of dead collectors", stale));

  const uint32_t host_khz = MeasureTscKhz();
  const HvRegionWriter::Layout layout = LayoutFor(o, vm, host_khz);
  if (Status s = HvRegionWriter::Check(layout); !s.ok()) return s;
  MappedRegion region;
  if (Status s = region.Create(o.out, HvRegionWriter::SizeFor(layout)); !s.ok()) return s;

  // The window starts before tracing is on: no event precedes it.
  const uint64_t start_host_tsc = ReadTsc();
  auto rr = OpenReader(o, vm, host_khz);
  if (!rr.ok()) return rr.status();
  std::unique_ptr<KvmEventReader> reader = std::move(rr).value();

  HvRegionWriter writer(region.bytes(), layout, GuestTscOf(vm.info, 0, start_host_tsc));
  writer.SetSource(accel.stages, 0, accel.accel, reader->name());
  KvmTranslator translator(&writer, vm.info);
  Log(o, fmt::format("VM pid {}: {} vCPUs (KVM ids {}), {} named vCPU threads, debugfs {}, "
                     "TSC {} kHz, {}; {}",
                     o.pid, layout.vcpus, fmt::join(vm.info.vcpu_id, ","), vm.named_threads,
                     vm.debugfs_dir, layout.tsc_khz,
                     accel.notes.empty() ? "no KVM vendor module settings"
                                         : fmt::format("{}", fmt::join(accel.notes, ", ")),
                     reader->where()));
  if (!o.ready_file.empty()) {
    const int fd = ::open(o.ready_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) ::close(fd);
  }

  const uint64_t margin = uint64_t{host_khz} * 2;  // 2 ms
  auto exited = PollUntilDone(o, margin, reader.get(), &translator, stop);
  if (!exited.ok()) return exited.status();
  std::vector<KvmEvent> batch;
  const Status drained = reader->Drain(&batch);
  for (const KvmEvent& ev : batch) translator.Push(ev);
  const uint64_t overruns = reader->KernelDropped();
  reader.reset();  // detaches the programs, or disables and removes the instance
  writer.Stop(translator.GuestTsc(0, ReadTsc()));
  const KvmTranslator::Counts& c = translator.counts();
  Log(o, fmt::format("{}: {} events -> {} records; lost {} (kernel side {}, {} gaps), "
                     "unmapped thread {}, unknown vCPU {}, re-injections {}, thread map "
                     "learned {} fixed {}; {} events of hidden stages not written",
                     exited.value() ? "VM exited" : "stopped", c.events, c.records, c.lost,
                     overruns, c.gaps, c.unmapped_thread, c.unknown_vcpu, c.reinjected,
                     c.map_learned, c.map_fixed, c.hidden));
  return drained;
}

}  // namespace ipitrace
