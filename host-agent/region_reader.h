// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_REGION_READER_H_
#define IPITRACE_HOST_AGENT_REGION_READER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "guest_stages.h"
#include "ipitrace_abi.h"
#include "records.h"
#include "region_bytes.h"
#include "result.h"
#include "stats.h"

namespace ipitrace {

// A slot of a ring's valid window that held no acceptable record (torn: seq
// mismatch; or a record with an out-of-range cpu id).  tsc_bound is the TSC
// of the next accepted record in the ring (UINT64_MAX if none): the lost
// record was written no later than that.
struct RingGap {
  uint64_t index;
  uint64_t tsc_bound;
};

// The accepted records of one ring in program order, as a read-only
// random-access sequence over at most two contiguous runs: a ring window
// that wraps past the end of its slots is [oldest .. last slot] followed by
// [slot 0 .. head).  The view does not own the records; the Region (and
// every Request's evidence) keeps their storage alive.
class RecordView {
 public:
  class iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = ipt_record;
    using difference_type = std::ptrdiff_t;
    using pointer = const ipt_record*;
    using reference = const ipt_record&;

    iterator() = default;
    iterator(const RecordView* v, size_t i) : v_(v), i_(i) {}
    reference operator*() const { return (*v_)[i_]; }
    pointer operator->() const { return &(*v_)[i_]; }
    reference operator[](difference_type n) const {
      return (*v_)[static_cast<size_t>(static_cast<difference_type>(i_) + n)];
    }
    iterator& operator++() { ++i_; return *this; }
    iterator operator++(int) { iterator t = *this; ++i_; return t; }
    iterator& operator--() { --i_; return *this; }
    iterator operator--(int) { iterator t = *this; --i_; return t; }
    iterator& operator+=(difference_type n) {
      i_ = static_cast<size_t>(static_cast<difference_type>(i_) + n);
      return *this;
    }
    iterator& operator-=(difference_type n) { return *this += -n; }
    friend iterator operator+(iterator it, difference_type n) { return it += n; }
    friend iterator operator+(difference_type n, iterator it) { return it += n; }
    friend iterator operator-(iterator it, difference_type n) { return it -= n; }
    friend difference_type operator-(const iterator& a, const iterator& b) {
      return static_cast<difference_type>(a.i_) - static_cast<difference_type>(b.i_);
    }
    friend bool operator==(const iterator& a, const iterator& b) { return a.i_ == b.i_; }
    friend auto operator<=>(const iterator& a, const iterator& b) { return a.i_ <=> b.i_; }

   private:
    const RecordView* v_ = nullptr;
    size_t i_ = 0;
  };

  RecordView() = default;
  RecordView(const ipt_record* first, size_t n_first, const ipt_record* second,
             size_t n_second)
      : a_(first), b_(second), na_(n_first), n_(n_first + n_second) {}

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const ipt_record& operator[](size_t i) const { return i < na_ ? a_[i] : b_[i - na_]; }
  const ipt_record& front() const { return (*this)[0]; }
  const ipt_record& back() const { return (*this)[n_ - 1]; }
  iterator begin() const { return iterator(this, 0); }
  iterator end() const { return iterator(this, n_); }
  // Run k (0 or 1) as a span, for loops that want plain pointers.
  std::span<const ipt_record> run(int k) const {
    return k == 0 ? std::span<const ipt_record>(a_, na_)
                  : std::span<const ipt_record>(b_, n_ - na_);
  }
  void clear() { *this = RecordView(); }
  // The records as one array, or null when the window wraps (two runs).
  const ipt_record* contiguous() const { return n_ == na_ ? a_ : nullptr; }

 private:
  const ipt_record* a_ = nullptr;
  const ipt_record* b_ = nullptr;
  size_t na_ = 0;
  size_t n_ = 0;
};

// One ring after validation: the accepted records in program order.
struct Ring {
  uint32_t index = 0;  // position in the region
  uint32_t cpu = 0;    // writer CPU / vCPU (IPT_CPU_NONE: misc ring)
  uint32_t flags = 0;
  uint64_t head = 0;         // records ever written
  uint64_t capacity = 0;
  uint64_t dropped = 0;      // producer-side drops (ring header)
  uint64_t first_index = 0;  // first index of the valid window
  uint64_t overwritten = 0;  // records lost to wrap (head - capacity)
  RecordView records;         // accepted, ascending seq
  std::vector<RingGap> gaps;  // torn / rejected slots in the window
  // Accepted records never went back in TSC (tsc_backwards not counted
  // for this ring): searches by TSC may assume sorted order.
  bool tsc_sorted = true;
  // Private copy of the accepted records when they could not be viewed in
  // place (see RegionReader); null when 'records' points into the Region's
  // bytes.
  std::shared_ptr<const std::vector<ipt_record>> copy;

  bool empty() const { return records.empty(); }
  uint64_t first_tsc() const { return records.empty() ? 0 : records.front().tsc; }
  uint64_t last_tsc() const { return records.empty() ? 0 : records.back().tsc; }
};

struct Symbol {
  uint64_t addr = 0;
  uint32_t offset = 0;
  uint32_t size = 0;
  std::string name;
  std::string module;  // empty: the kernel's own
};
// As the kernel's %pS prints it: "name+0xoff/0xsize", then " [module]"
// for a module's symbol.  The one place every report formats a symbol.
std::string SymbolText(const Symbol& s);

// What a hypervisor region's source can observe, from its header
// extension (ipt_hhdr_ext).  The patched QEMU writes none and observes every
// stage; a KVM source says which stages the host's settings hide (APICv,
// IPIv, AVIC) and how many records it lost, by cause.  A stage the source
// does not observe for every IPI is never blamed.
struct HvSource {
  std::string name = "qemu";
  uint32_t stages = IPT_HV_STAGE_ALL;  // IPT_HV_STAGE_* observed
  uint32_t stages_partial = 0;         // ... for some IPIs only
  uint32_t accel = 0;                  // IPT_HV_ACCEL_*
  std::array<uint64_t, IPT_HV_LOST_MAX> lost{};
  // Guest-only: no hypervisor region, or one whose source wrote no record.
  // No stage is observed; the verdicts are those the guest stream alone
  // supports (docs/streams.md, "Guest-only"), and the settle window runs
  // on the guest's clock.  Set by MarkGuestOnly, the one place that decides.
  bool guest_only = false;
  // Why guest-only ("no hv.region", "the kvm source wrote no record").
  std::string guest_only_why;
  // True iff every stage in 'mask' is observed for every IPI.
  bool Observes(uint32_t mask) const { return (stages & ~stages_partial & mask) == mask; }
  // "ACK, EOI (kvm_intel enable_apicv=0 makes them visible)": the stages of
  // 'mask' this source does not observe, and the settings that hide them.
  std::string Unobserved(uint32_t mask) const;
};

// A validated region: a private copy of its header; the records either
// viewed in the region's bytes (kept alive here) or privately copied.
struct Region {
  StreamKind kind = StreamKind::kGuest;
  ipt_region_header header{};
  std::shared_ptr<const RegionBytes> bytes;  // null when every ring is a copy
  std::vector<Ring> rings;
  std::vector<Symbol> symbols;
  // cpu id -> index into rings, -1 when absent.
  std::array<int32_t, IPT_MAX_CPUS> ring_of_cpu{};
  int32_t misc_ring = -1;  // ring with cpu == IPT_CPU_NONE (hv only)
  HvSource source;         // hv only
  GuestStages stages;      // guest only: how the module saw each stage

  const Ring* RingForCpu(uint32_t cpu) const {
    if (cpu >= IPT_MAX_CPUS || ring_of_cpu[cpu] < 0) return nullptr;
    return &rings[static_cast<size_t>(ring_of_cpu[cpu])];
  }
  // Symbol for a function pointer, or nullptr (symbols: sorted by addr,
  // one per addr).
  const Symbol* FindSymbol(uint64_t addr) const;
};

// Guest-only mode, decided here once: a hypervisor region that is absent
// (the loader leaves guest_only_why set) or whose source wrote no record at
// all -- nothing accepted, torn, overwritten or dropped -- observes no stage.
// A region that lost records is not silent: its gaps make requests
// inconclusive-gap, as always.
void MarkGuestOnly(Region* hv);
// The hypervisor "region" of a snapshot that has none: no rings, source
// "none", guest_only_why = why (MarkGuestOnly then marks it guest-only).
Region NoHvRegion(std::string why);

// The part of a ring's window that can be read in place: slots
// [first_index, head) as at most two runs of records (see RecordView).
struct InPlaceWindow {
  const ipt_record* run0 = nullptr;
  size_t n0 = 0;
  const ipt_record* run1 = nullptr;
  size_t n1 = 0;
  uint64_t first_index = 0;  // ring index (seq) of run0[0]
};

// What an in-place scan counted (committed to Stats by the reader).
struct InPlaceCounts {
  uint64_t cpu_mismatch = 0;
  uint64_t tsc_backwards = 0;
};

namespace internal {

// The record checks of RegionReader for a window read in place: each
// slot's fields are read once, into locals; true iff every slot holds an
// acceptable record (CheckRecord, records.h).  visit(pos, rec, type, tsc) is called for each record in order as
// it is accepted, while it is in cache, so a consumer can index the ring in
// the same pass; on false, whatever visit saw is to be discarded.
//
// The window is page cache mapped 4 KiB page by page, and the hardware
// prefetchers stop at page boundaries: the loop asks for the record
// kScanPrefetch slots (two pages) ahead itself, which cut the CPU time of
// `analyze` on make_snapshot's "large" by 5-7 % (scripts/ab-agent.py,
// docs/notes/agent-ab.md).
inline constexpr size_t kScanPrefetch = 128;
template <typename Visit>
inline bool ScanInPlace(const InPlaceWindow& w, uint32_t ring_cpu, InPlaceCounts* counts,
                        Visit&& visit) {
  uint64_t cpu_mismatch = 0, backwards = 0, prev_tsc = 0;
  uint64_t index = w.first_index;
  uint32_t pos = 0;
  for (int r = 0; r < 2; ++r) {
    const ipt_record* p = r == 0 ? w.run0 : w.run1;
    const size_t len = r == 0 ? w.n0 : w.n1;
    for (size_t k = 0; k < len; ++k, ++index, ++pos) {
      if (k + kScanPrefetch < len) __builtin_prefetch(&p[k + kScanPrefetch]);
      const uint64_t seq = p[k].seq;
      const uint64_t tsc = p[k].tsc;
      const uint16_t type = p[k].type;
      const uint16_t cpu = p[k].cpu;
      const uint16_t target = p[k].target;
      // Anything but an acceptable record (a gap marker becomes a RingGap):
      // the copying pass handles the ring.
      if (CheckRecord(seq, type, cpu, target, index) != RecordCheck::kOk) return false;
      cpu_mismatch += cpu != ring_cpu;
      backwards += tsc < prev_tsc;  // prev_tsc starts at 0: never for the first
      prev_tsc = tsc;
      visit(pos, p[k], type, target, tsc);
    }
  }
  counts->cpu_mismatch = cpu_mismatch;
  counts->tsc_backwards = backwards;
  return true;
}

}  // namespace internal

// Receives each ring of a region as RegionReader reads it, so a consumer
// (RingIndex) indexes a region in the same pass that validates it instead
// of a second pass over memory.  'region' has its header and the rings
// read so far.
class RingSink {
 public:
  virtual ~RingSink() = default;
  // A ring read in place: validate 'w' with internal::ScanInPlace, consuming
  // the records as they are accepted.  On false nothing of the ring may be
  // kept: the reader copies the ring (rejecting slots) and calls OnRing.
  virtual bool ScanInPlace(const Region& region, uint32_t ring_index, uint32_t ring_cpu,
                           const InPlaceWindow& w, InPlaceCounts* counts) = 0;
  // A ring that was not scanned in place (copied, or unusable and empty),
  // complete; or, after ScanInPlace returned true, the same ring finished.
  virtual void OnRing(const Region& region, const Ring& ring, bool scanned) = 0;
};

// The first thing wrong with a region's layout, as RegionReader checks it
// (magic, ABI major, producer, sizes and ring geometry that must fit in
// 'size' bytes), or kNone: the one copy of those rules, for RegionReader and
// for watch's HangScreen, which checks each live header on every poll.
struct LayoutProblem {
  enum Kind {
    kNone,
    kBadMagic,
    kAbiMajor,
    kProducer,
    kFieldOutOfRange,   // 'field' has 'value'
    kTruncatedLayout,   // the rings need 'layout_end' bytes
    kTruncatedDeclared  // region_size is beyond 'size'
  };
  Kind kind = kNone;
  std::string_view field;
  uint64_t value = 0;
  uint64_t layout_end = 0;
};
LayoutProblem CheckRegionLayout(const ipt_region_header& h, StreamKind kind, uint64_t size);

// The data problem a rejected slot counts as (CheckRecord's verdicts other
// than kOk), for every reader that counts them.
constexpr StatId RejectedRecordStat(RecordCheck c) {
  switch (c) {
    case RecordCheck::kTorn: return StatId::torn_record;
    case RecordCheck::kGapMarker: return StatId::hv_source_gap;
    case RecordCheck::kUnknownType: return StatId::unknown_record_type;
    case RecordCheck::kCpuOutOfRange:
    case RecordCheck::kOk: break;
  }
  return StatId::cpu_out_of_range;
}

// Copies a live region (another process appending to its rings) so that
// the copy is consistent: every ring's head is read before any record,
// then everything is copied, and the copy keeps those earlier heads.  A
// plain memcpy may read a ring header after records it reads (glibc copies
// large blocks out of order), and the copy would then claim records it
// caught before they were written: torn records where nothing was lost.
// With the heads first, every record below a copied head was complete when
// it was copied (a producer publishes head after the record); only a ring
// that wrapped meanwhile shows torn slots, at its oldest end, which is what
// they are.  Bytes that are not a valid region layout are copied as they
// are (CheckRegionLayout: the reader rejects them anyway).  False if the
// copy hit SIGBUS (as GuardedCopy).
bool GuardedRegionCopy(void* dst, const void* src, size_t n, StreamKind kind);
// The same with the byte copy given (tests: a copy that reads a region out
// of address order while a writer appends).
bool RegionCopyWith(void* dst, const void* src, size_t n, StreamKind kind,
                    const std::function<bool(void*, const void*, size_t)>& copy);


// RegionReader turns untrusted bytes (a mapped file that a producer may still
// be writing, or a test buffer) into a Region.
//
// Every field is read exactly once into a local copy (the header, each ring
// header, each record slot) and validated on the copy, so a concurrent
// writer or a hostile file can make the result wrong but never make the
// reader read out of bounds.  Layout problems (magic, ABI major, sizes that
// do not fit) are an error Status; per-ring and per-record problems are
// counted in Stats and the offending ring/record is skipped.
//
// Ring protocol (abi/ipitrace_abi.h): the valid window of a ring is
// [max(0, head - capacity), head); slot i % capacity is accepted only if its
// seq equals i.  Only the window is read: the slots of a ring that was
// never filled are never touched (for a mapped file, never paged in).
//
// Two ways to keep the records:
//   * Read(span): every accepted record is copied (Ring::copy), so the
//     bytes may be freed or keep changing afterwards (tests, watch's copies);
//   * Read(RegionBytes): a ring whose whole window was accepted is viewed
//     in place (no copy, no allocation: the common case of a snapshot);
//     a ring with any rejected slot is read again, in copy mode, and only
//     that second pass's results count.  Downstream code that reads an
//     in-place record again must therefore bounds-check it like input
//     (cpu ids, targets), which the tracker and the reports do.
class RegionReader {
 public:
  explicit RegionReader(Stats* stats, RingSink* sink = nullptr)
      : stats_(stats), sink_(sink) {}

  // 'name' appears in error messages ("hv.region").  distrusted[i]: ring
  // i is one the caller saw misbehave between reads (watch: a head that
  // moved backwards within one generation), what one copy cannot show.
  // Such a ring is read as one gap from its head on, with no record: every
  // request that needs it becomes inconclusive-gap instead of being judged
  // on records of unknown provenance.
  Result<Region> Read(std::span<const std::byte> bytes, StreamKind kind,
                      std::string_view name, const std::vector<bool>& distrusted = {});
  Result<Region> Read(std::shared_ptr<const RegionBytes> bytes, StreamKind kind,
                      std::string_view name);

 private:
  Result<Region> ReadImpl(std::span<const std::byte> bytes, StreamKind kind,
                          std::string_view name,
                          std::shared_ptr<const RegionBytes> in_place,
                          const std::vector<bool>& distrusted);
  Status Fail(StatId id, ErrorCode code, std::string message);
  void ReadRing(std::span<const std::byte> bytes, uint64_t offset,
                uint32_t index, bool in_place, bool distrusted, Region* region);
  // One pass over a ring's window; false (and nothing kept) if in_place
  // and a slot had to be rejected.
  bool ScanRing(std::span<const std::byte> bytes, uint64_t slots,
                bool in_place, const Region& region, Ring* ring);
  void ReadSymbols(std::span<const std::byte> bytes, Region* region);
  void ReadSource(std::span<const std::byte> bytes, Region* region);

  Stats* stats_;
  RingSink* sink_;
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_REGION_READER_H_
