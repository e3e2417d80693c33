// SPDX-License-Identifier: MIT
// The KVM readers' pure parts: the clock map from CLOCK_MONOTONIC to host
// TSC, the BPF record conversion, the cross-CPU ordering, and the one event
// list that both readers follow.  (The readers against a real kernel run in
// the nested KVM bed: harness/tests/test_nested.py.)
#include <catch2/catch_test_macros.hpp>

#include <set>
#include <string>

#include <bpf/libbpf.h>

#include "bpf/kvm_bpf_event.h"
#include "kvm_bpf.h"
#include "kvm_events.h"
#include "kvm_source.skel.h"
#include "kvm_vm.h"

namespace ipitrace {
namespace {

// The map's rates are 32.32 fixed point: within a tick of the exact value.
bool Near(uint64_t got, uint64_t want) { return got + 1 >= want && got <= want + 1; }

TEST_CASE("MonoTscMap - interpolates between pairs, extrapolates from the nearest") {
  MonoTscMap m(2'000'000);  // 2 GHz nominal
  // One pair: the nominal rate.
  m.Add(1'000, 10'000);
  CHECK(m.Tsc(2'000) == 12'000);
  CHECK(m.Tsc(500) == 9'000);
  // Two segments with different rates (NTP moved the multiplier).
  m.Add(1'001'000, 2'010'000);  // 2.0 ticks/ns
  m.Add(2'001'000, 4'110'000);  // 2.1 ticks/ns
  CHECK(Near(m.Tsc(501'000), 1'010'000));
  CHECK(m.Tsc(1'001'000) == 2'010'000);
  CHECK(Near(m.Tsc(1'501'000), 3'060'000));
  CHECK(Near(m.Tsc(2'101'000), 4'320'000));  // after the last: its segment's rate
  CHECK(Near(m.Tsc(0), 8'000));              // before the first: the first's rate
  // A pair that does not move forward is ignored.
  m.Add(2'001'000, 5'000'000);
  m.Add(3'000'000, 4'000'000);
  CHECK(Near(m.Tsc(2'101'000), 4'320'000));
}

TEST_CASE("MonoTscMap - keeps a bounded window of pairs") {
  MonoTscMap m(1'000'000);
  for (uint64_t i = 0; i < 3 * MonoTscMap::kKeep; ++i) m.Add(i * 1000, i * 1000 + 7);
  CHECK(m.Tsc(5'000) == 5'007);  // far before the window: extrapolated, same rate
  CHECK(m.Tsc(3 * MonoTscMap::kKeep * 1000) == 3 * MonoTscMap::kKeep * 1000 + 7);
}

TEST_CASE("MonoTscMap - samples the live clocks in step") {
  MonoTscMap m(0);
  m.Sample();
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  m.Sample();
  const uint64_t ns = static_cast<uint64_t>(t.tv_sec) * 1000000000ull + t.tv_nsec;
  const uint64_t tsc = m.Tsc(ns);
  const uint64_t now = ReadTsc();
  CHECK(tsc > 0);
  CHECK(tsc <= now);
}

TEST_CASE("KvmBpf::Convert - kinds, fields, loss window") {
  MonoTscMap m(1'000'000);  // 1 tick per ns
  m.Add(1'000, 5'000);
  m.Add(2'000, 6'000);
  ipt_kvm_bpf_event r{};
  r.ns = 1'500;
  r.kind = IPT_KVM_BPF_ACCEPT_IRQ;
  r.tid = 4242;
  r.f[0] = 1;
  r.f[3] = 0xfb;
  KvmEvent ev;
  KvmBpf::Convert(r, m, &ev);
  CHECK(ev.kind == KvmEvent::Kind::kAcceptIrq);
  CHECK(ev.tid == 4242);
  CHECK(ev.host_tsc == 5'500);
  CHECK(ev.f[0] == 1);
  CHECK(ev.f[3] == 0xfb);

  r.kind = IPT_KVM_BPF_LOST;
  r.f[0] = 17;
  r.f[1] = 1'200;  // the last event written before the drops
  KvmBpf::Convert(r, m, &ev);
  CHECK(ev.kind == KvmEvent::Kind::kLost);
  CHECK(ev.tid == -1);
  CHECK(ev.f[0] == 17);
  CHECK(ev.f[1] == 5'200);
  r.f[1] = 0;  // none: the loss reaches back to the start
  KvmBpf::Convert(r, m, &ev);
  CHECK(ev.f[1] == 0);
}

TEST_CASE("KvmEventOrder - merges CPUs' runs, holds what is not yet safe") {
  auto ev = [](uint64_t t, KvmEvent::Kind k = KvmEvent::Kind::kApicIpi) {
    KvmEvent e;
    e.kind = k;
    e.host_tsc = t;
    return e;
  };
  KvmEventOrder o;
  std::vector<KvmEvent> run = {ev(10), ev(30), ev(50)};
  o.Add(&run);
  CHECK(run.empty());
  run = {ev(40), ev(20), ev(40, KvmEvent::Kind::kLost), ev(60)};  // one ring: nearly in order
  o.Add(&run);
  std::vector<KvmEvent> out;
  o.Release(40, &out);
  REQUIRE(out.size() == 5);
  for (size_t i = 1; i < out.size(); ++i) CHECK(out[i - 1].host_tsc <= out[i].host_tsc);
  // Equal times keep their order within a run.
  CHECK(out[3].kind == KvmEvent::Kind::kApicIpi);
  CHECK(out[4].kind == KvmEvent::Kind::kLost);
  CHECK(o.held() == 2);
  o.Release(UINT64_MAX, &out);
  CHECK(out.size() == 7);
  CHECK(o.held() == 0);
}

TEST_CASE("KvmEventOrder - a run far from order is sorted, stably") {
  KvmEventOrder o;
  std::vector<KvmEvent> run;
  for (int i = 0; i < 200; ++i) {
    KvmEvent e;
    e.host_tsc = static_cast<uint64_t>(1000 - (i / 2) * 5);  // descending, pairs equal
    e.tid = i;  // the order within a pair must stay
    run.push_back(e);
  }
  o.Add(&run);
  std::vector<KvmEvent> out;
  o.Release(UINT64_MAX, &out);
  REQUIRE(out.size() == 200);
  for (size_t i = 1; i < out.size(); ++i) {
    CHECK(out[i - 1].host_tsc <= out[i].host_tsc);
    if (out[i - 1].host_tsc == out[i].host_tsc) CHECK(out[i - 1].tid < out[i].tid);
  }
}

TEST_CASE("KVM events - the BPF object has one program per listed event, and no other") {
  kvm_source_bpf* skel = kvm_source_bpf__open();  // parses the object, loads nothing
  REQUIRE(skel != nullptr);
  std::set<std::string> listed, programs;
  for (const KvmEventSpec& e : KvmEventSpecs()) {
    listed.insert(e.name);
    bpf_program* p = bpf_object__find_program_by_name(skel->obj, e.name);
    REQUIRE(p != nullptr);
    CHECK(std::string(bpf_program__section_name(p)) == std::string("raw_tp/") + e.name);
  }
  bpf_program* p = nullptr;
  bpf_object__for_each_program(p, skel->obj) programs.insert(bpf_program__name(p));
  CHECK(programs == listed);
  kvm_source_bpf__destroy(skel);
}

TEST_CASE("KVM events - the hypercall filter names KVM_HC_SEND_IPI") {
  for (const KvmEventSpec& e : KvmEventSpecs())
    if (std::string(e.name) == "kvm_hypercall")
      CHECK(std::string(e.filter) == "nr == " + std::to_string(IPT_KVM_HC_SEND_IPI));
}

}  // namespace
}  // namespace ipitrace
