// SPDX-License-Identifier: MIT
#include "hang_screen.h"

#include <cstring>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include <catch2/catch_test_macros.hpp>

#include "analyzer.h"
#include "testing/scenario.h"

namespace ipitrace {
namespace {

using testing::Scenario;

constexpr uint64_t kFunc = 0xffffffff81001000ULL;
constexpr uint64_t kCsd = 0xffff888003a00000ULL;

HangScreen::UpdateResult Update(HangScreen* s, Scenario& sc,
                                std::vector<HangScreen::CorruptRing>* corrupt = nullptr) {
  std::vector<HangScreen::CorruptRing> scratch;
  const std::vector<std::byte> hv = sc.hv().Bytes();
  const std::vector<std::byte> guest = sc.guest().Bytes();
  return s->Update(hv, guest, corrupt ? corrupt : &scratch);
}

// (source cpu, queue tsc) of the requests the full analysis calls unserved.
std::set<std::pair<uint32_t, uint64_t>> BatchUnserved(const Scenario& sc) {
  Stats stats;
  const Analysis a = sc.Analyze(&stats);
  std::set<std::pair<uint32_t, uint64_t>> out;
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const RequestTable::Row& r = a.requests.row(i);
    if (!r.served()) out.insert({r.source_cpu, r.queue_tsc});
  }
  return out;
}

std::set<std::pair<uint32_t, uint64_t>> ScreenOutstanding(HangScreen s) {
  std::set<std::pair<uint32_t, uint64_t>> out;
  while (auto o = s.Oldest()) {
    out.insert({o->source_cpu, o->queue_tsc});
    s.DropQueuedUpTo(o->queue_tsc);
  }
  return out;
}

TEST_CASE("hang screen - served chains leave nothing; a lost IPI stays outstanding") {
  Scenario sc(2);
  sc.FullChain(0, 1, 1000, kFunc, kCsd);
  sc.FullChain(1, 0, 2000, kFunc, kCsd + 1);
  HangScreen s;
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  CHECK(s.tsc_khz() == testing::RegionBuilder::kTscKhz);
  // Lost in routing: queued, sent, ICR, no IRR, no function entry.
  sc.Queue(0, 1, 3000, kFunc, kCsd + 2);
  sc.Send(0, 1, 3010);
  sc.Icr(0, Scenario::kVecSingle, 3020, {1});
  sc.Mark(1, 5000);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  REQUIRE(s.Oldest().has_value());
  CHECK(s.Oldest()->source_cpu == 0);
  CHECK(s.Oldest()->target_cpu == 1);
  CHECK(s.Oldest()->queue_tsc == 3000);
  CHECK(s.newest_tsc() == 5000);
  // Served late by a flush: gone at the next update.
  sc.FuncEntry(1, kFunc, kCsd + 2, 6000);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  CHECK(s.records() >= 15);
}

// A guest kernel without function records (before 6.3): the served rule
// takes the handler entry for the function, here as in the tracker.
TEST_CASE("hang screen - without function records a handler entry serves") {
  Scenario sc(2);
  ipt_ghdr_ext x{};
  x.magic = IPT_GHDR_EXT_MAGIC;
  x.stage_src[IPT_G_STAGE_QUEUE] = IPT_G_SRC_KPROBE;
  x.stage_src[IPT_G_STAGE_SEND] = IPT_G_SRC_KPROBE;
  x.stage_src[IPT_G_STAGE_ELIDE] = IPT_G_SRC_TRACEPOINT;
  x.stage_src[IPT_G_STAGE_IRQ] = IPT_G_SRC_TRACEPOINT;
  x.stage_src[IPT_G_STAGE_FUNC] = IPT_G_SRC_NONE;
  std::memcpy(reinterpret_cast<std::byte*>(&sc.guest().header()) + IPT_GHDR_EXT_OFFSET, &x,
              sizeof(x));
  sc.Queue(0, 1, 1000, kFunc, kCsd);
  sc.Send(0, 1, 1010);
  sc.Mark(1, 1020);
  HangScreen s;
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 1);
  sc.IrqEntry(1, Scenario::kVecSingle, 1050);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
}

// The hang screen accepts records by the one rule (CheckRecord) that
// RegionReader uses: before, it had no cpu/target range check, so a queue
// to CPU 999 was an outstanding request on the screen and a rejected
// record in the analysis.
TEST_CASE("hang screen - a record naming an out-of-range CPU is rejected, as by the reader") {
  Scenario sc(2);
  sc.FullChain(0, 1, 1000, kFunc, kCsd);
  ipt_record bad{};
  bad.type = IPT_G_QUEUE;
  bad.tsc = 2000;
  bad.cpu = 0;
  bad.target = 999;  // no such CPU
  bad.a[0] = kFunc;
  bad.a[1] = kCsd + 1;
  sc.guest().Append(0, bad);
  sc.Mark(0, 3000);
  HangScreen s;
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  CHECK(s.stats().Get(StatId::cpu_out_of_range) == 1);
  Stats reader_stats;
  (void)sc.Load(&reader_stats);
  CHECK(reader_stats.Get(StatId::cpu_out_of_range) == 1);
}

TEST_CASE("hang screen - an entry read before its queue still serves it") {
  Scenario sc(2);
  sc.Queue(0, 1, 1000, kFunc, kCsd);
  sc.FuncEntry(1, kFunc, kCsd, 1100);
  std::vector<std::byte> hv = sc.hv().Bytes();
  // First poll: CPU 0's ring does not show its G_QUEUE yet.
  sc.guest().ring_header(0).head = 0;
  std::vector<std::byte> early = sc.guest().Bytes();
  sc.guest().ring_header(0).head = 1;
  std::vector<std::byte> late = sc.guest().Bytes();
  HangScreen s;
  std::vector<HangScreen::CorruptRing> corrupt;
  REQUIRE(s.Update(hv, early, &corrupt) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  REQUIRE(s.Update(hv, late, &corrupt) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  CHECK(corrupt.empty());
}

TEST_CASE("hang screen - keys: csd, function (ttwu, csd-less), irq_work") {
  Scenario sc(2);
  sc.Queue(0, 1, 100, kFunc, kCsd);                           // csd
  sc.Queue(0, 1, 110, kFunc + 0x40, 0);                        // csd-less: by function
  sc.Queue(0, 1, 120, kFunc + 0x80, kCsd + 8, IPT_CSD_TTWU);   // ttwu: by function
  sc.Queue(0, 1, 130, 0, kCsd + 16, IPT_CSD_IRQ_WORK);         // irq_work
  sc.FuncEntry(1, kFunc, kCsd + 99, 200);  // same function, other csd: serves none of the csd
  HangScreen s;
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  // The entry at 200 is a call-function point: it serves the irq_work
  // request; the csd request wants its own csd.
  CHECK(ScreenOutstanding(s) == BatchUnserved(sc));
  CHECK(s.outstanding() == 3);
  sc.FuncEntry(1, kFunc + 0x40, kCsd + 50, 300);
  sc.FuncEntry(1, kFunc + 0x80, kCsd + 51, 310);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 1);
  CHECK(s.Oldest()->queue_tsc == 100);
  sc.FuncEntry(1, kFunc, kCsd, 400);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  // An irq_work request served by a call-function IRQ entry alone.
  sc.Queue(1, 0, 500, 0, kCsd + 32, IPT_CSD_IRQ_WORK);
  sc.IrqEntry(0, Scenario::kVecSingle, 510);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  CHECK(BatchUnserved(sc).empty());
  // An entry stamped with the queue's own TSC serves it ("at or after"),
  // whichever of the two is read first.
  sc.FuncEntry(0, kFunc, kCsd + 64, 600);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  sc.Queue(1, 0, 600, kFunc, kCsd + 64);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 0);
  CHECK(BatchUnserved(sc).empty());
}

TEST_CASE("hang screen - agrees with the full analysis on random streams") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 50; ++round) {
    const uint32_t cpus = 2 + static_cast<uint32_t>(rng() % 3);
    Scenario sc(cpus, 1024);
    HangScreen s;
    uint64_t t = 1000;
    for (int i = 0; i < 60; ++i) {
      const uint32_t src = static_cast<uint32_t>(rng() % cpus);
      const uint32_t dst = (src + 1 + static_cast<uint32_t>(rng() % (cpus - 1))) % cpus;
      const uint64_t csd = kCsd + (rng() % 4) * 0x20 + src;
      const uint64_t func = kFunc + (rng() % 3) * 0x40;
      const uint8_t type = static_cast<uint8_t>(rng() % 4);  // async, sync, irq_work, ttwu
      const uint64_t key_csd = rng() % 5 == 0 ? 0 : csd;
      switch (rng() % 4) {
        case 0:
        case 1:
          sc.FullChain(src, dst, t, func, key_csd);
          break;
        case 2:  // queued, never served (yet)
          sc.Queue(src, dst, t, func, key_csd, type);
          break;
        default:  // a function entry or call-function IRQ that may serve some
          if (rng() % 2)
            sc.FuncEntry(dst, func, csd, t);
          else
            sc.IrqEntry(dst, rng() % 2 ? Scenario::kVecSingle : Scenario::kVecMask, t);
          break;
      }
      t += 10 + rng() % 100;
      if (rng() % 7 == 0) REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
    }
    REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
    INFO("round " << round);
    CHECK(ScreenOutstanding(s) == BatchUnserved(sc));
  }
}

TEST_CASE("hang screen - head backwards, restart, wrap, torn and bad input") {
  Scenario sc(2, 64);
  sc.FullChain(0, 1, 100, kFunc, kCsd);
  HangScreen s;
  std::vector<HangScreen::CorruptRing> corrupt;
  REQUIRE(Update(&s, sc, &corrupt) == HangScreen::UpdateResult::kOk);
  sc.guest().ring_header(1).head -= 1;
  REQUIRE(Update(&s, sc, &corrupt) == HangScreen::UpdateResult::kOk);
  REQUIRE(corrupt.size() == 1);
  CHECK(corrupt[0].stream == StreamKind::kGuest);
  CHECK(corrupt[0].ring == 1);
  CHECK(s.CorruptRings(StreamKind::kGuest).at(1));
  REQUIRE(Update(&s, sc, &corrupt) == HangScreen::UpdateResult::kOk);
  CHECK(corrupt.size() == 1);  // latched: reported once
  CHECK(s.stats().Get(StatId::ring_head_backwards) == 1);  // and counted once

  // The producer re-initialises (new generation): everything starts over.
  sc.Queue(0, 1, 900, kFunc, kCsd + 1);
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.outstanding() == 1);
  sc.guest().header().generation += 1;
  REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
  CHECK(s.restarted());
  CHECK_FALSE(s.CorruptRings(StreamKind::kGuest).at(1));

  // More than a ring's worth between two updates: counted, not read.
  Scenario w(2, 64);
  HangScreen ws;
  REQUIRE(Update(&ws, w) == HangScreen::UpdateResult::kOk);
  for (uint64_t i = 0; i < 50; ++i) w.FullChain(0, 1, 1000 + i * 100, kFunc, kCsd);
  REQUIRE(Update(&ws, w) == HangScreen::UpdateResult::kOk);
  CHECK(ws.stats().Get(StatId::ring_overwritten) > 0);
  // A torn slot is rejected, not read.
  w.Queue(0, 1, 9000, kFunc, kCsd + 5);
  w.guest().Tear(0, w.guest().ring_header(0).head - 1);
  const uint64_t torn = ws.stats().Get(StatId::torn_record);
  REQUIRE(Update(&ws, w) == HangScreen::UpdateResult::kOk);
  CHECK(ws.stats().Get(StatId::torn_record) == torn + 1);
  CHECK(ws.outstanding() == 0);

  // A record with a wild TSC ages nothing once its ring has moved on.
  Scenario z(2, 64);
  HangScreen zs;
  z.FullChain(0, 1, 1000, kFunc, kCsd);
  z.Mark(0, uint64_t{1} << 62);
  REQUIRE(Update(&zs, z) == HangScreen::UpdateResult::kOk);
  CHECK(zs.newest_tsc() == uint64_t{1} << 62);
  z.Mark(0, 2000);
  REQUIRE(Update(&zs, z) == HangScreen::UpdateResult::kOk);
  CHECK(zs.newest_tsc() == 2000);

  // Bad layouts are "not ready", never a crash.
  std::vector<std::byte> hv = sc.hv().Bytes(), guest = sc.guest().Bytes();
  HangScreen b;
  std::vector<std::byte> zeros(guest.size());
  CHECK(b.Update(hv, zeros, &corrupt) == HangScreen::UpdateResult::kNotReady);
  std::vector<std::byte> ff(guest.size(), std::byte{0xff});
  CHECK(b.Update(hv, ff, &corrupt) == HangScreen::UpdateResult::kNotReady);
  CHECK(b.Update(hv, std::span(guest).first(100), &corrupt) ==
        HangScreen::UpdateResult::kNotReady);
  CHECK(b.Update(hv, std::span(guest).first(guest.size() - 64), &corrupt) ==
        HangScreen::UpdateResult::kNotReady);
  std::vector<std::byte> swapped = guest;  // a guest region in the hv slot
  CHECK(b.Update(swapped, guest, &corrupt) == HangScreen::UpdateResult::kNotReady);
  CHECK(b.Update(hv, guest, &corrupt) == HangScreen::UpdateResult::kOk);
}

TEST_CASE("hang screen - memory follows the outstanding requests, not the stream") {
  // 20,000 requests through 2 rings of 256 slots, one in 500 lost; the
  // caller forgets what has waited too long, as watch does.
  Scenario sc(2, 256);
  HangScreen s;
  size_t peak = 0;
  uint64_t t = 1000;
  for (uint64_t i = 0; i < 20000; ++i, t += 100) {
    const uint32_t src = i % 2;
    if (i % 500 == 499)
      sc.Queue(src, 1 - src, t, kFunc, kCsd + i);
    else
      sc.FullChain(src, 1 - src, t, kFunc, kCsd + src);
    if (i % 8 == 7) {
      REQUIRE(Update(&s, sc) == HangScreen::UpdateResult::kOk);
      if (s.newest_tsc() > 50'000) s.DropQueuedUpTo(s.newest_tsc() - 50'000);
      peak = std::max(peak, s.outstanding());
    }
  }
  CHECK(s.records() > 90000);
  CHECK(s.stats().Get(StatId::ring_overwritten) == 0);
  CHECK(peak <= 2);
  CHECK(s.keys() <= 3 * 2 * 2 + 40);  // a few keys per CPU, plus the lost ones' csds
}

}  // namespace
}  // namespace ipitrace
