// SPDX-License-Identifier: MIT
#include "testing/scenario.h"

#include <filesystem>
#include <fstream>

#include "region_reader.h"
#include "result.h"

namespace ipitrace::testing {
namespace {

ipt_record Rec(uint16_t type, uint64_t tsc) {
  ipt_record r{};
  r.type = type;
  r.tsc = tsc;
  r.target = IPT_CPU_NONE;
  return r;
}

void WriteFile(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  IPT_CHECK(out.good());
}

}  // namespace

Scenario::Scenario(uint32_t cpus, uint32_t capacity)
    : guest_(StreamKind::kGuest, cpus, capacity),
      hv_(StreamKind::kHv, cpus, capacity, /*misc_ring=*/true) {}

void Scenario::Queue(uint32_t s, uint32_t t, uint64_t tsc, uint64_t func,
                     uint64_t csd, uint8_t csd_type) {
  ipt_record r = Rec(IPT_G_QUEUE, tsc);
  r.target = static_cast<uint16_t>(t);
  r.flags = csd_type;
  r.a[0] = func;
  r.a[1] = csd;
  r.a[2] = 0xffffffff81200000ULL;
  guest_.Append(s, r);
}

void Scenario::Send(uint32_t s, uint32_t t, uint64_t tsc, bool mask,
                    uint64_t callback) {
  ipt_record r = Rec(IPT_G_SEND, tsc);
  r.target = static_cast<uint16_t>(t);
  r.flags = mask ? IPT_SEND_F_MASK : 0;
  r.a[0] = callback;
  guest_.Append(s, r);
}

void Scenario::Elide(uint32_t s, uint32_t t, uint64_t tsc) {
  ipt_record r = Rec(IPT_G_ELIDE, tsc);
  r.target = static_cast<uint16_t>(t);
  guest_.Append(s, r);
}

void Scenario::IrqEntry(uint32_t cpu, uint8_t vector, uint64_t tsc) {
  ipt_record r = Rec(IPT_G_IRQ_ENTRY, tsc);
  r.vector = vector;
  guest_.Append(cpu, r);
}

void Scenario::FuncEntry(uint32_t cpu, uint64_t func, uint64_t csd,
                         uint64_t tsc, bool with_exit) {
  ipt_record r = Rec(IPT_G_FUNC_ENTRY, tsc);
  r.a[0] = func;
  r.a[1] = csd;
  guest_.Append(cpu, r);
  if (with_exit) FuncExit(cpu, func, csd, tsc + 1);
}

void Scenario::FuncExit(uint32_t cpu, uint64_t func, uint64_t csd,
                        uint64_t tsc) {
  ipt_record r = Rec(IPT_G_FUNC_EXIT, tsc);
  r.a[0] = func;
  r.a[1] = csd;
  guest_.Append(cpu, r);
}

void Scenario::IrqExit(uint32_t cpu, uint8_t vector, uint64_t tsc) {
  ipt_record r = Rec(IPT_G_IRQ_EXIT, tsc);
  r.vector = vector;
  guest_.Append(cpu, r);
}

void Scenario::Hang(uint32_t cpu, uint32_t t, uint64_t tsc, uint64_t func,
                    uint64_t csd) {
  ipt_record r = Rec(IPT_G_HANG, tsc);
  r.target = static_cast<uint16_t>(t);
  r.a[0] = func;
  r.a[1] = csd;
  r.arg0 = 1000;
  guest_.Append(cpu, r);
}

void Scenario::Kick(uint32_t v, uint32_t vt, uint64_t tsc, bool halted) {
  ipt_record r = Rec(IPT_H_KICK, tsc);
  r.target = static_cast<uint16_t>(vt);
  r.flags = halted ? IPT_KICK_F_HALTED : 0;
  hv_.Append(v, r);
}

void Scenario::Mark(uint32_t cpu, uint64_t tsc) {
  ipt_record r = Rec(IPT_G_MARK, tsc);
  r.arg0 = 100;
  guest_.Append(cpu, r);
}

uint64_t Scenario::Icr(uint32_t vs, uint8_t vector, uint64_t tsc,
                       std::initializer_list<uint32_t> targets) {
  ipt_record r = Rec(IPT_H_ICR, tsc);
  r.vector = vector;
  r.arg0 = 0x4000u | vector;  // fixed, physical, no shorthand
  for (uint32_t t : targets) {
    r.a[t / 64] |= uint64_t{1} << (t % 64);
    r.arg1 = t;
  }
  return hv_.Append(vs, r);
}

void Scenario::Irr(uint32_t vs, uint32_t vt, uint8_t vector, uint64_t icr_seq,
                   uint64_t tsc, bool coalesced) {
  ipt_record r = Rec(IPT_H_IRR, tsc);
  r.target = static_cast<uint16_t>(vt);
  r.vector = vector;
  r.flags = IPT_IRR_F_DELIVERABLE | (coalesced ? IPT_IRR_F_COALESCED : 0);
  r.a[0] = icr_seq;
  hv_.Append(vs, r);
}

void Scenario::Ack(uint32_t v, uint8_t vector, uint64_t tsc) {
  ipt_record r = Rec(IPT_H_ACK, tsc);
  r.vector = vector;
  hv_.Append(v, r);
}

void Scenario::Eoi(uint32_t v, uint8_t vector, uint64_t tsc) {
  ipt_record r = Rec(IPT_H_EOI, tsc);
  r.vector = vector;
  hv_.Append(v, r);
}

void Scenario::ChainToEntry(uint32_t s, uint32_t t, uint64_t tsc, uint64_t func,
                            uint64_t csd) {
  Queue(s, t, tsc, func, csd);
  Send(s, t, tsc + 10);
  const uint64_t icr = Icr(s, kVecSingle, tsc + 20, {t});
  Irr(s, t, kVecSingle, icr, tsc + 30);
  Ack(t, kVecSingle, tsc + 40);
  IrqEntry(t, kVecSingle, tsc + 50);
}

void Scenario::FullChain(uint32_t s, uint32_t t, uint64_t tsc, uint64_t func,
                         uint64_t csd) {
  ChainToEntry(s, t, tsc, func, csd);
  FuncEntry(t, func, csd, tsc + 60);
  Eoi(t, kVecSingle, tsc + 70);
}

Snapshot Scenario::Load(Stats* stats) const {
  RegionReader reader(stats);
  Snapshot snap;
  snap.dir = "<memory>";
  const auto hv_bytes = hv_bytes_.empty() ? hv_.Bytes() : hv_bytes_;
  const auto guest_bytes = guest_.Bytes();
  auto hv = reader.Read(hv_bytes, StreamKind::kHv, "hv");
  auto guest = reader.Read(guest_bytes, StreamKind::kGuest, "guest");
  IPT_CHECK(hv.ok() && guest.ok());
  snap.hv = std::move(hv).value();
  snap.guest = std::move(guest).value();
  return snap;
}

Analysis Scenario::Analyze(Stats* stats) const {
  // Tests read any request, with its evidence.
  AnalyzerOptions options;
  options.whole_requests = true;
  return Analyzer(stats, options).Analyze(Load(stats));
}

void Scenario::WriteDir(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/hv.region", hv_bytes_.empty() ? hv_.Bytes() : hv_bytes_);
  WriteFile(dir + "/guest.region", guest_.Bytes());
  std::ofstream(dir + "/manifest.json")
      << R"({"format": 1, "generator": "ipitrace make_snapshot"})" << "\n";
  // The agent must never read these.
  std::ofstream(dir + "/faults.jsonl") << "this is not json\n";
  std::ofstream(dir + "/console.log") << "boot\n";
}

}  // namespace ipitrace::testing
