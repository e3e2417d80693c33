// SPDX-License-Identifier: MIT
#include "kvm_vm.h"

#include <dirent.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>

#include <fmt/format.h>

namespace ipitrace {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool ReadText(const std::string& path, std::string* out) {
  std::ifstream f(path);
  if (!f) return false;
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  *out = Trim(std::move(s));
  return true;
}

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* de = ::readdir(d))
      if (de->d_name[0] != '.') names.emplace_back(de->d_name);
    ::closedir(d);
  }
  return names;
}

bool IsOn(const std::string& v) { return v == "Y" || v == "y" || v == "1"; }

uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

uint64_t ReadTsc() { return __rdtsc(); }

uint32_t MeasureTscKhz() {
  const uint64_t n0 = NowNs(), t0 = ReadTsc();
  timespec d{0, 50 * 1000 * 1000};
  nanosleep(&d, nullptr);
  const uint64_t n1 = NowNs(), t1 = ReadTsc();
  if (n1 <= n0) return 0;
  return static_cast<uint32_t>((t1 - t0) * 1000000ull / (n1 - n0));
}

KvmAccel ReadKvmAccel(const std::string& sys_module) {
  KvmAccel a;
  std::string v;
  const std::string intel = sys_module + "/kvm_intel/parameters/";
  const std::string amd = sys_module + "/kvm_amd/parameters/";
  if (ReadText(intel + "enable_apicv", &v)) {
    a.vendor = "intel";
    a.notes.push_back("kvm_intel enable_apicv=" + v);
    if (IsOn(v)) a.accel |= IPT_HV_ACCEL_APICV;
    if (ReadText(intel + "enable_ipiv", &v)) {
      a.notes.push_back("kvm_intel enable_ipiv=" + v);
      if (IsOn(v) && (a.accel & IPT_HV_ACCEL_APICV)) a.accel |= IPT_HV_ACCEL_IPIV;
    }
  }
  if (ReadText(amd + "avic", &v)) {
    a.vendor = a.vendor.empty() ? "amd" : a.vendor + "+amd";
    a.notes.push_back("kvm_amd avic=" + v);
    if (IsOn(v)) a.accel |= IPT_HV_ACCEL_AVIC;
  }
  uint32_t hidden = 0;
#define IPT_HIDE(name, bit, hides, setting) \
  if (a.accel & IPT_HV_ACCEL_##name) hidden |= (hides);
  IPT_HV_ACCEL(IPT_HIDE)
#undef IPT_HIDE
  // KVM's tracepoints never say whether an IRR set found the bit already
  // set (kvm_apic_accept_irq has no such field since Linux 4.x), whatever
  // the settings.  A model of the IRR built from the events would have to
  // assume that KVM loses no bit -- the very thing under test -- so the
  // source does not claim coalescing: the tracker then never takes a
  // set for "coalesced" or "found clear".
  a.stages = IPT_HV_STAGE_ALL & ~hidden & ~uint32_t{IPT_HV_STAGE_COALESCE};
  return a;
}

Result<KvmVm> FindKvmVm(int32_t pid, const KvmHostPaths& paths) {
  KvmVm vm;
  vm.pid = pid;
  const std::string pdir = fmt::format("{}/{}", paths.proc, pid);
  if (::access(pdir.c_str(), F_OK) != 0)
    return Status::Error(ErrorCode::kNotKvmVm, fmt::format("no process {}", pid));
  // The VM and vCPU file descriptors: anon_inode:kvm-vm, kvm-vcpu:<id>.
  int vm_fd = -1;
  std::vector<uint32_t> ids;
  const std::vector<std::string> fds = List(pdir + "/fd");
  if (fds.empty() && errno == EACCES)
    return Status::Error(ErrorCode::kPermission,
                         fmt::format("cannot read {}/fd (run as root)", pdir));
  for (const std::string& fd : fds) {
    char target[256] = {};
    const ssize_t n = ::readlink((pdir + "/fd/" + fd).c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    const std::string_view t(target, static_cast<size_t>(n));
    if (t == "anon_inode:kvm-vm") {
      if (vm_fd >= 0)
        return Status::Error(ErrorCode::kNotKvmVm,
                             fmt::format("process {} holds more than one KVM VM", pid));
      vm_fd = std::atoi(fd.c_str());
    } else if (t.substr(0, 19) == "anon_inode:kvm-vcpu") {
      const size_t colon = t.rfind(':');
      ids.push_back(static_cast<uint32_t>(std::strtoul(std::string(t.substr(colon + 1)).c_str(), nullptr, 10)));
    }
  }
  if (vm_fd < 0)
    return Status::Error(ErrorCode::kNotKvmVm,
                         fmt::format("process {} is not a KVM VM (no kvm-vm descriptor)", pid));
  // QEMU may hold a vCPU's descriptor twice: one vCPU per id.
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  if (ids.empty() || ids.size() > IPT_MAX_CPUS)
    return Status::Error(ErrorCode::kNotKvmVm,
                         fmt::format("process {}: {} vCPUs", pid, ids.size()));
  std::sort(ids.begin(), ids.end());
  vm.info.vcpu_id = ids;

  vm.debugfs_dir = fmt::format("{}/{}-{}", paths.debugfs_kvm, pid, vm_fd);
  if (::access(paths.debugfs_kvm.c_str(), F_OK) != 0)
    return Status::Error(ErrorCode::kNoDebugfs,
                         fmt::format("{} missing (mount -t debugfs none /sys/kernel/debug)",
                                     paths.debugfs_kvm));
  if (::access(vm.debugfs_dir.c_str(), R_OK) != 0)
    return Status::Error(errno == EACCES ? ErrorCode::kPermission : ErrorCode::kNoDebugfs,
                         fmt::format("cannot read {}: {}", vm.debugfs_dir, std::strerror(errno)));
  vm.info.tsc_offset.assign(ids.size(), 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string v;
    const std::string base = fmt::format("{}/vcpu{}/", vm.debugfs_dir, ids[i]);
    if (!ReadText(base + "tsc-offset", &v))
      return Status::Error(ErrorCode::kNoDebugfs, fmt::format("cannot read {}tsc-offset", base));
    vm.info.tsc_offset[i] = std::strtoll(v.c_str(), nullptr, 10);
    if (i == 0 && ReadText(base + "tsc-scaling-ratio", &v)) {
      vm.info.tsc_ratio = std::strtoull(v.c_str(), nullptr, 10);
      if (ReadText(base + "tsc-scaling-ratio-frac-bits", &v))
        vm.info.tsc_frac_bits = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
      if (vm.info.tsc_ratio == uint64_t{1} << vm.info.tsc_frac_bits) vm.info.tsc_ratio = 0;
    }
  }
  // Threads; QEMU (with -name debug-threads=on, as libvirt runs it) names
  // vCPU threads "CPU <index>/KVM".
  for (const std::string& t : List(pdir + "/task")) {
    const int32_t tid = std::atoi(t.c_str());
    vm.tids.push_back(tid);
    std::string comm;
    unsigned idx = 0;
    char tail[8] = {};
    if (ReadText(fmt::format("{}/task/{}/comm", pdir, tid), &comm) &&
        std::sscanf(comm.c_str(), "CPU %u/%7s", &idx, tail) == 2 &&
        std::string_view(tail) == "KVM" && idx < ids.size()) {
      vm.info.thread_vcpu[tid] = idx;
      ++vm.named_threads;
    }
  }
  std::sort(vm.tids.begin(), vm.tids.end());
  return vm;
}

}  // namespace ipitrace
