// SPDX-License-Identifier: MIT
#include "watch.h"

#include <ctime>

#include <sys/stat.h>

#include <cstring>
#include <limits>
#include <filesystem>
#include <fstream>
#include <tuple>

#include <fmt/format.h>

#include "file_bytes.h"
#include "json_report.h"
#include "region_reader.h"
#include "snapshot.h"
#include "text_report.h"

namespace ipitrace {
namespace {

using Json = nlohmann::ordered_json;

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  bool operator==(const FileId&) const = default;
};

bool Stat(const std::string& path, FileId* id) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *id = FileId{st.st_dev, st.st_ino, st.st_size};
  return true;
}

bool WriteBytes(const std::string& path, std::span<const std::byte> b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return out.good();
}

}  // namespace

WatchTarget ParseWatchTarget(const std::string& spec) {
  WatchTarget t;
  std::error_code ec;
  const auto colon = spec.find(':');
  if (colon != std::string::npos && !std::filesystem::is_directory(spec, ec)) {
    t.hv_path = spec.substr(0, colon);
    t.guest_path = spec.substr(colon + 1);
    t.name = std::filesystem::path(t.guest_path).filename().string();
  } else {
    t.hv_path = spec + "/hv.region";
    t.guest_path = spec + "/guest.region";
    t.name = std::filesystem::path(spec).filename().string();
    if (t.name.empty()) t.name = std::filesystem::path(spec).parent_path().filename().string();
  }
  if (t.name.empty()) t.name = "vm";
  return t;
}

struct Watcher::Vm {
  WatchTarget target;
  bool attached = false;
  FileId hv_id, guest_id;
  std::optional<MappedFile> hv_map, guest_map;
  uint64_t last_stream_tsc = 0;  // newest TSC seen in any ring
  uint64_t last_advance_ns = 0;  // wall time the streams last advanced
  std::set<std::pair<uint32_t, uint64_t>> reported;  // (source cpu, queue tsc)
  // What is outstanding, read incrementally every poll; the regions are
  // copied and analysed only when it holds a request older than hang_ms.
  // It also latches the rings whose head moved backwards.
  HangScreen screen;
  bool failed_once = false;  // an attach error already reported
};

Watcher::Watcher(std::vector<WatchTarget> targets, WatchOptions options)
    : options_(std::move(options)) {
  for (auto& t : targets) {
    auto vm = std::make_unique<Vm>();
    vm->target = std::move(t);
    vms_.push_back(std::move(vm));
  }
}

Watcher::~Watcher() = default;

std::vector<Json> Watcher::Poll(uint64_t now_ns) {
  std::vector<Json> ev;
  for (auto& vm : vms_) PollVm(vm.get(), now_ns, &ev);
  if (ev.empty()) return ev;
  // Every event says when: the wall clock (for people and other logs) and
  // the monotonic clock the poll ran on (for intervals), and which event
  // schema it follows.
  struct timespec wall {};
  ::clock_gettime(CLOCK_REALTIME, &wall);
  const double wall_s = static_cast<double>(wall.tv_sec) + static_cast<double>(wall.tv_nsec) / 1e9;
  for (Json& e : ev) {
    Json stamped = {{"schema_version", kWatchEventSchemaVersion},
                    {"time", wall_s},
                    {"monotonic_ns", now_ns}};
    for (auto& [k, v] : e.items()) stamped[k] = std::move(v);
    e = std::move(stamped);
  }
  return ev;
}

void Watcher::Detach(Vm* vm, const std::string& reason, std::vector<Json>* ev) {
  if (vm->attached) {
    ev->push_back({{"event", "vm_detached"}, {"vm", vm->target.name}, {"reason", reason}});
  }
  vm->attached = false;
  vm->hv_map.reset();
  vm->guest_map.reset();
  vm->reported.clear();
  vm->last_stream_tsc = 0;
  vm->screen.Reset();
}

bool Watcher::Attach(Vm* vm, std::vector<Json>* ev) {
  const bool guest_only = vm->target.guest_only();
  if ((!guest_only && !Stat(vm->target.hv_path, &vm->hv_id)) ||
      !Stat(vm->target.guest_path, &vm->guest_id))
    return false;
  std::optional<MappedFile> hv;
  if (!guest_only) {
    auto h = MappedFile::Open(vm->target.hv_path);
    if (!h.ok()) return false;
    hv.emplace(std::move(h).value());
  }
  auto guest = MappedFile::Open(vm->target.guest_path);
  if (!guest.ok()) return false;
  // Not attached until every header says ipitrace (a producer may still be
  // laying the region out).
  std::vector<std::byte> hdr(IPT_HEADER_SIZE);
  std::vector<const MappedFile*> maps = {&guest.value()};
  if (hv) maps.push_back(&*hv);
  for (const MappedFile* m : maps) {
    if (m->bytes().size() < IPT_HEADER_SIZE ||
        !GuardedCopy(hdr.data(), m->bytes().data(), IPT_HEADER_SIZE))
      return false;
    uint64_t magic = 0;
    std::memcpy(&magic, hdr.data(), sizeof(magic));
    if (magic != IPT_MAGIC) return false;
  }
  vm->hv_map = std::move(hv);
  vm->guest_map.emplace(std::move(guest).value());
  vm->attached = true;
  vm->reported.clear();
  vm->last_stream_tsc = 0;
  ev->push_back({{"event", "vm_attached"},
                 {"vm", vm->target.name},
                 {"hv", guest_only ? Json(nullptr) : Json(vm->target.hv_path)},
                 {"guest", vm->target.guest_path},
                 {"guest_only", guest_only}});
  return true;
}

void Watcher::PollVm(Vm* vm, uint64_t now_ns, std::vector<Json>* ev) {
  if (vm->attached) {
    FileId h = vm->hv_id, g;
    if ((!vm->target.guest_only() && !Stat(vm->target.hv_path, &h)) ||
        !Stat(vm->target.guest_path, &g)) {
      Detach(vm, "region file removed", ev);
      return;
    }
    if (!(h == vm->hv_id) || !(g == vm->guest_id)) {
      Detach(vm, "region file replaced", ev);
    }
  }
  if (!vm->attached && !Attach(vm, ev)) return;

  // Follow the rings incrementally; a truncation under us is a detach, not
  // a crash.
  std::vector<HangScreen::CorruptRing> corrupt;
  const std::span<const std::byte> hv_bytes =
      vm->hv_map ? vm->hv_map->bytes() : std::span<const std::byte>();
  switch (vm->screen.Update(hv_bytes, vm->guest_map->bytes(), &corrupt)) {
    case HangScreen::UpdateResult::kSigbus:
      Detach(vm, "region file truncated while mapped (SIGBUS caught)", ev);
      return;
    case HangScreen::UpdateResult::kNotReady:
      return;  // not ready yet / mid-reinit
    case HangScreen::UpdateResult::kOk:
      break;
  }
  if (vm->screen.restarted()) {
    // Producer re-initialised (VM restarted in place): forget old requests.
    vm->reported.clear();
    vm->last_stream_tsc = 0;
  }
  // A head that moves backwards within one generation is a producer bug or
  // a scribbled header: the ring is latched corrupt (every request that
  // needs it becomes inconclusive-gap) until the producer re-initialises.
  for (const HangScreen::CorruptRing& c : corrupt) {
    ev->push_back({{"event", "ring_corrupt"},
                   {"vm", vm->target.name},
                   {"stream", std::string(StreamName(c.stream))},
                   {"ring", c.ring},
                   {"head", c.head},
                   {"previous_head", c.previous_head}});
  }
  const uint64_t newest = vm->screen.newest_tsc();
  if (newest != vm->last_stream_tsc) {
    vm->last_stream_tsc = newest;
    vm->last_advance_ns = now_ns;
  }
  const uint64_t khz = vm->screen.tsc_khz();
  if (!khz) return;
  // Stream time now: the newest TSC plus the wall time since it last moved
  // (a fully frozen guest still ages its requests).
  const double idle_ms = static_cast<double>(now_ns - vm->last_advance_ns) / 1e6;
  const std::optional<HangScreen::Outstanding> oldest = vm->screen.Oldest();
  if (!oldest || newest < oldest->queue_tsc ||
      static_cast<double>(newest - oldest->queue_tsc) / static_cast<double>(khz) + idle_ms <=
          options_.hang_ms)
    return;  // nothing has waited that long: no copy, no analysis
  // Whatever the analysis says, the requests that have waited longer than
  // hang_ms have been looked at: the screen forgets them (those still
  // unserved are in vm->reported).
  const double keep_ticks = std::max(0.0, options_.hang_ms - idle_ms) * static_cast<double>(khz);
  const uint64_t cut = keep_ticks < static_cast<double>(newest)
                           ? newest - static_cast<uint64_t>(keep_ticks)
                           : 0;
  if (cut) vm->screen.DropQueuedUpTo(cut - 1);
  ++full_checks_;
  FullCheck(vm, newest, khz, idle_ms, ev);
}

void Watcher::FullCheck(Vm* vm, uint64_t newest, uint64_t khz, double idle_ms,
                        std::vector<Json>* ev) {
  // Copy both mappings once, under the SIGBUS guard (only for this check:
  // between hangs watch holds no copy), each ring's head before its records.
  std::vector<std::byte> hv_copy, guest_copy;
  for (auto [map, copy, kind] : {std::tuple{&vm->hv_map, &hv_copy, StreamKind::kHv},
                                 std::tuple{&vm->guest_map, &guest_copy, StreamKind::kGuest}}) {
    if (!*map) continue;  // guest-only: no hypervisor region
    const auto bytes = (*map)->bytes();
    copy->resize(bytes.size());
    if (!GuardedRegionCopy(copy->data(), bytes.data(), bytes.size(), kind)) {
      Detach(vm, "region file truncated while mapped (SIGBUS caught)", ev);
      return;
    }
  }
  Stats stats;
  std::optional<Snapshot> snap = ReadCopies(*vm, hv_copy, guest_copy, &stats);
  if (!snap) return;  // mid-reinit: the next poll starts over
  Analysis a = Analyzer(&stats, {options_.threshold_ms, options_.settle_ms}).Analyze(std::move(*snap));
  double worst_ms = 0;
  const std::optional<size_t> worst_i = Worst(*vm, a, newest, khz, idle_ms, &worst_ms);
  if (!worst_i) return;
  const Request worst = a.requests[*worst_i];
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const RequestTable::Row& r = a.requests.row(i);
    if (!r.served()) vm->reported.insert({r.source_cpu, r.queue_tsc});
  }
  const std::string dir =
      fmt::format("{}/{}-hang-{}", options_.out_dir, vm->target.name, ++snapshots_);
  const bool ok = WriteHangSnapshot(*vm, dir, hv_copy, guest_copy, &a);
  ev->push_back({{"event", "hang_detected"},
                 {"vm", vm->target.name},
                 {"snapshot", dir},
                 {"snapshot_ok", ok},
                 {"verdict", std::string(VerdictName(worst.verdict))},
                 {"source_cpu", worst.source_cpu},
                 {"target_cpu", worst.target_cpu},
                 {"queue_tsc", worst.queue_tsc},
                 {"outstanding_ms", worst_ms},
                 {"reason", worst.reason},
                 {"stats", StatsTableJson(*a.stats)}});
}

std::optional<Snapshot> Watcher::ReadCopies(const Vm& vm, std::span<const std::byte> hv_copy,
                                            std::span<const std::byte> guest_copy,
                                            Stats* stats) const {
  // The rings the screen latched corrupt (a head that went backwards, which
  // one copy cannot show) are read as lost: every request that needs one
  // becomes inconclusive-gap.
  RegionReader reader(stats);
  Snapshot snap;
  snap.dir = vm.target.name;
  if (vm.target.guest_only()) {
    snap.hv = NoHvRegion("watching the guest stream alone (no hypervisor region)");
  } else {
    auto hv = reader.Read(hv_copy, StreamKind::kHv, vm.target.hv_path,
                          vm.screen.CorruptRings(StreamKind::kHv));
    if (!hv.ok()) return std::nullopt;
    snap.hv = std::move(hv).value();
  }
  auto guest = reader.Read(guest_copy, StreamKind::kGuest, vm.target.guest_path,
                           vm.screen.CorruptRings(StreamKind::kGuest));
  if (!guest.ok()) return std::nullopt;
  snap.guest = std::move(guest).value();
  // The live screen's data problems (counted since attach: ring_head_backwards
  // among them) go into the hang's one table, in its report and its event.
  stats->Add(vm.screen.stats());
  return snap;
}

std::optional<size_t> Watcher::Worst(const Vm& vm, const Analysis& a, uint64_t newest,
                                     uint64_t khz, double idle_ms, double* worst_ms) const {
  const RequestTable::Row* worst_row = nullptr;
  size_t worst_i = 0;
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const RequestTable::Row& r = a.requests.row(i);
    if (r.served() || newest < r.queue_tsc) continue;
    const double ms = static_cast<double>(newest - r.queue_tsc) / static_cast<double>(khz) + idle_ms;
    if (ms <= options_.hang_ms) continue;
    if (vm.reported.count({r.source_cpu, r.queue_tsc})) continue;
    // Prefer a loss verdict over its riders; then the oldest.
    if (!worst_row || (IsLoss(r.verdict) && !IsLoss(worst_row->verdict)) ||
        (IsLoss(r.verdict) == IsLoss(worst_row->verdict) && ms > *worst_ms)) {
      worst_row = &r;
      worst_i = i;
      *worst_ms = ms;
    }
  }
  if (!worst_row) return std::nullopt;
  return worst_i;
}

bool Watcher::WriteHangSnapshot(const Vm& vm, const std::string& dir,
                                std::span<const std::byte> hv_copy,
                                std::span<const std::byte> guest_copy, Analysis* a) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // Guest-only: no hv.region, which is how a snapshot says so.
  bool ok = !ec && (vm.target.guest_only() || WriteBytes(dir + "/hv.region", hv_copy)) &&
            WriteBytes(dir + "/guest.region", guest_copy);
  Json manifest = {{"format", 1},
                   {"generator", "ipitrace watch"},
                   {"name", vm.target.name},
                   {"hv_source", vm.target.guest_only() ? Json(nullptr) : Json(vm.target.hv_path)},
                   {"guest_source", vm.target.guest_path},
                   {"outcome", "hang-detected"},
                   {"hang_ms", options_.hang_ms}};
  std::ofstream(dir + "/manifest.json") << manifest.dump(2) << "\n";
  a->snapshot.dir = dir;
  a->snapshot.manifest = manifest;
  std::ofstream(dir + "/report.txt") << TextReport(a).Render();
  std::ofstream(dir + "/report.json") << JsonReport(a).Build().dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  return ok;
}

}  // namespace ipitrace
