// SPDX-License-Identifier: MIT
#include "testing/region_builder.h"

#include <cstring>

#include "result.h"

namespace ipitrace::testing {

RegionBuilder::RegionBuilder(StreamKind kind, uint32_t cpus, uint32_t capacity,
                             bool misc_ring) {
  const uint32_t n = cpus + (misc_ring ? 1 : 0);
  header_.magic = IPT_MAGIC;
  header_.abi_major = IPT_ABI_MAJOR;
  header_.abi_minor = IPT_ABI_MINOR;
  header_.producer = kind == StreamKind::kGuest ? IPT_PRODUCER_GUEST : IPT_PRODUCER_QEMU;
  header_.record_size = IPT_RECORD_SIZE;
  header_.header_size = IPT_HEADER_SIZE;
  header_.ring_count = n;
  header_.ring_capacity = capacity;
  header_.flags = IPT_REGION_F_READY | IPT_REGION_F_STOPPED;
  header_.ring_stride = IPT_RING_HEADER_SIZE + uint64_t{capacity} * IPT_RECORD_SIZE;
  stride_ = header_.ring_stride;
  header_.region_size = IPT_HEADER_SIZE + n * stride_;
  header_.tsc_khz = kTscKhz;
  header_.cpu_count = cpus;
  header_.vec_call_function = kVecCallFunction;
  header_.vec_call_function_single = kVecCallFunctionSingle;
  header_.vec_reschedule = kVecReschedule;
  header_.generation = 1;
  header_.start_tsc = 0;
  for (uint32_t i = 0; i < IPT_MAX_CPUS; ++i)
    header_.apic_id[i] = i < cpus ? i : IPT_APIC_ID_NONE;
  rings_.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    rings_[i].header.cpu = i < cpus ? i : IPT_CPU_NONE;
    rings_[i].slots.resize(capacity);
  }
}

uint64_t RegionBuilder::Append(uint32_t ring, ipt_record rec) {
  RingData& r = rings_.at(ring);
  const uint64_t seq = r.header.head;
  rec.seq = seq;
  if (rec.cpu == 0) rec.cpu = static_cast<uint16_t>(r.header.cpu);
  r.slots[seq & (r.slots.size() - 1)] = rec;
  r.header.head = seq + 1;
  return seq;
}

void RegionBuilder::Tear(uint32_t ring, uint64_t index) {
  RingData& r = rings_.at(ring);
  r.slots[index & (r.slots.size() - 1)].seq = IPT_SEQ_INVALID;
}

void RegionBuilder::AddSymbol(uint64_t addr, const char* name, uint32_t size,
                              const char* module, uint32_t offset) {
  ipt_sym s{};
  s.addr = addr;
  s.size = size;
  s.offset = offset;
  std::strncpy(s.name, name, sizeof(s.name) - 1);
  const size_t n = std::strlen(s.name);
  if (module && n + 1 < sizeof(s.name))
    std::strncpy(s.name + n + 1, module, sizeof(s.name) - n - 2);
  syms_.push_back(s);
}

void RegionBuilder::AddRawSymbol(uint64_t addr, const char (&raw)[48]) {
  ipt_sym s{};
  s.addr = addr;
  std::memcpy(s.name, raw, sizeof(s.name));
  syms_.push_back(s);
}

std::vector<std::byte> RegionBuilder::Bytes() const {
  ipt_region_header h = header_;
  uint64_t size = IPT_HEADER_SIZE + rings_.size() * stride_;
  if (!syms_.empty()) {
    h.sym_capacity = static_cast<uint32_t>(syms_.size());
    h.sym_offset = size;
    size += syms_.size() * IPT_SYM_SIZE;
    if (h.region_size != 0) h.region_size = size;
  }
  std::vector<std::byte> out(size);
  std::memcpy(out.data(), &h, sizeof(h));
  for (size_t i = 0; i < rings_.size(); ++i) {
    const uint64_t off = IPT_HEADER_SIZE + i * stride_;
    if (off + IPT_RING_HEADER_SIZE > size) break;  // tests may lie in header
    std::memcpy(out.data() + off, &rings_[i].header, sizeof(ipt_ring_header));
    const size_t bytes = rings_[i].slots.size() * sizeof(ipt_record);
    if (off + IPT_RING_HEADER_SIZE + bytes > size) break;
    std::memcpy(out.data() + off + IPT_RING_HEADER_SIZE, rings_[i].slots.data(), bytes);
  }
  if (!syms_.empty())
    std::memcpy(out.data() + h.sym_offset, syms_.data(), syms_.size() * IPT_SYM_SIZE);
  return out;
}

}  // namespace ipitrace::testing
