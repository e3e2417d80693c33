// SPDX-License-Identifier: MIT
//
// make_seeds DIR: writes the seed corpus of region_fuzz (small valid
// snapshots in the fuzz input format: mode, hv length, hv, guest).
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "testing/scenario.h"

namespace {

using ipitrace::testing::Scenario;

void Write(const std::string& path, Scenario& sc, uint8_t mode) {
  const auto hv = sc.hv().Bytes();
  const auto guest = sc.guest().Bytes();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint32_t len = static_cast<uint32_t>(hv.size());
  out.put(static_cast<char>(mode));
  out.write(reinterpret_cast<const char*>(&len), 4);
  out.write(reinterpret_cast<const char*>(hv.data()), static_cast<std::streamsize>(hv.size()));
  out.write(reinterpret_cast<const char*>(guest.data()), static_cast<std::streamsize>(guest.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  constexpr uint64_t kFunc = 0xffffffff81001000ULL, kCsd = 0xffff888003a00000ULL;
  {
    Scenario sc(2, 8);
    sc.FullChain(0, 1, 100, kFunc, kCsd);
    sc.FullChain(1, 0, 200, kFunc, kCsd + 1);
    Write(dir + "/served", sc, 0);
    Write(dir + "/served-mutating", sc, 1);
  }
  {
    Scenario sc(2, 8);
    sc.Queue(0, 1, 100, kFunc, kCsd);
    sc.Send(0, 1, 110);
    sc.Icr(0, Scenario::kVecSingle, 120, {1});
    sc.Queue(0, 1, 130, kFunc, kCsd + 1);
    sc.Ack(1, 0xec, 300);
    sc.Mark(1, 400);
    Write(dir + "/lost-routing", sc, 0);
    Write(dir + "/lost-routing-live", sc, 4);
    Write(dir + "/lost-routing-live-mutating", sc, 5);
  }
  {
    Scenario sc(3, 8);
    sc.Queue(0, 1, 100, kFunc, kCsd);
    sc.Queue(0, 2, 101, kFunc, kCsd + 2);
    sc.Send(0, 1, 110, true);
    sc.Send(0, 2, 110, true);
    const uint64_t icr = sc.Icr(0, Scenario::kVecMask, 120, {1, 2});
    sc.Irr(0, 1, Scenario::kVecMask, icr, 130);
    sc.Irr(0, 2, Scenario::kVecMask, icr, 131, true);
    sc.Ack(1, Scenario::kVecMask, 140);
    sc.Kick(0, 2, 150, true);
    sc.IrqEntry(1, Scenario::kVecMask, 150);
    sc.FuncEntry(1, kFunc, kCsd, 160, false);
    sc.Mark(1, 170);
    sc.Elide(2, 0, 180);
    for (int i = 0; i < 12; ++i) sc.Eoi(2, 0xff, 200 + i);  // wraps
    sc.guest().AddSymbol(kFunc, "generic_func", 0x40);
    Write(dir + "/mask-wrap-sym", sc, 0);
  }
  return 0;
}
