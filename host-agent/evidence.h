// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_EVIDENCE_H_
#define IPITRACE_HOST_AGENT_EVIDENCE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <vector>

#include "records.h"
#include "snapshot.h"

namespace ipitrace {

// A copy of one record that supports a verdict, with where it came from.
struct Evidence {
  StreamKind stream = StreamKind::kGuest;
  uint32_t ring = 0;
  ipt_record rec{};
  uint32_t pos = 0;  // position in the ring's accepted records
};

// The records of a snapshot, kept alive for as long as any request refers
// to them (shared by every EvidenceChain of one analysis), so a Request can
// outlive the Analysis it came from.
class RecordStore {
 public:
  explicit RecordStore(const Snapshot& snap);
  const ipt_record& At(StreamKind stream, uint32_t ring, uint32_t pos) const;

 private:
  std::vector<RecordView> views_[2];               // guest, hv; by ring index
  std::vector<std::shared_ptr<const void>> owners_;  // region bytes, ring copies
};

// Input iterator over a container that hands out values (copies) by index.
template <typename C, typename V>
class IndexIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = V;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = V;

  IndexIterator(const C* c, size_t i) : c_(c), i_(i) {}
  V operator*() const { return (*c_)[i_]; }
  IndexIterator& operator++() {
    ++i_;
    return *this;
  }
  IndexIterator operator++(int) {
    IndexIterator t = *this;
    ++i_;
    return t;
  }
  friend bool operator==(const IndexIterator& a, const IndexIterator& b) {
    return a.i_ == b.i_;
  }

 private:
  const C* c_;
  size_t i_;
};

// The evidence of one request, in chain order.  It stores a compact
// reference per record (position and ring: 6 bytes, up to 8 inline) and
// materialises an Evidence (with a copy of the record) on access, so
// following 10^5 requests does not copy 10^6 records.  Reads like a
// vector<Evidence>: size(), [i], front(), back(), iteration (by value).
class EvidenceChain {
 public:
  struct Ref {
    StreamKind stream = StreamKind::kGuest;
    uint32_t ring = 0;
    uint32_t pos = 0;
  };

  using const_iterator = IndexIterator<EvidenceChain, Evidence>;

  EvidenceChain() = default;
  explicit EvidenceChain(std::shared_ptr<const RecordStore> store)
      : store_(std::move(store)) {}
  EvidenceChain(const EvidenceChain& other);
  EvidenceChain& operator=(const EvidenceChain& other);
  EvidenceChain(EvidenceChain&&) noexcept = default;
  EvidenceChain& operator=(EvidenceChain&&) noexcept = default;
  // Drops the references, keeps the store.
  void clear() {
    size_ = 0;
    more_.reset();
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  Evidence operator[](size_t i) const;
  Evidence front() const { return (*this)[0]; }
  Evidence back() const { return (*this)[size_ - 1]; }
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, size_}; }

  Ref ref(size_t i) const {
    if (i < kInline && i < size_)
      return {(ring_[i] & kHvBit) ? StreamKind::kHv : StreamKind::kGuest,
              static_cast<uint32_t>(ring_[i] & ~kHvBit), pos_[i]};
    return RefSlow(i);
  }
  void push_back(const Ref& r) {
    if (size_ < kInline && r.ring < kHvBit) {
      pos_[size_] = r.pos;
      ring_[size_] = static_cast<uint16_t>(r.ring | (r.stream == StreamKind::kHv ? kHvBit : 0));
      ++size_;
    } else {
      PushSlow(r);
    }
  }
  // Appends another chain's references (same snapshot).
  void Append(const EvidenceChain& other);

 private:
  friend class RequestTable;
  void PushSlow(const Ref& r);
  Ref RefSlow(size_t i) const;

  static constexpr size_t kInline = 8;  // a full served-by-ipi chain
  // ring | stream (bit 15) for an inline reference; beyond kInline, both
  // packed into one 64-bit word in more_.
  static constexpr uint16_t kHvBit = 0x8000;

  std::shared_ptr<const RecordStore> store_;
  std::array<uint32_t, kInline> pos_{};
  std::array<uint16_t, kInline> ring_{};
  uint32_t size_ = 0;
  std::unique_ptr<std::vector<uint64_t>> more_;  // references beyond kInline
};

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_EVIDENCE_H_
