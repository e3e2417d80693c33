// SPDX-License-Identifier: MIT
#include "region_reader.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "file_bytes.h"

namespace ipitrace {
namespace {

template <typename T>
T LoadAt(std::span<const std::byte> bytes, uint64_t offset) {
  T value;
  IPT_CHECK(offset <= bytes.size() && sizeof(T) <= bytes.size() - offset);
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// a * b + c without overflow; false if it would overflow.
bool MulAdd(uint64_t a, uint64_t b, uint64_t c, uint64_t* out) {
  uint64_t product = 0;
  return !__builtin_mul_overflow(a, b, &product) &&
         !__builtin_add_overflow(product, c, out);
}

uint16_t ProducerOf(StreamKind kind) {
  return kind == StreamKind::kGuest ? IPT_PRODUCER_GUEST : IPT_PRODUCER_QEMU;
}

// A hypervisor region comes from the patched QEMU or from the KVM source.
bool ProducerFits(StreamKind kind, uint16_t producer) {
  if (kind == StreamKind::kGuest) return producer == IPT_PRODUCER_GUEST;
  return producer == IPT_PRODUCER_QEMU || producer == IPT_PRODUCER_KVM;
}

}  // namespace

LayoutProblem CheckRegionLayout(const ipt_region_header& h, StreamKind kind, uint64_t size) {
  auto problem = [](LayoutProblem::Kind k) {
    LayoutProblem p;
    p.kind = k;
    return p;
  };
  auto out_of_range = [](std::string_view field, uint64_t value) {
    return LayoutProblem{LayoutProblem::kFieldOutOfRange, field, value, 0};
  };
  if (h.magic != IPT_MAGIC) return problem(LayoutProblem::kBadMagic);
  if (h.abi_major != IPT_ABI_MAJOR) return problem(LayoutProblem::kAbiMajor);
  if (!ProducerFits(kind, h.producer)) return problem(LayoutProblem::kProducer);
  if (h.record_size != IPT_RECORD_SIZE) return out_of_range("record_size", h.record_size);
  if (h.header_size < IPT_HEADER_SIZE || h.header_size % 8 != 0)
    return out_of_range("header_size", h.header_size);
  const uint32_t max_rings = kind == StreamKind::kGuest ? IPT_MAX_CPUS : IPT_MAX_CPUS + 1;
  if (h.ring_count == 0 || h.ring_count > max_rings)
    return out_of_range("ring_count", h.ring_count);
  if (!IsPowerOfTwo(h.ring_capacity)) return out_of_range("ring_capacity", h.ring_capacity);
  if (h.cpu_count > IPT_MAX_CPUS) return out_of_range("cpu_count", h.cpu_count);
  uint64_t min_stride = 0;
  if (!MulAdd(h.ring_capacity, IPT_RECORD_SIZE, IPT_RING_HEADER_SIZE, &min_stride) ||
      h.ring_stride < min_stride || h.ring_stride % 8 != 0)
    return out_of_range("ring_stride", h.ring_stride);
  uint64_t layout_end = 0;
  if (!MulAdd(h.ring_count, h.ring_stride, h.header_size, &layout_end))
    return out_of_range("ring_stride", h.ring_stride);
  if (layout_end > size) {
    LayoutProblem p = problem(LayoutProblem::kTruncatedLayout);
    p.layout_end = layout_end;
    return p;
  }
  if (h.region_size > size) return problem(LayoutProblem::kTruncatedDeclared);
  if (h.region_size != 0 && h.region_size < layout_end)
    return out_of_range("region_size", h.region_size);
  return {};
}

bool GuardedRegionCopy(void* dst, const void* src, size_t n, StreamKind kind) {
  const SigbusGuard guard;
  return RegionCopyWith(dst, src, n, kind, [&guard](void* d, const void* s, size_t k) {
    return guard.Copy(d, s, k);
  });
}

bool RegionCopyWith(void* dst, const void* src, size_t n, StreamKind kind,
                    const std::function<bool(void*, const void*, size_t)>& copy) {
  ipt_region_header h{};
  if (n < sizeof(h) || !copy(&h, src, sizeof(h))) return copy(dst, src, n);
  if (CheckRegionLayout(h, kind, n).kind != LayoutProblem::kNone) return copy(dst, src, n);
  std::vector<uint64_t> heads(h.ring_count);
  const auto* base = static_cast<const std::byte*>(src);
  for (uint32_t k = 0; k < h.ring_count; ++k) {
    const std::byte* ring = base + h.header_size + uint64_t{k} * h.ring_stride;
    if (!copy(&heads[k], ring + offsetof(ipt_ring_header, head), sizeof(uint64_t))) return false;
  }
  // Every record read below comes after the heads (x86 keeps loads in
  // order; the fence keeps the compiler from moving them).
  std::atomic_thread_fence(std::memory_order_acquire);
  if (!copy(dst, src, n)) return false;
  auto* out = static_cast<std::byte*>(dst);
  for (uint32_t k = 0; k < h.ring_count; ++k) {
    std::byte* ring = out + h.header_size + uint64_t{k} * h.ring_stride;
    std::memcpy(ring + offsetof(ipt_ring_header, head), &heads[k], sizeof(uint64_t));
  }
  return true;
}

const Symbol* Region::FindSymbol(uint64_t addr) const {
  auto it = std::lower_bound(symbols.begin(), symbols.end(), addr,
                             [](const Symbol& s, uint64_t a) { return s.addr < a; });
  return it != symbols.end() && it->addr == addr ? &*it : nullptr;
}

std::string SymbolText(const Symbol& s) {
  std::string t = fmt::format("{}+{:#x}/{:#x}", s.name, s.offset, s.size);
  if (!s.module.empty()) t += fmt::format(" [{}]", s.module);
  return t;
}

Status RegionReader::Fail(StatId id, ErrorCode code, std::string message) {
  stats_->Increment(id);
  return Status::Error(code, std::move(message));
}

Result<Region> RegionReader::Read(std::span<const std::byte> bytes, StreamKind kind,
                                  std::string_view name, const std::vector<bool>& distrusted) {
  return ReadImpl(bytes, kind, name, nullptr, distrusted);
}

Result<Region> RegionReader::Read(std::shared_ptr<const RegionBytes> bytes,
                                  StreamKind kind, std::string_view name) {
  IPT_CHECK(bytes != nullptr);
  const std::span<const std::byte> span = bytes->bytes();
  return ReadImpl(span, kind, name, std::move(bytes), {});
}

Result<Region> RegionReader::ReadImpl(std::span<const std::byte> bytes,
                                      StreamKind kind, std::string_view name,
                                      std::shared_ptr<const RegionBytes> in_place,
                                      const std::vector<bool>& distrusted) {
  const uint64_t size = bytes.size();
  if (size < sizeof(ipt_region_header)) {
    return Fail(StatId::region_truncated, ErrorCode::kMalformed,
                fmt::format("{}: truncated: {} bytes, header needs {}", name,
                            size, sizeof(ipt_region_header)));
  }
  Region region;
  region.kind = kind;
  region.ring_of_cpu.fill(-1);
  region.header = LoadAt<ipt_region_header>(bytes, 0);
  const ipt_region_header& h = region.header;

  const LayoutProblem p = CheckRegionLayout(h, kind, size);
  if (p.kind == LayoutProblem::kBadMagic) {
    return Fail(StatId::bad_magic, ErrorCode::kMalformed,
                fmt::format("{}: bad magic {:#018x} (not an ipitrace region)",
                            name, h.magic));
  }
  if (p.kind == LayoutProblem::kAbiMajor) {
    return Fail(StatId::abi_major_mismatch, ErrorCode::kMalformed,
                fmt::format("{}: ABI major {} not supported (agent speaks {})",
                            name, h.abi_major, IPT_ABI_MAJOR));
  }
  if (h.abi_minor > IPT_ABI_MINOR) stats_->Increment(StatId::abi_minor_newer);
  switch (p.kind) {
    case LayoutProblem::kNone:
    case LayoutProblem::kBadMagic:
    case LayoutProblem::kAbiMajor:
      break;
    case LayoutProblem::kProducer:
      return Fail(StatId::producer_mismatch, ErrorCode::kMalformed,
                  fmt::format("{}: producer {} but expected {} ({})", name,
                              h.producer, ProducerOf(kind), StreamName(kind)));
    case LayoutProblem::kFieldOutOfRange:
      return Fail(StatId::header_field_out_of_range, ErrorCode::kMalformed,
                  fmt::format("{}: header field {} out of range: {}", name,
                              p.field, p.value));
    case LayoutProblem::kTruncatedLayout:
      return Fail(StatId::region_truncated, ErrorCode::kMalformed,
                  fmt::format("{}: truncated: {} rings of {} bytes need {} "
                              "bytes, file has {}",
                              name, h.ring_count, h.ring_stride, p.layout_end,
                              size));
    case LayoutProblem::kTruncatedDeclared:
      return Fail(StatId::region_truncated, ErrorCode::kMalformed,
                  fmt::format("{}: truncated: header declares {} bytes, file "
                              "has {}",
                              name, h.region_size, size));
  }

  if (kind == StreamKind::kGuest) {
    region.stages = GuestStagesOf(h);
    if (!region.stages.ObservesRequired()) {
      return Fail(StatId::guest_stages_missing, ErrorCode::kMalformed,
                  fmt::format("{}: the guest kernel showed not every stage a request needs "
                              "({})",
                              name, region.stages.Describe()));
    }
    if (!region.stages.Observes(IPT_G_STAGE_FUNC))
      stats_->Increment(StatId::guest_stage_unobserved);
  }
  if (!(h.flags & IPT_REGION_F_READY)) stats_->Increment(StatId::region_not_ready);
  if ((h.flags & IPT_REGION_F_TRACING) && !(h.flags & IPT_REGION_F_STOPPED))
    stats_->Increment(StatId::region_still_tracing);

  region.rings.reserve(h.ring_count);
  for (uint32_t i = 0; i < h.ring_count; ++i) {
    ReadRing(bytes, h.header_size + uint64_t{i} * h.ring_stride, i, in_place != nullptr,
             i < distrusted.size() && distrusted[i], &region);
  }
  ReadSymbols(bytes, &region);
  if (kind == StreamKind::kHv) ReadSource(bytes, &region);
  const bool any_in_place = std::any_of(region.rings.begin(), region.rings.end(),
                                        [](const Ring& r) { return !r.copy; });
  if (any_in_place) region.bytes = std::move(in_place);
  return region;
}

void RegionReader::ReadRing(std::span<const std::byte> bytes, uint64_t offset,
                            uint32_t index, bool in_place, bool distrusted, Region* region) {
  const ipt_region_header& h = region->header;
  const auto rh = LoadAt<ipt_ring_header>(bytes, offset);
  Ring ring;
  ring.index = index;
  ring.cpu = rh.cpu;
  ring.flags = rh.flags;
  ring.head = rh.head;
  ring.capacity = h.ring_capacity;
  ring.dropped = rh.dropped;
  if (rh.dropped) stats_->Increment(StatId::records_dropped, rh.dropped);

  bool usable = true;
  switch (ClaimRing(region->kind, rh.cpu, index, &region->ring_of_cpu, &region->misc_ring)) {
    case RingClaim::kCpu:
    case RingClaim::kMisc:
      break;
    case RingClaim::kOutOfRange:
      stats_->Increment(StatId::ring_cpu_out_of_range);
      usable = false;
      break;
    case RingClaim::kDuplicate:
      stats_->Increment(StatId::ring_cpu_duplicate);
      usable = false;
      break;
  }
  if (!usable) {
    ring.head = 0;  // keep the slot in rings[] so indexes stay positional
    region->rings.push_back(std::move(ring));
    if (sink_) sink_->OnRing(*region, region->rings.back(), false);
    return;
  }

  const uint64_t cap = h.ring_capacity;
  ring.first_index = rh.head > cap ? rh.head - cap : 0;
  ring.overwritten = ring.first_index;
  if (ring.overwritten) stats_->Increment(StatId::ring_overwritten, ring.overwritten);

  if (distrusted) {
    ring.gaps.assign(1, RingGap{ring.head, std::numeric_limits<uint64_t>::max()});
    region->rings.push_back(std::move(ring));
    if (sink_) sink_->OnRing(*region, region->rings.back(), false);
    return;
  }
  const uint64_t slots = offset + IPT_RING_HEADER_SIZE;
  // In place needs the slots aligned for ipt_record (a mapping or a heap
  // buffer always is: header_size and ring_stride are multiples of 8).
  in_place = in_place && reinterpret_cast<uintptr_t>(bytes.data() + slots) %
                                 alignof(ipt_record) == 0;
  const bool scanned = in_place && ScanRing(bytes, slots, true, *region, &ring);
  if (!scanned) ScanRing(bytes, slots, false, *region, &ring);
  region->rings.push_back(std::move(ring));
  if (sink_) sink_->OnRing(*region, region->rings.back(), scanned);
}

bool RegionReader::ScanRing(std::span<const std::byte> bytes, uint64_t slots,
                            bool in_place, const Region& region, Ring* ring) {
  const uint64_t cap = ring->capacity;
  const uint64_t first = ring->first_index;
  const uint64_t head = ring->head;
  const uint64_t n = head - first;  // <= cap
  if (in_place) {
    // The window is accepted as a whole or not at all: one run of slots
    // from the oldest record to the last slot, then (wrapped) one from
    // slot 0.  The layout check in Read() put all slots inside 'bytes'.
    const auto* base = reinterpret_cast<const ipt_record*>(bytes.data() + slots);
    const uint64_t at = first & (cap - 1);
    const uint64_t run = std::min(n, cap - at);
    const InPlaceWindow w{base + at, static_cast<size_t>(run), base,
                          static_cast<size_t>(n - run), first};
    InPlaceCounts counts;
    const bool ok =
        sink_ ? sink_->ScanInPlace(region, ring->index, ring->cpu, w, &counts)
              : internal::ScanInPlace(w, ring->cpu, &counts,
                                      [](uint32_t, const ipt_record&, uint16_t, uint16_t, uint64_t) {});
    if (!ok) return false;  // a slot to reject: the copying pass handles it
    stats_->Increment(StatId::record_cpu_mismatch, counts.cpu_mismatch);
    stats_->Increment(StatId::tsc_backwards, counts.tsc_backwards);
    ring->tsc_sorted = counts.tsc_backwards == 0;
    ring->records = RecordView(w.run0, w.n0, w.run1, w.n1);
    return true;
  }

  uint64_t cpu_mismatch = 0, backwards = 0;
  std::array<uint64_t, kRecordChecks> rejected{};  // by RecordCheck
  std::vector<ipt_record> copy;
  copy.reserve(static_cast<size_t>(n));
  std::vector<uint64_t> pending_gaps;  // indexes awaiting their tsc bound
  std::vector<RingGap> gaps;
  uint64_t prev_tsc = 0;
  for (uint64_t i = first; i < head; ++i) {
    const auto rec =
        LoadAt<ipt_record>(bytes, slots + (i & (cap - 1)) * IPT_RECORD_SIZE);
    const RecordCheck check = CheckRecord(rec, i);
    if (check != RecordCheck::kOk) {
      ++rejected[static_cast<size_t>(check)];
      if (check == RecordCheck::kGapMarker)
        gaps.push_back({i, rec.tsc});  // the producer lost records before this point
      else if (check != RecordCheck::kUnknownType)
        pending_gaps.push_back(i);  // torn or out of range; an unknown type (a newer
                                    // minor ABI, maybe) is skipped without a gap
      continue;
    }
    if (rec.cpu != ring->cpu) ++cpu_mismatch;
    if (!copy.empty() && rec.tsc < prev_tsc) ++backwards;
    prev_tsc = rec.tsc;
    for (uint64_t g : pending_gaps) gaps.push_back({g, rec.tsc});
    pending_gaps.clear();
    copy.push_back(rec);
  }
  for (uint64_t g : pending_gaps)
    gaps.push_back({g, std::numeric_limits<uint64_t>::max()});

  for (size_t c = 1; c < rejected.size(); ++c)
    stats_->Increment(RejectedRecordStat(static_cast<RecordCheck>(c)), rejected[c]);
  stats_->Increment(StatId::record_cpu_mismatch, cpu_mismatch);
  stats_->Increment(StatId::tsc_backwards, backwards);
  ring->gaps = std::move(gaps);
  ring->tsc_sorted = backwards == 0;
  auto owned = std::make_shared<const std::vector<ipt_record>>(std::move(copy));
  ring->records = RecordView(owned->data(), owned->size(), nullptr, 0);
  ring->copy = std::move(owned);
  return true;
}

Region NoHvRegion(std::string why) {
  Region hv;
  hv.kind = StreamKind::kHv;
  hv.ring_of_cpu.fill(-1);
  hv.source.name = "none";
  hv.source.guest_only_why = std::move(why);
  return hv;
}

void MarkGuestOnly(Region* hv) {
  HvSource& src = hv->source;
  if (src.guest_only_why.empty()) {
    for (const Ring& r : hv->rings)
      if (!r.records.empty() || !r.gaps.empty() || r.overwritten || r.dropped) return;
    src.guest_only_why = fmt::format("the {} source wrote no record", src.name);
  }
  src.guest_only = true;
  src.stages = 0;
  src.stages_partial = 0;
}

std::string HvSource::Unobserved(uint32_t mask) const {
  if (guest_only) {
    return fmt::format("the ICR write, its routing and the acknowledge ({}: a hypervisor "
                       "source, the patched QEMU or `ipitrace kvm-source`, shows them)",
                       guest_only_why);
  }
  std::string names;
#define IPT_STAGE_NAME(name, bit, desc)                              \
  if ((mask & (1u << (bit))) && !Observes(1u << (bit))) {           \
    if (!names.empty()) names += ", ";                               \
    names += #name;                                                  \
  }
  IPT_HV_STAGES(IPT_STAGE_NAME)
#undef IPT_STAGE_NAME
  std::string how;
#define IPT_ACCEL_HOW(name, bit, hides, setting)                     \
  if ((accel & (1u << (bit))) && ((hides) & mask & ~stages)) {      \
    if (!how.empty()) how += "; ";                                   \
    how += setting;                                                  \
  }
  IPT_HV_ACCEL(IPT_ACCEL_HOW)
#undef IPT_ACCEL_HOW
  if (names.empty()) return names;
  return fmt::format("{} ({})", names,
                     how.empty() ? "the source does not say why"
                                 : fmt::format("{} makes them visible", how));
}

void RegionReader::ReadSource(std::span<const std::byte> bytes, Region* region) {
  HvSource& src = region->source;
  if (region->header.producer != IPT_PRODUCER_KVM) return;  // QEMU: every stage
  static_assert(IPT_HHDR_EXT_OFFSET + sizeof(ipt_hhdr_ext) <= IPT_HEADER_SIZE);
  const auto x = LoadAt<ipt_hhdr_ext>(bytes, IPT_HHDR_EXT_OFFSET);
  if (x.magic != IPT_HHDR_EXT_MAGIC) {
    // A KVM source that does not say what it saw: trust no stage to blame.
    stats_->Increment(StatId::hv_source_unknown);
    src = HvSource{};
    src.name = "kvm (no header extension)";
    src.stages = 0;
    return;
  }
  src.stages = x.stages & IPT_HV_STAGE_ALL;
  src.stages_partial = x.stages_partial & IPT_HV_STAGE_ALL;
  src.accel = x.accel;
  src.name.clear();
  for (size_t i = 0; i < sizeof(x.source) && x.source[i] != '\0'; ++i) {
    const char c = x.source[i];
    src.name.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  if (src.name.empty()) src.name = "kvm";
  uint64_t lost = 0;
  for (size_t c = 0; c < IPT_HV_LOST_MAX; ++c) {
    src.lost[c] = x.lost[c];
    lost = lost + x.lost[c] < lost ? UINT64_MAX : lost + x.lost[c];
  }
  stats_->Increment(StatId::hv_source_lost, lost);
  if (!src.Observes(IPT_HV_STAGE_ALL)) stats_->Increment(StatId::hv_stage_unobserved);
}

void RegionReader::ReadSymbols(std::span<const std::byte> bytes,
                               Region* region) {
  const ipt_region_header& h = region->header;
  if (h.sym_capacity == 0) return;
  uint64_t end = 0;
  if (!MulAdd(h.sym_capacity, IPT_SYM_SIZE, h.sym_offset, &end) ||
      end > bytes.size() || h.sym_offset < h.header_size) {
    stats_->Increment(StatId::symbol_table_invalid);
    return;
  }
  for (uint64_t i = 0; i < h.sym_capacity; ++i) {
    const auto s = LoadAt<ipt_sym>(bytes, h.sym_offset + i * IPT_SYM_SIZE);
    if (s.addr == 0) continue;
    Symbol sym;
    sym.addr = s.addr;
    sym.offset = s.offset;
    sym.size = s.size;
    // name NUL [module NUL]: both bounded by the 48 bytes.
    const size_t n = strnlen(s.name, sizeof(s.name));
    sym.name.assign(s.name, n);
    if (n + 1 < sizeof(s.name))
      sym.module.assign(s.name + n + 1, strnlen(s.name + n + 1, sizeof(s.name) - n - 1));
    region->symbols.push_back(std::move(sym));
  }
  // Sorted for lookup; a second entry for an address is ignored.
  std::stable_sort(region->symbols.begin(), region->symbols.end(),
                   [](const Symbol& a, const Symbol& b) { return a.addr < b.addr; });
  region->symbols.erase(std::unique(region->symbols.begin(), region->symbols.end(),
                                    [](const Symbol& a, const Symbol& b) { return a.addr == b.addr; }),
                        region->symbols.end());
}

}  // namespace ipitrace
