// SPDX-License-Identifier: MIT
#include "evidence.h"

#include "result.h"

namespace ipitrace {
namespace {

uint64_t PackRef(const EvidenceChain::Ref& r) {
  return (uint64_t{r.stream == StreamKind::kHv} << 48) | (uint64_t{r.ring & 0xffff} << 32) |
         r.pos;
}

EvidenceChain::Ref UnpackRef(uint64_t v) {
  return {(v >> 48) & 1 ? StreamKind::kHv : StreamKind::kGuest,
          static_cast<uint32_t>((v >> 32) & 0xffff), static_cast<uint32_t>(v)};
}

// Position of the first record of 'r' with tsc >= tsc (rings are in TSC
// order; a ring whose TSC went backwards is counted in Stats and searched
// anyway: the answer is then approximate but always in bounds).

}  // namespace

RecordStore::RecordStore(const Snapshot& snap) {
  const Region* regions[2] = {&snap.guest, &snap.hv};
  for (int k = 0; k < 2; ++k) {
    const Region& region = *regions[k];
    if (region.bytes) owners_.push_back(region.bytes);
    for (const Ring& r : region.rings) {
      views_[k].push_back(r.records);
      if (r.copy) owners_.push_back(r.copy);
    }
  }
}

const ipt_record& RecordStore::At(StreamKind stream, uint32_t ring, uint32_t pos) const {
  const auto& views = views_[stream == StreamKind::kGuest ? 0 : 1];
  IPT_CHECK(ring < views.size() && pos < views[ring].size());
  return views[ring][pos];
}

EvidenceChain::EvidenceChain(const EvidenceChain& other)
    : store_(other.store_),
      pos_(other.pos_),
      ring_(other.ring_),
      size_(other.size_),
      more_(other.more_ ? std::make_unique<std::vector<uint64_t>>(*other.more_) : nullptr) {}

EvidenceChain& EvidenceChain::operator=(const EvidenceChain& other) {
  if (this != &other) *this = EvidenceChain(other);
  return *this;
}

EvidenceChain::Ref EvidenceChain::RefSlow(size_t i) const {
  IPT_CHECK(i < size_ && i >= kInline);
  return UnpackRef((*more_)[i - kInline]);
}

Evidence EvidenceChain::operator[](size_t i) const {
  IPT_CHECK(store_ != nullptr);
  const Ref r = ref(i);
  return Evidence{r.stream, r.ring, store_->At(r.stream, r.ring, r.pos), r.pos};
}

void EvidenceChain::PushSlow(const Ref& r) {
  IPT_CHECK(r.ring < kHvBit);  // ring indexes are < IPT_MAX_CPUS + 1
  IPT_CHECK(size_ >= kInline);
  if (!more_) more_ = std::make_unique<std::vector<uint64_t>>();
  more_->push_back(PackRef(r));
  ++size_;
}

void EvidenceChain::Append(const EvidenceChain& other) {
  IPT_CHECK(other.empty() || store_ == other.store_);
  for (size_t i = 0; i < other.size_; ++i) push_back(other.ref(i));
}

}  // namespace ipitrace
