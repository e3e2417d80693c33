// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_TESTING_SCENARIO_H_
#define IPITRACE_HOST_AGENT_TESTING_SCENARIO_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "analyzer.h"
#include "snapshot.h"
#include "stats.h"
#include "testing/region_builder.h"

namespace ipitrace::testing {

// Scenario writes both streams of an N-CPU guest (guest CPU i = vCPU i,
// APIC ID i) record by record, in the vocabulary of docs/streams.md, and
// turns them into a Snapshot (in memory) or a snapshot directory (on disk).
class Scenario {
 public:
  static constexpr uint8_t kVecSingle = RegionBuilder::kVecCallFunctionSingle;
  static constexpr uint8_t kVecMask = RegionBuilder::kVecCallFunction;
  static constexpr uint64_t kCallback = 0xffffffff81100000ULL;

  explicit Scenario(uint32_t cpus, uint32_t capacity = 256);

  RegionBuilder& guest() { return guest_; }
  RegionBuilder& hv() { return hv_; }

  // Guest stream.
  void Queue(uint32_t s, uint32_t t, uint64_t tsc, uint64_t func, uint64_t csd,
             uint8_t csd_type = IPT_CSD_SYNC);
  void Send(uint32_t s, uint32_t t, uint64_t tsc, bool mask = false,
            uint64_t callback = kCallback);
  void Elide(uint32_t s, uint32_t t, uint64_t tsc);
  void IrqEntry(uint32_t cpu, uint8_t vector, uint64_t tsc);
  // Writes G_FUNC_ENTRY and, unless with_exit is false, the matching
  // G_FUNC_EXIT one tick later.
  void FuncEntry(uint32_t cpu, uint64_t func, uint64_t csd, uint64_t tsc,
                 bool with_exit = true);
  void FuncExit(uint32_t cpu, uint64_t func, uint64_t csd, uint64_t tsc);
  void IrqExit(uint32_t cpu, uint8_t vector, uint64_t tsc);
  void Hang(uint32_t cpu, uint32_t t, uint64_t tsc, uint64_t func, uint64_t csd);
  void Kick(uint32_t v, uint32_t vt, uint64_t tsc, bool halted);
  void Mark(uint32_t cpu, uint64_t tsc);  // unrelated later activity

  // Hypervisor stream.  Icr returns the H_ICR seq on vCPU vs's ring.
  uint64_t Icr(uint32_t vs, uint8_t vector, uint64_t tsc,
               std::initializer_list<uint32_t> targets);
  void Irr(uint32_t vs, uint32_t vt, uint8_t vector, uint64_t icr_seq,
           uint64_t tsc, bool coalesced = false);
  void Ack(uint32_t v, uint8_t vector, uint64_t tsc);
  void Eoi(uint32_t v, uint8_t vector, uint64_t tsc);

  // Single-send chain S -> T starting at tsc (records 10 ticks apart), up
  // to the target's handler: queue, send, ICR, IRR, ACK, IRQ entry.
  void ChainToEntry(uint32_t s, uint32_t t, uint64_t tsc, uint64_t func, uint64_t csd);
  // Whole single-send chain S -> T starting at tsc (records 10 ticks
  // apart): queue, send, ICR, IRR, ACK, IRQ entry, function entry.
  void FullChain(uint32_t s, uint32_t t, uint64_t tsc, uint64_t func,
                 uint64_t csd);

  // Analyse these hypervisor region bytes instead of hv() (e.g. a region
  // written by the KVM source's translator).
  void UseHvBytes(std::vector<std::byte> bytes) { hv_bytes_ = std::move(bytes); }

  Snapshot Load(Stats* stats) const;
  Analysis Analyze(Stats* stats) const;
  // Writes manifest.json, hv.region and guest.region into dir (created).
  void WriteDir(const std::string& dir) const;

 private:
  RegionBuilder guest_;
  RegionBuilder hv_;
  std::vector<std::byte> hv_bytes_;
};

}  // namespace ipitrace::testing

#endif  // IPITRACE_HOST_AGENT_TESTING_SCENARIO_H_
