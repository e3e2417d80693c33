// SPDX-License-Identifier: MIT
#include "kvm_translator.h"

#include <cstdio>
#include <vector>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "analyzer.h"
#include "kvm_vm.h"
#include "region_reader.h"
#include "testing/scenario.h"

namespace ipitrace {
namespace {

using K = KvmEvent::Kind;
using testing::Scenario;

constexpr uint64_t kFunc = 0xffffffff81001000ULL;
constexpr uint64_t kCsd = 0xffff888003a00000ULL;
constexpr uint8_t kVs = Scenario::kVecSingle;
constexpr uint8_t kVm = Scenario::kVecMask;
// Host TSC = guest TSC - kOffset (the guest runs kOffset ahead).
constexpr int64_t kOffset = 1000;
constexpr int32_t kTid0 = 500, kTid1 = 501, kTid2 = 502, kTid3 = 503;
// ICR low: fixed delivery, physical destination, no shorthand.
constexpr uint32_t IcrLow(uint8_t vec) { return vec; }

// The stages a KVM source observes with no acceleration on, as the
// collector works them out (no kvm_intel, no kvm_amd parameters).
uint32_t KvmStages() { return ReadKvmAccel("/nonexistent-ipitrace-sys-module").stages; }

// A VM of n vCPUs with APIC IDs 0..n-1 on threads kTid0.., as QEMU names
// them, and an HvRegionWriter in a buffer.
struct Bed {
  explicit Bed(uint32_t n, uint32_t stages = KvmStages()) {
    HvRegionWriter::Layout l;
    l.vcpus = n;
    l.capacity = 1024;
    l.tsc_khz = testing::RegionBuilder::kTscKhz;
    for (uint32_t i = 0; i < n; ++i) l.apic_id.push_back(i);
    mem.assign(HvRegionWriter::SizeFor(l), std::byte{0});
    writer = std::make_unique<HvRegionWriter>(std::span<std::byte>(mem), l, 0);
    writer->SetSource(stages, 0, stages == KvmStages() ? 0u : uint32_t{IPT_HV_ACCEL_APICV},
                      "kvm-tracefs");
    KvmVmInfo vm;
    for (uint32_t i = 0; i < n; ++i) {
      vm.vcpu_id.push_back(i);
      vm.thread_vcpu[kTid0 + static_cast<int32_t>(i)] = i;
      vm.tsc_offset.push_back(kOffset);
    }
    vm.stages = stages;
    tr = std::make_unique<KvmTranslator>(writer.get(), vm);
  }
  // Events at guest TSC 'tsc' (converted to the host clock here).
  void Ev(K kind, int32_t tid, uint64_t tsc, std::array<uint64_t, 5> f = {}) {
    KvmEvent e;
    e.kind = kind;
    e.tid = tid;
    e.host_tsc = tsc - kOffset;
    e.f = f;
    tr->Push(e);
  }
  // A single IPI S -> T through KVM: ICR write, accept, wakeup, injection.
  void Ipi(int32_t s_tid, uint32_t t, uint8_t vec, uint64_t tsc, bool inject = true) {
    Ev(K::kApicIpi, s_tid, tsc, {IcrLow(vec), t});
    Ev(K::kAcceptIrq, s_tid, tsc + 2, {t, 0, 0, vec});
    if (inject) Ev(K::kInjVirq, kTid0 + static_cast<int32_t>(t), tsc + 5, {vec, 0, 0});
  }
  Region Read(Stats* stats) const {
    auto r = RegionReader(stats).Read(mem, StreamKind::kHv, "hv");
    REQUIRE(r.ok());
    return std::move(r).value();
  }
  std::vector<std::byte> mem;
  std::unique_ptr<HvRegionWriter> writer;
  std::unique_ptr<KvmTranslator> tr;
};

std::vector<ipt_record> Records(const Region& r, uint32_t vcpu) {
  const Ring* ring = r.RingForCpu(vcpu);
  REQUIRE(ring);
  return {ring->records.begin(), ring->records.end()};
}

uint64_t Count(const Analysis& a, Verdict v) { return a.verdict_counts[static_cast<size_t>(v)]; }

TEST_CASE("kvm translator - ICR write, accept and injection become H_ICR, H_IRR, H_ACK") {
  Bed b(2);
  b.Ipi(kTid0, 1, kVs, 100);
  b.Ev(K::kEoi, kTid1, 120, {1, kVs});
  Stats stats;
  const Region r = b.Read(&stats);
  CHECK(r.header.producer == IPT_PRODUCER_KVM);
  CHECK(r.source.name == "kvm-tracefs");
  CHECK(r.source.Observes(IPT_HV_STAGE_ALL & ~uint32_t{IPT_HV_STAGE_COALESCE}));
  CHECK_FALSE(r.source.Observes(IPT_HV_STAGE_COALESCE));  // KVM never shows it
  const auto s = Records(r, 0);
  REQUIRE(s.size() == 2);
  CHECK(s[0].type == IPT_H_ICR);
  CHECK(s[0].tsc == 100);  // the guest's clock
  CHECK(s[0].vector == kVs);
  CHECK(IcrTargets(s[0], 1));
  CHECK_FALSE(IcrTargets(s[0], 0));
  CHECK(s[1].type == IPT_H_IRR);
  CHECK(s[1].target == 1);
  CHECK(s[1].a[0] == s[0].seq);  // names its ICR
  CHECK_FALSE(s[1].flags & IPT_IRR_F_COALESCED);
  const auto t = Records(r, 1);
  REQUIRE(t.size() == 2);
  CHECK(t[0].type == IPT_H_ACK);
  CHECK(t[0].vector == kVs);
  CHECK(t[0].tsc == 105);
  CHECK(t[1].type == IPT_H_EOI);
}

TEST_CASE("kvm translator - PV send-IPI hypercall is one H_ICR per target") {
  Bed b(4);
  // KVM_HC_SEND_IPI: bitmap 0b1010 from APIC ID 0 -> vCPUs 1 and 3.
  b.Ev(K::kHypercall, kTid0, 100, {10, 0b1010, 0, 0, kVm});
  b.Ev(K::kAcceptIrq, kTid0, 102, {1, 0, 0, kVm});
  b.Ev(K::kAcceptIrq, kTid0, 103, {3, 0, 0, kVm});
  // Another hypercall (not send-IPI) is ignored.
  b.Ev(K::kHypercall, kTid0, 110, {5, 0, 0, 0, 0});
  Stats stats;
  const auto s = Records(b.Read(&stats), 0);
  REQUIRE(s.size() == 4);
  CHECK(s[0].type == IPT_H_ICR);
  CHECK(s[1].type == IPT_H_ICR);
  CHECK((s[0].flags & IPT_ICR_F_PV));
  CHECK(IcrTargets(s[0], 1));
  CHECK_FALSE(IcrTargets(s[0], 3));
  CHECK(IcrTargets(s[1], 3));
  CHECK(s[2].type == IPT_H_IRR);
  CHECK(s[2].target == 1);
  CHECK(s[2].a[0] == s[0].seq);
  CHECK(s[3].target == 3);
  CHECK(s[3].a[0] == s[1].seq);
}

TEST_CASE("kvm translator - never claims coalescing; re-injections are no ACK") {
  Bed b(2);
  b.Ipi(kTid0, 1, kVs, 100, /*inject=*/false);
  b.Ipi(kTid0, 1, kVs, 110, /*inject=*/false);  // KVM may or may not have found it set
  b.Ev(K::kInjVirq, kTid1, 120, {kVs, 0, 0});
  b.Ev(K::kInjVirq, kTid1, 121, {kVs, 0, 1});  // a re-injection: no new ACK
  b.Ipi(kTid0, 1, kVs, 130, /*inject=*/false);
  Stats stats;
  const Region r = b.Read(&stats);
  const auto s = Records(r, 0);
  REQUIRE(s.size() == 6);
  for (const size_t i : {1u, 3u, 5u}) {
    CHECK(s[i].type == IPT_H_IRR);
    CHECK_FALSE(s[i].flags & IPT_IRR_F_COALESCED);
  }
  CHECK_FALSE(r.source.Observes(IPT_HV_STAGE_COALESCE));
  CHECK(Records(r, 1).size() == 1);
  CHECK(b.tr->counts().reinjected == 1);
}

TEST_CASE("kvm translator - destinations: shorthands, broadcast, logical") {
  Bed b(4);
  b.Ev(K::kApicIpi, kTid2, 100, {kVs | (3u << 18), 0});   // all but self
  b.Ev(K::kApicIpi, kTid2, 110, {kVs | (1u << 18), 0});   // self
  b.Ev(K::kApicIpi, kTid2, 120, {kVs, 0xff});             // xAPIC broadcast
  b.Ev(K::kApicIpi, kTid2, 130, {kVs | (1u << 11), 0x2});  // logical
  Stats stats;
  const auto s = Records(b.Read(&stats), 2);
  REQUIRE(s.size() == 4);
  CHECK(s[0].a[0] == 0b1011);
  CHECK(s[1].a[0] == 0b0100);
  CHECK(s[2].a[0] == 0b1111);
  CHECK((s[3].flags & IPT_ICR_F_UNRESOLVED));
  CHECK(IcrTargets(s[3], 0));  // may have meant anyone
}

TEST_CASE("kvm translator - kvm_entry maps threads QEMU did not name") {
  Bed b(2);
  b.Ev(K::kInjVirq, 777, 90, {kVs, 0, 0});  // unknown thread: counted
  b.Ev(K::kEntry, 777, 95, {1});
  b.Ev(K::kInjVirq, 777, 100, {kVs, 0, 0});
  b.Ev(K::kEntry, kTid0, 105, {1});  // the map was wrong: fixed
  CHECK(b.tr->counts().unmapped_thread == 1);
  CHECK_FALSE(b.tr->ThreadMapChecked());  // vCPU 0 not seen entering yet
  b.Ev(K::kEntry, kTid0 + 5, 106, {0});
  CHECK(b.tr->ThreadMapChecked());
  CHECK(b.tr->counts().map_learned == 2);
  CHECK(b.tr->counts().map_fixed == 1);
  Stats stats;
  const Region r = b.Read(&stats);
  CHECK(Records(r, 1).size() == 1);
  CHECK(r.source.lost[IPT_HV_LOST_UNMAPPED] == 1);
}

TEST_CASE("kvm translator - a hidden stage writes no records") {
  Bed b(2, KvmStages() & ~uint32_t{IPT_HV_STAGE_ACK | IPT_HV_STAGE_EOI});
  b.Ipi(kTid0, 1, kVs, 100);
  b.Ev(K::kEoi, kTid1, 120, {1, kVs});
  Stats stats;
  const Region r = b.Read(&stats);
  CHECK(Records(r, 0).size() == 2);  // ICR, IRR
  CHECK(Records(r, 1).empty());      // no ACK, no EOI
  CHECK(b.tr->counts().hidden == 2);
  CHECK_FALSE(r.source.Observes(IPT_HV_STAGE_ACK));
}

TEST_CASE("kvm translator - TSC offset changes follow kvm_write_tsc_offset") {
  Bed b(2);
  b.Ev(K::kWriteTscOffset, kTid1, 50, {1, kOffset, kOffset + 5000});
  b.Ev(K::kInjVirq, kTid1, 100, {kVs, 0, 0});
  Stats stats;
  const auto t = Records(b.Read(&stats), 1);
  REQUIRE(t.size() == 1);
  CHECK(t[0].tsc == 5100);
}

// End to end: the guest's stream from Scenario, the hypervisor's from the
// translator, analysed together.
Scenario GuestRequest(uint32_t n, uint32_t s, uint32_t t, uint64_t tsc, bool enters) {
  Scenario sc(n);
  sc.Queue(s, t, tsc, kFunc, kCsd);
  sc.Send(s, t, tsc + 1);
  if (enters) {
    sc.IrqEntry(t, kVs, tsc + 20);
    sc.FuncEntry(t, kFunc, kCsd, tsc + 21);
    sc.IrqExit(t, kVs, tsc + 23);
  }
  return sc;
}

TEST_CASE("kvm translator - a served IPI is served-by-ipi") {
  Scenario sc = GuestRequest(2, 0, 1, 100, true);
  Bed b(2);
  b.Ipi(kTid0, 1, kVs, 105);
  sc.UseHvBytes(b.mem);
  Stats stats;
  const Analysis a = sc.Analyze(&stats);
  CHECK(Count(a, Verdict::kServedByIpi) == 1);
}

TEST_CASE("kvm translator - a skipped accept is lost-in-routing") {
  Scenario sc = GuestRequest(2, 0, 1, 100, false);
  sc.Mark(1, 2'000'000'000);  // the target goes on
  Bed b(2);
  b.Ev(K::kApicIpi, kTid0, 105, {IcrLow(kVs), 1});
  b.Ev(K::kInjVirq, kTid1, 1'000'000'000, {0xec, 0, 0});  // the target's timer
  b.Ev(K::kInjVirq, kTid0, 1'000'000'000, {0xec, 0, 0});  // the sender's
  sc.UseHvBytes(b.mem);
  Stats stats;
  const Analysis a = sc.Analyze(&stats);
  CHECK(Count(a, Verdict::kLostInRouting) == 1);
  CHECK(a.requests.size() == 1);
}

TEST_CASE("kvm translator - with APICv the acknowledge is never blamed") {
  // IRR set, then nothing: with every stage seen this is an injection
  // loss; with APICv on, the acknowledge is invisible and the verdict names
  // the interval instead.
  for (const bool apicv : {false, true}) {
    const uint32_t stages =
        apicv ? KvmStages() & ~uint32_t{IPT_HV_STAGE_ACK | IPT_HV_STAGE_EOI} : KvmStages();
    Scenario sc = GuestRequest(2, 0, 1, 100, false);
    sc.Mark(1, 2'000'000'000);
    Bed b(2, stages);
    b.Ipi(kTid0, 1, kVs, 105, /*inject=*/false);
    b.Ev(K::kInjVirq, kTid1, 1'000'000'000, {0xec, 0, 0});
    b.Ev(K::kWakeup, kTid1, 1'000'000'001, {1000, 1, 1});  // seen either way
    sc.UseHvBytes(b.mem);
    Stats stats;
    const Analysis a = sc.Analyze(&stats);
    REQUIRE(a.requests.size() == 1);
    const Request r = a.requests[0];
    if (!apicv) {
      CHECK(r.verdict == Verdict::kLostInInjection);
    } else {
      CHECK(r.verdict == Verdict::kLostInUnobservedStage);
      CHECK_THAT(r.reason, Catch::Matchers::ContainsSubstring("ACK"));
      CHECK_THAT(r.reason, Catch::Matchers::ContainsSubstring("kvm_intel enable_apicv=0"));
      CHECK(stats.Get(StatId::hv_stage_unobserved) == 1);
    }
  }
}

TEST_CASE("kvm translator - with APICv an entry after a later IPI does not prove this one") {
  // IRR set for request A, then (A's IPI withdrawn, invisible) request B's
  // IPI; one handler entry serves both.  A is served, but not shown to be
  // by its own IPI: served-without-ipi, never served-by-ipi or a loss.
  const uint32_t hidden = IPT_HV_STAGE_ACK | IPT_HV_STAGE_EOI | IPT_HV_STAGE_COALESCE;
  Scenario sc(2);
  sc.Queue(0, 1, 100, kFunc, kCsd);
  sc.Send(0, 1, 101);
  sc.Queue(0, 1, 5000, kFunc, kCsd + 64);
  sc.Send(0, 1, 5001);
  sc.IrqEntry(1, kVs, 5020);
  sc.FuncEntry(1, kFunc, kCsd, 5021);
  sc.FuncEntry(1, kFunc, kCsd + 64, 5025);
  sc.IrqExit(1, kVs, 5030);
  Bed b(2, KvmStages() & ~hidden);
  b.Ipi(kTid0, 1, kVs, 105, false);
  b.Ipi(kTid0, 1, kVs, 5005, false);
  sc.UseHvBytes(b.mem);
  Stats stats;
  const Analysis a = sc.Analyze(&stats);
  REQUIRE(a.requests.size() == 2);
  CHECK(a.requests[0].verdict == Verdict::kServedWithoutIpi);
  CHECK_THAT(a.requests[0].reason, Catch::Matchers::ContainsSubstring("not observable"));
  CHECK(a.requests[1].verdict == Verdict::kServedByIpi);
}

TEST_CASE("kvm translator - a trace-buffer loss makes the window inconclusive") {
  Scenario sc = GuestRequest(2, 0, 1, 100, false);
  sc.Mark(1, 2'000'000'000);
  Bed b(2);
  KvmEvent lost;
  lost.kind = K::kLost;
  lost.host_tsc = 1300 - kOffset;
  lost.f = {17, 1090 - kOffset};
  b.tr->Push(lost);  // the accept may have been among the 17
  b.Ev(K::kInjVirq, kTid1, 1'000'000'000, {0xec, 0, 0});
  b.Ev(K::kInjVirq, kTid0, 1'000'000'000, {0xec, 0, 0});
  sc.UseHvBytes(b.mem);
  Stats stats;
  const Analysis a = sc.Analyze(&stats);
  CHECK(Count(a, Verdict::kInconclusiveGap) == 1);
  CHECK(stats.Get(StatId::hv_source_gap) == 2);  // one marker per vCPU ring
  CHECK(stats.Get(StatId::hv_source_lost) == 17);
}

// Request A (S=0 -> T=1) whose IPI's IRR bit vanishes unseen, then
// request B whose IPI is acknowledged; one handler entry serves both.
// KVM's events cannot tell "A coalesced with B" from "A's bit vanished",
// unless T was given a lower vector in between, chosen after A's set had
// completed: then A's bit was gone (a LAPIC gives the highest first).
struct VanishedBit {
  Scenario sc{2};
  Bed b{2};
  explicit VanishedBit(bool proof, bool lower_via_lapic = true) {
    sc.Queue(0, 1, 100, kFunc, kCsd);
    sc.Send(0, 1, 101);
    sc.Queue(0, 1, 50'000, kFunc, kCsd + 64);
    sc.Send(0, 1, 50'001);
    sc.IrqEntry(1, kVs, 50'020);
    sc.FuncEntry(1, kFunc, kCsd, 50'021);
    sc.FuncEntry(1, kFunc, kCsd + 64, 50'025);
    sc.IrqExit(1, kVs, 50'030);
    sc.Mark(1, 2'000'000'000);
    b.Ipi(kTid0, 1, kVs, 105, /*inject=*/false);  // A: set at 107
    // S's thread writes again at 'done' (A's set completed by then); T's
    // thread wrote at 'before' and then was given 0xec.
    const uint64_t done = 300, before = proof ? 400 : 200;
    b.Ev(K::kEoi, kTid0, done, {0, 0xef});
    if (lower_via_lapic) b.Ev(K::kAcceptIrq, kTid1, 150, {1, 0, 0, 0xec});
    b.Ev(K::kWakeup, kTid1, before, {1000, 1, 1});
    b.Ev(K::kInjVirq, kTid1, 500, {0xec, 0, 0});
    b.Ipi(kTid0, 1, kVs, 50'005);  // B: set and acknowledged
  }
};

TEST_CASE("kvm translator - a lower vector chosen after the set proves the bit vanished") {
  VanishedBit v(/*proof=*/true);
  v.sc.UseHvBytes(v.b.mem);
  Stats stats;
  const Analysis a = v.sc.Analyze(&stats);
  REQUIRE(a.requests.size() == 2);
  CHECK(a.requests[0].verdict == Verdict::kLostInInjection);
  CHECK(a.requests[0].served_late);
  CHECK_THAT(a.requests[0].reason, Catch::Matchers::ContainsSubstring("lower vector 0xec"));
  CHECK(a.requests[1].verdict == Verdict::kServedByIpi);
}

TEST_CASE("kvm translator - without that proof a later set leaves the IPI unproven") {
  // The lower vector may have been chosen before A's bit was set (the
  // setting thread wrote nothing in between), or it came from the PIC (no
  // LAPIC set of it): coalesced or vanished cannot be told, no blame.
  for (const bool lapic : {true, false}) {
    VanishedBit v(/*proof=*/!lapic, lapic);
    v.sc.UseHvBytes(v.b.mem);
    Stats stats;
    const Analysis a = v.sc.Analyze(&stats);
    REQUIRE(a.requests.size() == 2);
    CHECK(a.requests[0].verdict == Verdict::kServedWithoutIpi);
    CHECK_THAT(a.requests[0].reason, Catch::Matchers::ContainsSubstring("cannot see coalescing"));
    CHECK(a.requests[1].verdict == Verdict::kServedByIpi);
    for (size_t i = 0; i < a.verdict_counts.size(); ++i)
      if (IsLoss(static_cast<Verdict>(i))) CHECK(a.verdict_counts[i] == 0);
  }
}

}  // namespace
}  // namespace ipitrace
