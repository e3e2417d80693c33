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
#include <fstream>
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

}  // namespace

int main(int argc, char** argv) {
  const bool help = argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h");
  if (help || argc < 2 || argc > 3 || argv[1][0] == '-') {
    // A DIR starting with '-' is an option mistyped, not a directory.
    std::fprintf(help ? stdout : stderr,
                 "usage: make_snapshot DIR [mixed|large|badmagic]\n"
                 "Writes a synthetic snapshot (manifest.json, hv.region, guest.region)\n"
                 "into DIR: 'mixed' (default) has every verdict, 'large' 175,000\n"
                 "requests on 8 CPUs (the benchmark input), 'badmagic' a bad hv header.\n");
    return help ? 0 : 2;
  }
  const std::string dir = argv[1];
  const std::string kind = argc == 3 ? argv[2] : "mixed";
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
