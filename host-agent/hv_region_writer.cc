// SPDX-License-Identifier: MIT
#include "hv_region_writer.h"

#include <atomic>
#include <cstring>

#include <fmt/format.h>

namespace ipitrace {
namespace {

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

template <typename T>
void Publish(T* field, T value) {
  std::atomic_ref<T>(*field).store(value, std::memory_order_release);
}

}  // namespace

uint64_t HvRegionWriter::SizeFor(const Layout& l) {
  const uint64_t stride = IPT_RING_HEADER_SIZE + uint64_t{l.capacity} * IPT_RECORD_SIZE;
  return IPT_HEADER_SIZE + (uint64_t{l.vcpus} + 1) * stride;
}

Status HvRegionWriter::Check(const Layout& l) {
  if (l.vcpus == 0 || l.vcpus > IPT_MAX_CPUS)
    return Status::Error(ErrorCode::kUsage,
                         fmt::format("{} vCPUs: must be within 1..{}", l.vcpus, IPT_MAX_CPUS));
  if (!IsPowerOfTwo(l.capacity) || l.capacity < 16 || l.capacity > (1u << 24))
    return Status::Error(ErrorCode::kUsage,
                         fmt::format("ring capacity {}: must be a power of two "
                                     "within 16..2^24",
                                     l.capacity));
  if (l.apic_id.size() != l.vcpus)
    return Status::Error(ErrorCode::kInternal, "APIC-ID table does not match the vCPUs");
  return Status::Ok();
}

HvRegionWriter::HvRegionWriter(std::span<std::byte> mem, const Layout& l, uint64_t start_tsc)
    : mem_(mem), vcpus_(l.vcpus), capacity_(l.capacity) {
  IPT_CHECK(Check(l).ok());
  IPT_CHECK(mem.size() >= SizeFor(l));
  stride_ = IPT_RING_HEADER_SIZE + uint64_t{capacity_} * IPT_RECORD_SIZE;
  heads_.assign(vcpus_ + 1, 0);

  auto* h = reinterpret_cast<ipt_region_header*>(mem_.data());
  std::memset(h, 0, sizeof(*h));
  h->magic = IPT_MAGIC;
  h->abi_major = IPT_ABI_MAJOR;
  h->abi_minor = IPT_ABI_MINOR;
  h->producer = l.producer;
  h->record_size = IPT_RECORD_SIZE;
  h->header_size = IPT_HEADER_SIZE;
  h->ring_count = vcpus_ + 1;
  h->ring_capacity = capacity_;
  h->ring_stride = stride_;
  h->region_size = SizeFor(l);
  h->tsc_khz = l.tsc_khz;
  h->cpu_count = vcpus_;
  h->generation = 1;
  h->start_tsc = start_tsc;
  std::snprintf(h->kernel_release, sizeof(h->kernel_release), "%s", l.release.c_str());
  for (uint32_t i = 0; i < IPT_MAX_CPUS; ++i)
    h->apic_id[i] = i < vcpus_ ? l.apic_id[i] : IPT_APIC_ID_NONE;
  for (uint32_t r = 0; r <= vcpus_; ++r) {
    ipt_ring_header* rh = RingHeader(r);
    std::memset(rh, 0, sizeof(*rh));
    rh->cpu = r < vcpus_ ? r : IPT_CPU_NONE;
    // The slots stay as the (zeroed) file has them: a reader takes only
    // slots below head, and Append() invalidates a slot before filling it,
    // so untouched pages of a large ring are never faulted in.
  }
  Publish(&h->flags, uint32_t{IPT_REGION_F_READY | IPT_REGION_F_TRACING});
}

ipt_ring_header* HvRegionWriter::RingHeader(uint32_t ring) const {
  return reinterpret_cast<ipt_ring_header*>(mem_.data() + IPT_HEADER_SIZE + ring * stride_);
}

ipt_record* HvRegionWriter::Slots(uint32_t ring) const {
  return reinterpret_cast<ipt_record*>(mem_.data() + IPT_HEADER_SIZE + ring * stride_ +
                                       IPT_RING_HEADER_SIZE);
}

uint64_t HvRegionWriter::NextSeq(uint32_t vcpu) const { return heads_[RingOf(vcpu)]; }

uint64_t HvRegionWriter::Append(uint32_t vcpu, ipt_record rec) {
  const uint32_t ring = RingOf(vcpu);
  const uint64_t index = heads_[ring]++;
  ipt_record* slot = &Slots(ring)[index & (capacity_ - 1)];
  rec.cpu = ring < vcpus_ ? static_cast<uint16_t>(ring) : IPT_CPU_NONE;
  rec.seq = IPT_SEQ_INVALID;
  Publish(&slot->seq, static_cast<ipt_u64>(IPT_SEQ_INVALID));
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(slot, &rec, sizeof(rec));
  Publish(&slot->seq, static_cast<ipt_u64>(index));
  Publish(&RingHeader(ring)->head, static_cast<ipt_u64>(index + 1));
  return index;
}

void HvRegionWriter::SetSource(uint32_t stages, uint32_t stages_partial, uint32_t accel,
                               const char* name) {
  auto* x = reinterpret_cast<ipt_hhdr_ext*>(mem_.data() + IPT_HHDR_EXT_OFFSET);
  x->stages = stages;
  x->stages_partial = stages_partial;
  x->accel = accel;
  std::snprintf(x->source, sizeof(x->source), "%s", name);
  Publish(&x->magic, uint32_t{IPT_HHDR_EXT_MAGIC});
}

void HvRegionWriter::AddLost(uint32_t cause, uint64_t n) {
  if (cause >= IPT_HV_LOST_MAX || n == 0) return;
  auto* x = reinterpret_cast<ipt_hhdr_ext*>(mem_.data() + IPT_HHDR_EXT_OFFSET);
  Publish(&x->lost[cause], static_cast<ipt_u64>(x->lost[cause] + n));
}

void HvRegionWriter::Stop(uint64_t stop_tsc) {
  auto* h = reinterpret_cast<ipt_region_header*>(mem_.data());
  Publish(&h->stop_tsc, static_cast<ipt_u64>(stop_tsc));
  Publish(&h->flags, (h->flags & ~uint32_t{IPT_REGION_F_TRACING}) | IPT_REGION_F_STOPPED);
}

}  // namespace ipitrace
