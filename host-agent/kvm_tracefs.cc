// SPDX-License-Identifier: MIT
#include "kvm_tracefs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <string_view>

#include <fmt/format.h>

extern "C" {
#include <traceevent/event-parse.h>
#include <traceevent/kbuffer.h>

// libtracefs 1.6's tracefs.h is not valid C++ (an enum parameter defaults
// to an int), so the functions used here are declared from it by hand.
struct tracefs_instance;
const char* tracefs_tracing_dir(void);
struct tracefs_instance* tracefs_instance_create(const char* name);
struct tracefs_instance* tracefs_instance_alloc(const char* tracing_dir, const char* name);
int tracefs_instance_destroy(struct tracefs_instance* instance);
void tracefs_instance_free(struct tracefs_instance* instance);
char* tracefs_instance_get_dir(struct tracefs_instance* instance);
char** tracefs_instances(const char* regex);
void tracefs_list_free(char** list);
int tracefs_event_enable(struct tracefs_instance* instance, const char* system,
                         const char* event);
int tracefs_event_disable(struct tracefs_instance* instance, const char* system,
                          const char* event);
}

namespace ipitrace {
namespace {

constexpr const char* kSystem = "kvm";
constexpr std::string_view kInstancePrefix = "ipitrace-kvm-";

Status Err(ErrorCode code, std::string msg) { return Status::Error(code, std::move(msg)); }

ErrorCode CodeOfErrno(int e) {
  return e == EACCES || e == EPERM ? ErrorCode::kPermission : ErrorCode::kNoTracefs;
}

bool WriteFile(const std::string& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t n = ::write(fd, text.data(), text.size());
  ::close(fd);
  return n == static_cast<ssize_t>(text.size());
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s;
}

}  // namespace

// Per event id: its kind and the fields f0..f4 (null: reads 0), plus
// common_pid.
struct KvmTracefs::Decoder {
  // Where a number field sits in the raw event (its offset and size, from
  // the event's format): read with a plain load, as tep_read_number() does
  // on a little-endian host, without a library call per field.
  struct Field {
    uint16_t offset = 0;
    uint8_t size = 0;  // 0: absent, reads 0
    static Field Of(const tep_format_field* f) {
      if (!f || (f->size != 1 && f->size != 2 && f->size != 4 && f->size != 8) ||
          f->offset < 0 || f->offset > 0xffff)
        return {};
      return {static_cast<uint16_t>(f->offset), static_cast<uint8_t>(f->size)};
    }
    uint64_t Read(const uint8_t* data, size_t len) const {
      uint64_t v = 0;
      if (size != 0 && size_t{offset} + size <= len) std::memcpy(&v, data + offset, size);
      return v;
    }
  };
  struct Entry {
    KvmEvent::Kind kind;
    Field pid;
    std::array<Field, 5> f{};
  };
  std::vector<std::pair<int, Entry>> by_id;  // few entries: a linear scan
  const Entry* Find(int id) const {
    for (const auto& [i, e] : by_id)
      if (i == id) return &e;
    return nullptr;
  }
};

int KvmTracefs::CleanStale() {
  char** names = tracefs_instances(nullptr);
  if (!names) return 0;
  int removed = 0;
  for (char** n = names; *n; ++n) {
    const std::string_view name(*n);
    if (name.substr(0, kInstancePrefix.size()) != kInstancePrefix) continue;
    const std::string rest(name.substr(kInstancePrefix.size()));
    const long pid = std::strtol(rest.c_str(), nullptr, 10);
    if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)) {
      tracefs_instance* inst = tracefs_instance_alloc(nullptr, *n);
      if (!inst) continue;
      tracefs_event_disable(inst, nullptr, nullptr);
      if (tracefs_instance_destroy(inst) == 0) ++removed;
      tracefs_instance_free(inst);
    }
  }
  tracefs_list_free(names);
  return removed;
}

Result<std::unique_ptr<KvmTracefs>> KvmTracefs::Open(const Options& o) {
  const char* top = tracefs_tracing_dir();
  if (!top) {
    return Err(ErrorCode::kNoTracefs,
               "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)");
  }
  if (::access(top, W_OK) != 0) {
    return Err(ErrorCode::kPermission,
               fmt::format("cannot write {}: {} (run as root)", top, std::strerror(errno)));
  }
  std::unique_ptr<KvmTracefs> t(new KvmTracefs());
  if (Status st = t->LoadFormats(top); !st.ok()) return st;
  if (Status st = t->CreateInstance(o); !st.ok()) return st;
  if (Status st = t->OpenCpuBuffers(); !st.ok()) return st;
  if (!WriteFile(t->dir_ + "/tracing_on", "1"))
    return Err(ErrorCode::kNoTracefs, "cannot turn tracing on in the instance");
  return t;
}

Status KvmTracefs::LoadFormats(const char* top) {
  // Only the formats of the events read here: libtracefs' loader would
  // also parse kallsyms and every printk format of the kernel, seconds of
  // CPU on a busy host for nothing this source decodes.
  tep_ = tep_alloc();
  if (!tep_) return Err(ErrorCode::kInternal, "cannot allocate the event parser");
  const tep_endian endian = tep_is_bigendian() ? TEP_BIG_ENDIAN : TEP_LITTLE_ENDIAN;
  tep_set_file_bigendian(tep_, endian);
  tep_set_local_bigendian(tep_, endian);
  tep_set_long_size(tep_, static_cast<int>(sizeof(long)));
  tep_set_page_size(tep_, ::getpagesize());
  {
    std::string page = ReadFile(fmt::format("{}/events/header_page", top));
    if (page.empty() ||
        tep_parse_header_page(tep_, page.data(), page.size(), static_cast<int>(sizeof(long))))
      return Err(ErrorCode::kNoTracefs, fmt::format("cannot read {}/events/header_page", top));
  }
  for (const KvmEventSpec& e : KvmEventSpecs()) {
    const std::string fmt_text = ReadFile(fmt::format("{}/events/{}/{}/format", top, kSystem, e.name));
    if (!fmt_text.empty()) tep_parse_event(tep_, fmt_text.data(), fmt_text.size(), kSystem);
  }
  if (!tep_find_event_by_name(tep_, kSystem, "kvm_entry")) {
    return Err(ErrorCode::kNoTracefs,
               fmt::format("no KVM tracepoints under {}/events/kvm (is the kvm module "
                           "loaded?)",
                           top));
  }
  dec_ = std::make_unique<Decoder>();
  for (const KvmEventSpec& m : KvmEventSpecs()) {
    tep_event* ev = tep_find_event_by_name(tep_, kSystem, m.name);
    if (!ev) {
      if (!m.required) continue;
      return Err(ErrorCode::kNoTracefs, fmt::format("tracepoint kvm:{} missing", m.name));
    }
    Decoder::Entry e{m.kind, {}, {}};
    e.pid = Decoder::Field::Of(tep_find_common_field(ev, "common_pid"));
    for (size_t i = 0; i < 5; ++i) {
      if (!m.fields[i]) continue;
      tep_format_field* f = tep_find_field(ev, m.fields[i]);
      // Linux before 6.2 names kvm_inj_virq's vector 'irq'.
      if (!f && m.kind == KvmEvent::Kind::kInjVirq && i == 0) f = tep_find_field(ev, "irq");
      e.f[i] = Decoder::Field::Of(f);
      if (e.f[i].size == 0 && i == 0)
        return Err(ErrorCode::kNoTracefs,
                   fmt::format("tracepoint kvm:{} has no number field {}", m.name, m.fields[i]));
    }
    dec_->by_id.push_back({ev->id, e});
  }

  return Status::Ok();
}

Status KvmTracefs::CreateInstance(const Options& o) {
  inst_ = tracefs_instance_create(o.instance.c_str());
  if (!inst_) {
    const int e = errno;
    return Err(CodeOfErrno(e), fmt::format("cannot create tracefs instance {}: {}",
                                           o.instance, std::strerror(e)));
  }
  char* dir = tracefs_instance_get_dir(inst_);
  dir_ = dir ? dir : "";
  free(dir);
  auto file = [&](const char* f) { return dir_ + "/" + f; };
  if (!WriteFile(file("trace_clock"), "x86-tsc"))
    return Err(ErrorCode::kNoTracefs, "the x86-tsc trace clock is not available");
  WriteFile(file("tracing_on"), "0");
  if (!WriteFile(file("buffer_size_kb"), std::to_string(o.buffer_kb)))
    return Err(ErrorCode::kNoTracefs, fmt::format("cannot size the buffer to {} KiB", o.buffer_kb));
  WriteFile(file("options/overwrite"), "1");
  WriteFile(file("options/event-fork"), "1");
  std::string pids;
  for (int32_t tid : o.tids) pids += std::to_string(tid) + " ";
  if (!pids.empty() && !WriteFile(file("set_event_pid"), pids))
    return Err(ErrorCode::kNotKvmVm, "cannot filter events to the VM's threads (gone?)");
  for (const KvmEventSpec& e : KvmEventSpecs())
    if (e.filter) WriteFile(fmt::format("{}/events/{}/{}/filter", dir_, kSystem, e.name), e.filter);
  for (const auto& [id, e] : dec_->by_id) {
    (void)e;
    tep_event* ev = tep_find_event(tep_, id);
    if (!o.trace_entry && std::string_view(ev->name) == "kvm_entry") continue;
    if (tracefs_event_enable(inst_, kSystem, ev->name) != 0)
      return Err(ErrorCode::kNoTracefs, fmt::format("cannot enable kvm:{}", ev->name));
  }
  entry_on_ = o.trace_entry;

  return Status::Ok();
}

Status KvmTracefs::OpenCpuBuffers() {
  auto file = [&](const char* f) { return dir_ + "/" + f; };
  // One reader per CPU buffer of the instance.
  if (DIR* d = ::opendir(file("per_cpu").c_str())) {
    while (dirent* de = ::readdir(d)) {
      int cpu = -1;
      if (std::sscanf(de->d_name, "cpu%d", &cpu) != 1) continue;
      const std::string p = fmt::format("{}/per_cpu/cpu{}/trace_pipe_raw", dir_, cpu);
      const int fd = ::open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) continue;  // offline CPU
      cpus_.push_back({cpu, fd, 0});
    }
    ::closedir(d);
  }
  if (cpus_.empty()) return Err(ErrorCode::kNoTracefs, "no per-CPU trace buffers to read");
  std::sort(cpus_.begin(), cpus_.end(),
            [](const Cpu& a, const Cpu& b) { return a.cpu < b.cpu; });
  kbuf_ = tep_kbuffer(tep_);
  if (!kbuf_) return Err(ErrorCode::kInternal, "cannot set up the trace page decoder");
  long sub = 0;
  const std::string subbuf = ReadFile(file("buffer_subbuf_size_kb"));
  if (!subbuf.empty()) sub = std::strtol(subbuf.c_str(), nullptr, 10) * 1024;
  page_.resize(static_cast<size_t>(std::max<long>(sub, ::getpagesize())));
  return Status::Ok();
}

KvmTracefs::~KvmTracefs() {
  for (Cpu& c : cpus_)
    if (c.fd >= 0) ::close(c.fd);
  if (inst_) {
    // Never leave KVM events enabled behind: disable, then remove.
    WriteFile(dir_ + "/tracing_on", "0");
    tracefs_event_disable(inst_, nullptr, nullptr);
    tracefs_instance_destroy(inst_);
    tracefs_instance_free(inst_);
  }
  if (kbuf_) kbuffer_free(kbuf_);
  if (tep_) tep_free(tep_);
}

void KvmTracefs::StopEntryEvents() {
  if (!entry_on_) return;
  tracefs_event_disable(inst_, kSystem, "kvm_entry");
  entry_on_ = false;
}

uint64_t KvmTracefs::KernelDropped() const {
  uint64_t total = 0;
  for (const Cpu& c : cpus_) {
    const std::string s = ReadFile(fmt::format("{}/per_cpu/cpu{}/stats", dir_, c.cpu));
    const size_t at = s.find("overrun:");
    if (at != std::string::npos) total += std::strtoull(s.c_str() + at + 8, nullptr, 10);
  }
  return total;
}

bool KvmTracefs::Decode(const void* data, size_t len, uint64_t ts, KvmEvent* ev) const {
  uint16_t type = 0;
  if (len < sizeof(type)) return false;
  std::memcpy(&type, data, sizeof(type));  // common_type, offset 0
  const Decoder::Entry* e = dec_->Find(type);
  if (!e) return false;
  const auto* p = static_cast<const uint8_t*>(data);
  ev->kind = e->kind;
  ev->host_tsc = ts;
  ev->tid = e->pid.size ? static_cast<int32_t>(e->pid.Read(p, len)) : -1;
  for (size_t i = 0; i < 5; ++i) ev->f[i] = e->f[i].Read(p, len);
  return true;
}

Status KvmTracefs::ReadCpu(size_t k, std::vector<KvmEvent>* out) {
  Cpu& c = cpus_[k];
  for (int pages = 0; pages < 4096; ++pages) {
    const ssize_t n = ::read(c.fd, page_.data(), page_.size());
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return Status::Ok();
      return Err(ErrorCode::kIo, fmt::format("reading cpu{}/trace_pipe_raw: {}", c.cpu,
                                             std::strerror(errno)));
    }
    if (n == 0) return Status::Ok();
    if (kbuffer_load_subbuffer(kbuf_, page_.data()) < 0) continue;
    const int missed = kbuffer_missed_events(kbuf_);
    unsigned long long ts = 0;
    void* data = kbuffer_read_event(kbuf_, &ts);
    if (missed != 0) {
      // The kernel overwrote events before this page: a gap between the
      // last event we read from this CPU and the first on this page.
      KvmEvent lost;
      lost.kind = KvmEvent::Kind::kLost;
      lost.host_tsc = data ? ts : kbuffer_timestamp(kbuf_);
      lost.f[0] = missed > 0 ? static_cast<uint64_t>(missed) : std::numeric_limits<uint64_t>::max();
      lost.f[1] = c.last_ts;
      out->push_back(lost);
    }
    while (data) {
      KvmEvent ev;
      const int size = kbuffer_event_size(kbuf_);
      if (Decode(data, size > 0 ? static_cast<size_t>(size) : 0, ts, &ev)) out->push_back(ev);
      c.last_ts = ts;
      data = kbuffer_next_event(kbuf_, &ts);
    }
  }
  return Status::Ok();
}

Status KvmTracefs::Poll(uint64_t now_tsc, uint64_t margin_ticks, std::vector<KvmEvent>* out) {
  for (size_t k = 0; k < cpus_.size(); ++k) {
    if (Status s = ReadCpu(k, &fresh_); !s.ok()) return s;
    order_.Add(&fresh_);
  }
  order_.Release(now_tsc > margin_ticks ? now_tsc - margin_ticks : 0, out);
  return Status::Ok();
}

Status KvmTracefs::Drain(std::vector<KvmEvent>* out) {
  WriteFile(dir_ + "/tracing_on", "0");
  return Poll(std::numeric_limits<uint64_t>::max(), 0, out);
}

}  // namespace ipitrace
