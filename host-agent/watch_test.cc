// SPDX-License-Identifier: MIT
#include "watch.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "analyzer.h"
#include "hv_region_writer.h"
#include "region_reader.h"
#include "file_bytes.h"
#include "testing/scenario.h"

namespace ipitrace {
namespace {

using testing::Scenario;
using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

constexpr uint64_t kFunc = 0xffffffff81001000ULL;
constexpr uint64_t kCsd = 0xffff888003a00000ULL;
constexpr uint64_t kMs = testing::RegionBuilder::kTscKhz;  // ticks per ms

std::string TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "ipitrace-watch-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  return tmpl;
}

// Rewrites a file in place (same inode, same size), as a producer would.
void WriteInPlace(const std::string& path, const std::vector<std::byte>& b) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, b.data(), b.size(), 0) == static_cast<ssize_t>(b.size()));
  ::close(fd);
}

// Publishes a scenario's two regions into dir, in place.
void WriteRegions(const std::string& dir, Scenario& sc) {
  WriteInPlace(dir + "/hv.region", sc.hv().Bytes());
  WriteInPlace(dir + "/guest.region", sc.guest().Bytes());
}

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

const Json* Find(const std::vector<Json>& ev, const std::string& name) {
  for (const Json& e : ev)
    if (e["event"] == name) return &e;
  return nullptr;
}

TEST_CASE("watch - live region appended by a thread: attach, hang, detach, reattach") {
  const std::string dir = TempDir();
  const std::string vm = dir + "/vm0";
  fs::create_directories(vm);
  Scenario sc(2, 1024);
  for (uint64_t i = 0; i < 10; ++i) sc.FullChain(i % 2, 1 - i % 2, 1000 + i * 1000, kFunc, kCsd + i);
  std::mutex mu;
  auto publish = [&] {
    std::lock_guard<std::mutex> lock(mu);
    WriteRegions(vm, sc);
  };
  publish();

  WatchOptions opts;
  opts.hang_ms = 50;
  opts.out_dir = dir + "/out";
  Watcher w({ParseWatchTarget(vm)}, opts);
  const uint64_t first_poll = NowNs();
  auto ev = w.Poll(first_poll);
  REQUIRE(Find(ev, "vm_attached") != nullptr);
  CHECK(Find(ev, "hang_detected") == nullptr);
  {
    // Stamped: the schema, the poll's monotonic clock, the wall clock.
    const Json& a = *Find(ev, "vm_attached");
    CHECK(a.begin().key() == "schema_version");
    CHECK(a["schema_version"] == kWatchEventSchemaVersion);
    CHECK(a["monotonic_ns"] == first_poll);
    const double now = static_cast<double>(std::time(nullptr));
    CHECK(a["time"].get<double>() > now - 60);
    CHECK(a["time"].get<double>() < now + 60);
  }

  // Producer thread: an IPI lost in routing, then time goes on (timer ACKs
  // on both vCPUs, 10 ms apart) while the request stays outstanding.
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      sc.Queue(0, 1, 20000, kFunc, kCsd + 0x100);
      sc.Send(0, 1, 20010);
      sc.Icr(0, Scenario::kVecSingle, 20020, {1});
    }
    publish();
    for (uint64_t k = 1; k <= 30 && !stop; ++k) {
      {
        std::lock_guard<std::mutex> lock(mu);
        sc.Ack(0, 0xec, 20000 + k * 10 * kMs);
        sc.Ack(1, 0xec, 20000 + k * 10 * kMs + 5);
        sc.Mark(1, 20000 + k * 10 * kMs + 7);
      }
      publish();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  const Json* hang = nullptr;
  std::vector<Json> all;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!hang && std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);  // no torn files in this test
      for (auto& e : w.Poll(NowNs())) all.push_back(e);
    }
    hang = Find(all, "hang_detected");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  producer.join();
  REQUIRE(hang != nullptr);
  CHECK((*hang)["verdict"] == "lost-in-routing");
  CHECK((*hang)["source_cpu"] == 0);
  CHECK((*hang)["target_cpu"] == 1);
  CHECK((*hang)["outstanding_ms"].get<double>() > 50.0);
  CHECK(Find(all, "vm_detached") == nullptr);
  // The event carries the one data-problem table, every stat in it.
  REQUIRE((*hang)["stats"].is_array());
  CHECK((*hang)["stats"].size() == kNumStats);
  const std::string snap = (*hang)["snapshot"];
  CHECK(fs::exists(snap + "/report.txt"));
  CHECK(fs::exists(snap + "/report.json"));
  // The written snapshot analyses offline to the same verdict.
  Stats stats;
  auto a = Analyzer(&stats, {}).AnalyzeDir(snap);
  REQUIRE(a.ok());
  CHECK(a.value().verdict_counts[static_cast<size_t>(Verdict::kLostInRouting)] == 1);

  // Reported once: further polls do not repeat the same hang.
  CHECK(Find(w.Poll(NowNs()), "hang_detected") == nullptr);

  // VM exits: files removed -> detached; restarted -> attached again.
  fs::remove(vm + "/hv.region");
  ev = w.Poll(NowNs());
  REQUIRE(Find(ev, "vm_detached") != nullptr);
  CHECK(w.Poll(NowNs()).empty());
  Scenario fresh(2, 1024);
  fresh.FullChain(0, 1, 100, kFunc, kCsd);
  WriteRegions(vm, fresh);
  ev = w.Poll(NowNs());
  CHECK(Find(ev, "vm_attached") != nullptr);
  fs::remove_all(dir);
}

TEST_CASE("watch - guest-only: a guest region alone, a sent IPI never taken") {
  const std::string dir = TempDir();
  const std::string guest = dir + "/guest.region";
  Scenario sc(2, 1024);
  for (uint64_t i = 0; i < 4; ++i) sc.FullChain(i % 2, 1 - i % 2, 1000 + i * 1000, kFunc, kCsd + i);
  // Sent, never taken; CPU 1 goes on well past the settle window.
  sc.Queue(0, 1, 20000, kFunc, kCsd + 0x100);
  sc.Send(0, 1, 20010);
  for (uint64_t k = 1; k <= 80; ++k) sc.Mark(1, 20000 + k * 10 * kMs);
  WriteInPlace(guest, sc.guest().Bytes());
  WatchOptions opts;
  opts.hang_ms = 50;
  opts.settle_ms = 100;
  opts.out_dir = dir + "/out";
  Watcher w({ParseWatchTarget(":" + guest)}, opts);
  std::vector<Json> ev = w.Poll(NowNs());
  const Json* att = Find(ev, "vm_attached");
  REQUIRE(att != nullptr);
  CHECK((*att)["guest_only"] == true);
  CHECK((*att)["hv"].is_null());
  const Json* hang = Find(ev, "hang_detected");
  REQUIRE(hang != nullptr);
  CHECK((*hang)["verdict"] == "lost-in-unobserved-stage");
  CHECK_THAT((*hang)["reason"].get<std::string>(),
             Catch::Matchers::ContainsSubstring("sent, never received"));
  // The snapshot has no hv.region, and analyses offline, guest-only, alike.
  const std::string snap = (*hang)["snapshot"];
  CHECK_FALSE(fs::exists(snap + "/hv.region"));
  Stats stats;
  AnalyzerOptions o;
  o.settle_ms = 100;
  auto a = Analyzer(&stats, o).AnalyzeDir(snap);
  REQUIRE(a.ok());
  CHECK(a.value().snapshot.hv.source.guest_only);
  CHECK(a.value().verdict_counts[static_cast<size_t>(Verdict::kLostInUnobservedStage)] == 1);
  fs::remove_all(dir);
}

TEST_CASE("watch - served traffic over many polls and ring wraps: no copy, no analysis") {
  // Between hangs watch reads only what the rings gained: 300 polls of
  // served requests through rings of 64 slots (they wrap many times) make
  // no full check; one lost request then makes exactly one, and its hang.
  const std::string dir = TempDir();
  Scenario sc(2, 64);
  auto publish = [&] { WriteRegions(dir, sc); };
  publish();
  WatchOptions opts;
  opts.hang_ms = 5;
  opts.out_dir = dir + "/out";
  Watcher w({ParseWatchTarget(dir)}, opts);
  const uint64_t t0 = NowNs();
  REQUIRE(Find(w.Poll(t0), "vm_attached") != nullptr);
  uint64_t tsc = 1000;
  for (int poll = 0; poll < 300; ++poll) {
    for (int k = 0; k < 3; ++k, tsc += kMs) sc.FullChain(k % 2, 1 - k % 2, tsc, kFunc, kCsd + k % 2);
    publish();
    CHECK(w.Poll(t0).empty());  // wall time frozen: only stream time counts
  }
  CHECK(w.full_checks() == 0);
  sc.Queue(0, 1, tsc, kFunc, kCsd + 0x100);  // lost before send
  publish();
  CHECK(w.Poll(t0).empty());
  for (int k = 0; k < 8; ++k, tsc += kMs) sc.FullChain(1, 0, tsc + kMs, kFunc, kCsd + 1);
  publish();
  const auto ev = w.Poll(t0);
  const Json* hang = Find(ev, "hang_detected");
  REQUIRE(hang != nullptr);
  CHECK((*hang)["source_cpu"] == 0);
  CHECK((*hang)["target_cpu"] == 1);
  CHECK(w.full_checks() == 1);
  CHECK(w.Poll(t0).empty());  // reported once, not checked again
  CHECK(w.full_checks() == 1);
  fs::remove_all(dir);
}

TEST_CASE("watch - head moving backwards latches the ring corrupt") {
  const std::string dir = TempDir();
  Scenario sc(2);
  sc.FullChain(0, 1, 100, kFunc, kCsd);
  sc.FullChain(1, 0, 200, kFunc, kCsd + 1);
  WriteRegions(dir, sc);
  Watcher w({ParseWatchTarget(dir)}, {});
  REQUIRE(Find(w.Poll(NowNs()), "vm_attached") != nullptr);
  sc.guest().ring_header(1).head -= 2;  // producer index goes back
  WriteInPlace(dir + "/guest.region", sc.guest().Bytes());
  const auto ev = w.Poll(NowNs());
  const Json* c = Find(ev, "ring_corrupt");
  REQUIRE(c != nullptr);
  CHECK((*c)["stream"] == "guest");
  CHECK((*c)["ring"] == 1);
  // Latched: reported once.
  CHECK(Find(w.Poll(NowNs()), "ring_corrupt") == nullptr);
  fs::remove_all(dir);
}

TEST_CASE("watch - replaced file is re-opened") {
  const std::string dir = TempDir();
  Scenario sc(2);
  sc.FullChain(0, 1, 100, kFunc, kCsd);
  WriteRegions(dir, sc);
  Watcher w({ParseWatchTarget(dir + "/hv.region:" + dir + "/guest.region")}, {});
  REQUIRE(Find(w.Poll(NowNs()), "vm_attached") != nullptr);
  // New inode under the same name (a new VM run).
  fs::rename(dir + "/hv.region", dir + "/old");
  WriteInPlace(dir + "/hv.region", sc.hv().Bytes());
  const auto ev = w.Poll(NowNs());
  CHECK(Find(ev, "vm_detached") != nullptr);
  CHECK(Find(ev, "vm_attached") != nullptr);
  fs::remove_all(dir);
}

TEST_CASE("watch - file truncated while mapped - SIGBUS is caught and not fatal") {
  const std::string dir = TempDir();
  const std::string path = dir + "/region";
  std::vector<std::byte> bytes(1 << 16, std::byte{0x5a});
  WriteInPlace(path, bytes);
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  void* p = ::mmap(nullptr, bytes.size(), PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(p != MAP_FAILED);
  std::vector<std::byte> copy(bytes.size());
  CHECK(GuardedCopy(copy.data(), p, copy.size()));
  REQUIRE(::ftruncate(fd, 0) == 0);
  CHECK_FALSE(GuardedCopy(copy.data(), p, copy.size()));
  // And again (the guard re-arms).
  CHECK_FALSE(GuardedCopy(copy.data(), p, copy.size()));
  ::munmap(p, bytes.size());
  ::close(fd);
  fs::remove_all(dir);
}

TEST_CASE("snapshot - corrupt zstd is an error") {
  std::vector<std::byte> junk(100, std::byte{0x28});
  auto r = ZstdDecompress(junk, "junk.zst");
  CHECK_FALSE(r.ok());
  CHECK(r.status().code() == ErrorCode::kMalformed);
}

}  // namespace
}  // namespace ipitrace

namespace ipitrace {

TEST_CASE("watch - a live region's copy has no torn records below its heads") {
  // A copy that reads the records first and the ring header last, with a
  // writer appending in between (what a large memcpy may do): the copy
  // must not claim the records it caught before they were written.
  HvRegionWriter::Layout l;
  l.vcpus = 1;
  l.capacity = 1024;
  l.tsc_khz = 1'000'000;
  l.apic_id = {0};
  std::vector<std::byte> live(HvRegionWriter::SizeFor(l));
  HvRegionWriter writer(live, l, 0);
  ipt_record r{};
  r.type = IPT_H_ACK;
  r.target = IPT_CPU_NONE;
  r.vector = 0xfb;
  auto append = [&](int n) {
    for (int i = 0; i < n; ++i) {
      r.tsc += 10;
      writer.Append(0, r);
    }
  };
  append(100);
  // The records first, the headers last: the writer appends 5 records in
  // between.
  ipt_region_header h{};
  std::memcpy(&h, live.data(), sizeof(h));
  const size_t records_at = h.header_size + IPT_RING_HEADER_SIZE;
  const auto out_of_order = [&](void* d, const void* s, size_t k) {
    if (k < records_at) {
      std::memcpy(d, s, k);
      return true;
    }
    std::memcpy(static_cast<std::byte*>(d) + records_at,
                static_cast<const std::byte*>(s) + records_at, k - records_at);
    append(5);
    std::memcpy(d, s, records_at);
    return true;
  };
  auto torn_in = [&](const std::vector<std::byte>& copy, size_t* kept) {
    Stats stats;
    auto region = RegionReader(&stats).Read(copy, StreamKind::kHv, "copy");
    REQUIRE(region.ok());
    *kept = region.value().rings[0].records.size();
    return stats.Get(StatId::torn_record);
  };
  std::vector<std::byte> plain(live.size()), heads_first(live.size());
  REQUIRE(out_of_order(plain.data(), live.data(), live.size()));
  size_t kept = 0;
  CHECK(torn_in(plain, &kept) == 5);  // what the plain copy claims falsely
  REQUIRE(RegionCopyWith(heads_first.data(), live.data(), live.size(), StreamKind::kHv,
                         out_of_order));
  CHECK(torn_in(heads_first, &kept) == 0);
  CHECK(kept == 105);  // the records up to the head read first (100 + 5)
}

}  // namespace ipitrace
