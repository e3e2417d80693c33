// SPDX-License-Identifier: MIT
//
// make_snapshot DIR [KIND]: writes a synthetic snapshot directory for the
// end-to-end CLI test and for trying the agent by hand.
//   KIND "mixed" (default): 4 CPUs; served IPIs, an elided request, a rider,
//        one injected routing loss (served late by a flush), a mask send
//        with one target dropped, and an in-flight request at the end.
//   KIND "badmagic": as mixed, with a corrupt hv.region magic.
//   KIND "large": 8 CPUs, 200k served requests (ring wrap, timing).
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

#include "testing/scenario.h"

namespace {

using ipitrace::testing::Scenario;

constexpr uint64_t kFunc = 0xffffffff81001000ULL;
constexpr uint64_t kCsd = 0xffff888003a00000ULL;

void Mixed(Scenario* sc) {
  sc->guest().AddSymbol(kFunc, "generic_func", 0x80);
  // Served by IPI, a few times on every pair.
  uint64_t t = 1000;
  for (uint32_t s = 0; s < 4; ++s) {
    for (uint32_t d = 0; d < 4; ++d) {
      if (s == d) continue;
      sc->FullChain(s, d, t, kFunc, kCsd + s * 0x100 + d);
      t += 100;
    }
  }
  // Elided.
  sc->Queue(0, 3, t, kFunc, kCsd + 0x1000);
  sc->Elide(0, 3, t + 5);
  sc->FuncEntry(3, kFunc, kCsd + 0x1000, t + 50);
  t += 100;
  // Lost in routing (vCPU 1 -> vCPU 2), later served by a flush.
  sc->Queue(1, 2, t, kFunc, kCsd + 0x2000);
  sc->Send(1, 2, t + 10);
  sc->Icr(1, Scenario::kVecSingle, t + 20, {2});
  // Rider queued while the lost IPI is pending, served by the same flush.
  sc->Queue(3, 2, t + 30, kFunc, kCsd + 0x3000);
  sc->FuncEntry(2, kFunc, kCsd + 0x2000, t + 80);
  sc->FuncEntry(2, kFunc, kCsd + 0x3000, t + 85);
  t += 100;
  // Mask send 0 -> {1, 2}, IRR for 2 dropped.
  sc->Queue(0, 1, t, kFunc, kCsd + 0x4000);
  sc->Queue(0, 2, t + 1, kFunc, kCsd + 0x4100);
  sc->Send(0, 1, t + 10, true);
  sc->Send(0, 2, t + 10, true);
  const uint64_t icr = sc->Icr(0, Scenario::kVecMask, t + 20, {1, 2});
  sc->Irr(0, 1, Scenario::kVecMask, icr, t + 30);
  sc->Ack(1, Scenario::kVecMask, t + 40);
  sc->IrqEntry(1, Scenario::kVecMask, t + 50);
  sc->FuncEntry(1, kFunc, kCsd + 0x4000, t + 60);
  t += 100;
  // Later activity everywhere.
  for (uint32_t c = 0; c < 4; ++c) {
    sc->Ack(c, 0xec, t + c);
    sc->Mark(c, t + 10 + c);
  }
  t += 100;
  // In flight at the end: sent, nothing on the hv side yet.
  sc->Queue(2, 3, t, kFunc, kCsd + 0x5000);
  sc->Send(2, 3, t + 10);
}

// A random snapshot for comparing two builds of the agent
// (scripts/equiv-agent.py): every request shape of docs/streams.md -- full
// chains, elisions, riders, mask sends, losses at each stage served late or
// never, stuck callbacks, kicks, other vectors -- on 2 to 6 CPUs, with
// requests that overlap and rings small enough to wrap.  Any bytes are a
// valid input here: the two builds must only agree on them.  mt19937_64's
// raw output is the same everywhere, so a seed names one snapshot.
void Random(uint64_t seed, const std::string& dir) {
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return n ? rng() % n : 0; };
  const auto cpus = static_cast<uint32_t>(2 + pick(5));
  const uint32_t capacity = pick(4) == 0 ? 64u : 1024u;
  Scenario sc(cpus, capacity);
  if (pick(2)) sc.guest().AddSymbol(kFunc, "generic_func", 0x80);
  const uint64_t requests = 20 + pick(180);
  uint64_t t = 1000;
  for (uint64_t i = 0; i < requests; ++i) {
    const auto s = static_cast<uint32_t>(pick(cpus));
    auto d = static_cast<uint32_t>(pick(cpus - 1));
    if (d >= s) ++d;
    const uint64_t csd = kCsd + (pick(8) << 6) + (uint64_t{s} << 12);
    const uint8_t vec = pick(4) == 0 ? Scenario::kVecMask : Scenario::kVecSingle;
    const bool mask = vec == Scenario::kVecMask;
    const uint64_t step = 1 + pick(12);
    uint64_t u = t;
    auto next = [&] { return u += step; };
    const uint64_t shape = pick(12);
    sc.Queue(s, d, next(), kFunc, csd, pick(6) == 0 ? IPT_CSD_ASYNC : IPT_CSD_SYNC);
    if (shape == 0) {  // elided: the target was polling
      sc.Elide(s, d, next());
      if (pick(4)) sc.FuncEntry(d, kFunc, csd, next() + pick(300));
    } else if (shape == 1) {  // rider: no send of its own
      if (pick(3)) sc.FuncEntry(d, kFunc, csd, next() + pick(300));
    } else {
      sc.Send(s, d, next(), mask);
      if (shape != 2) {  // 2: no ICR
        const uint64_t seq = mask ? sc.Icr(s, vec, next(), {d, static_cast<uint32_t>(pick(cpus))})
                                  : sc.Icr(s, vec, next(), {d});
        if (shape != 3) {  // 3: no IRR
          sc.Irr(s, d, vec, seq, next(), pick(8) == 0);
          if (pick(3) == 0) sc.Kick(d, d, next(), pick(2));
          if (shape != 4) {  // 4: no ACK
            sc.Ack(d, vec, next());
            if (shape != 5) {  // 5: no IRQ entry
              sc.IrqEntry(d, vec, next());
              if (shape != 6) sc.FuncEntry(d, kFunc, csd, next(), shape != 7);  // 6 missed, 7 stuck
              sc.IrqExit(d, vec, next());
              if (pick(2)) sc.Eoi(d, vec, next());
            }
          } else if (pick(2)) {
            sc.Ack(d, 0xec, next() + pick(100));
          }
        }
      }
      // A loss served late by a flush, sometimes.
      if (shape >= 2 && shape <= 5 && pick(2)) sc.FuncEntry(d, kFunc, csd, next() + pick(500));
    }
    if (pick(10) == 0) sc.Mark(static_cast<uint32_t>(pick(cpus)), next());
    // Mostly one after the other, sometimes overlapping the next request.
    t += pick(5) == 0 ? 1 + pick(40) : 60 + pick(400);
  }
  // Later activity everywhere, unless the trace ends mid-flight.
  if (pick(3)) {
    t += 100000 + pick(1000000000);
    for (uint32_t c = 0; c < cpus; ++c) {
      sc.Ack(c, 0xec, t + c);
      sc.Mark(c, t + 10 + c);
    }
  }
  sc.WriteDir(dir);
}

}  // namespace

int main(int argc, char** argv) {
  const bool help = argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h");
  if (help || argc < 2 || argc > 3 || argv[1][0] == '-') {
    // A DIR starting with '-' is an option mistyped, not a directory.
    std::fprintf(help ? stdout : stderr,
                 "usage: make_snapshot DIR [mixed|large|badmagic|random:SEED]\n"
                 "Writes a synthetic snapshot (manifest.json, hv.region, guest.region)\n"
                 "into DIR: 'mixed' (default) has every verdict, 'large' 175,000\n"
                 "requests on 8 CPUs (the benchmark input), 'badmagic' a bad hv header,\n"
                 "'random:SEED' a random mix of every request shape (scripts/equiv-agent.py).\n");
    return help ? 0 : 2;
  }
  const std::string dir = argv[1];
  const std::string kind = argc == 3 ? argv[2] : "mixed";
  if (kind.rfind("random:", 0) == 0) {
    char* end = nullptr;
    const unsigned long long seed = std::strtoull(kind.c_str() + 7, &end, 10);
    if (kind.size() == 7 || *end != '\0') {
      std::fprintf(stderr, "make_snapshot: random:SEED needs a decimal SEED\n");
      return 2;
    }
    Random(seed, dir);
    return 0;
  }
  if (kind == "large") {
    Scenario big(8, 1u << 18);
    uint64_t t = 1000;
    for (uint32_t i = 0; i < 200000; ++i, t += 100) {
      const uint32_t s = i % 8, d = (i / 8 + 1 + s) % 8;
      if (s != d) big.FullChain(s, d, t, kFunc, kCsd + s);
    }
    big.WriteDir(dir);
    return 0;
  }
  Scenario sc(4);
  Mixed(&sc);
  if (kind == "badmagic") {
    sc.hv().header().magic = 0xdeadbeef;
  } else if (kind != "mixed") {
    std::fprintf(stderr, "make_snapshot: unknown kind %s\n", kind.c_str());
    return 2;
  }
  sc.WriteDir(dir);
  return 0;
}
