// SPDX-License-Identifier: MIT
#include "hang_screen.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <tuple>

#include "file_bytes.h"
#include "region_reader.h"

namespace ipitrace {

HangScreen::UpdateResult HangScreen::ReadLayout(const SigbusGuard& guard,
                                                std::span<const std::byte> bytes,
                                                StreamKind kind, Layout* out) {
  if (bytes.size() < IPT_HEADER_SIZE) return UpdateResult::kNotReady;
  ipt_region_header h;
  if (!guard.Copy(&h, bytes.data(), sizeof(h))) return UpdateResult::kSigbus;
  // RegionReader's checks, on this one copy.
  if (CheckRegionLayout(h, kind, bytes.size()).kind != LayoutProblem::kNone)
    return UpdateResult::kNotReady;
  out->header_size = h.header_size;
  out->ring_stride = h.ring_stride;
  out->generation = h.generation;
  out->ring_count = h.ring_count;
  out->capacity = h.ring_capacity;
  out->tsc_khz = h.tsc_khz;
  out->vcf = h.vec_call_function;
  out->vcfs = h.vec_call_function_single;
  out->func_observed = GuestStagesOf(h).Observes(IPT_G_STAGE_FUNC);
  return UpdateResult::kOk;
}

void HangScreen::Reset() {
  for (int k = 0; k < 2; ++k) {
    layout_[k] = Layout{};
    rings_[k].clear();
  }
  cpu_of_ring_.clear();
  ring_of_cpu_.fill(-1);
  by_tsc_.clear();
  waiting_.clear();
  latest_.clear();
  newest_tsc_ = 0;
  tsc_khz_ = 0;
  started_ = false;
}

HangScreen::UpdateResult HangScreen::Update(std::span<const std::byte> hv,
                                            std::span<const std::byte> guest,
                                            std::vector<CorruptRing>* corrupt) {
  restarted_ = false;
  // One SIGBUS guard for every copy of this update.
  const SigbusGuard guard;
  Layout l[2];
  for (auto [k, bytes, kind] : {std::tuple{0, hv, StreamKind::kHv},
                                std::tuple{1, guest, StreamKind::kGuest}}) {
    if (kind == StreamKind::kHv && bytes.empty()) continue;  // guest-only: no rings
    const UpdateResult r = ReadLayout(guard, bytes, kind, &l[k]);
    if (r != UpdateResult::kOk) return r;
  }
  auto same = [](const Layout& a, const Layout& b) {
    return a.generation == b.generation && a.header_size == b.header_size &&
           a.ring_stride == b.ring_stride && a.ring_count == b.ring_count &&
           a.capacity == b.capacity;
  };
  if (!started_ || !same(l[0], layout_[0]) || !same(l[1], layout_[1])) {
    // Re-initialised in place (a VM restart): what was outstanding is gone.
    const bool was = started_;
    Reset();
    restarted_ = was;
    started_ = true;
    for (int k = 0; k < 2; ++k) rings_[k].assign(l[k].ring_count, RingState{});
  }
  layout_[0] = l[0];
  layout_[1] = l[1];
  tsc_khz_ = l[1].tsc_khz ? l[1].tsc_khz : l[0].tsc_khz;
  if (!ReadRings(guard, guest, StreamKind::kGuest, l[1], corrupt)) return UpdateResult::kSigbus;
  if (!hv.empty() && !ReadRings(guard, hv, StreamKind::kHv, l[0], corrupt))
    return UpdateResult::kSigbus;
  // Stream time: the newest record of each ring, as the full analysis
  // takes it (a record with a wild TSC stops counting once its ring moves
  // on, instead of ageing every request for good).
  newest_tsc_ = 0;
  for (int k = 0; k < 2; ++k)
    for (const RingState& st : rings_[k])
      if (!st.corrupt) newest_tsc_ = std::max(newest_tsc_, st.last_tsc);
  return UpdateResult::kOk;
}

bool HangScreen::ReadRings(const SigbusGuard& guard, std::span<const std::byte> bytes,
                           StreamKind kind, const Layout& l, std::vector<CorruptRing>* corrupt) {
  const int k = kind == StreamKind::kGuest ? 1 : 0;
  std::vector<ipt_ring_header> headers(l.ring_count);
  for (uint32_t i = 0; i < l.ring_count; ++i) {
    if (!guard.Copy(&headers[i], bytes.data() + l.header_size + uint64_t{i} * l.ring_stride,
                     sizeof(ipt_ring_header)))
      return false;
  }
  if (kind == StreamKind::kGuest) {
    // Ring -> CPU: the readers' one rule (records.h).
    cpu_of_ring_.assign(l.ring_count, -1);
    ring_of_cpu_.fill(-1);
    int32_t misc = -1;
    for (uint32_t i = 0; i < l.ring_count; ++i) {
      const uint32_t cpu = headers[i].cpu;
      if (ClaimRing(StreamKind::kGuest, cpu, i, &ring_of_cpu_, &misc) == RingClaim::kCpu)
        cpu_of_ring_[i] = static_cast<int32_t>(cpu);
    }
  }
  const uint64_t cap = l.capacity;
  for (uint32_t i = 0; i < l.ring_count; ++i) {
    RingState& st = rings_[k][i];
    const uint64_t head = headers[i].head;
    if (st.corrupt) continue;
    if (head < st.head) {
      st.corrupt = true;
      stats_.Increment(StatId::ring_head_backwards);
      corrupt->push_back({kind, i, head, st.head});
      continue;
    }
    st.head = head;
    const uint64_t window = head > cap ? head - cap : 0;
    uint64_t from = std::max(st.cursor, window);
    if (kind == StreamKind::kHv) {
      from = std::max(from, head ? head - 1 : 0);  // stream time only: the newest record
    } else if (from > st.cursor) {
      stats_.Increment(StatId::ring_overwritten, from - st.cursor);
    }
    st.cursor = head;
    const std::byte* slots = bytes.data() + l.header_size + uint64_t{i} * l.ring_stride +
                             IPT_RING_HEADER_SIZE;
    // In chunks (the copy buffer stays small), each at most two runs: to
    // the end of the slots, then from slot 0.
    while (from < head) {
      const uint64_t n = std::min<uint64_t>(head - from, kChunk);
      buf_.resize(n);
      const uint64_t at = from & (cap - 1);
      const uint64_t run = std::min<uint64_t>(n, cap - at);
      if (!guard.Copy(buf_.data(), slots + at * IPT_RECORD_SIZE, run * IPT_RECORD_SIZE) ||
          !guard.Copy(buf_.data() + run, slots, (n - run) * IPT_RECORD_SIZE))
        return false;
      for (uint64_t j = 0; j < n; ++j) {
        const ipt_record& r = buf_[j];
        // The readers' one acceptance rule (records.h), counted as
        // RegionReader counts it.
        if (const RecordCheck c = CheckRecord(r, from + j); c != RecordCheck::kOk) {
          stats_.Increment(RejectedRecordStat(c));
          continue;
        }
        ++records_;
        st.last_tsc = r.tsc;
        if (kind == StreamKind::kGuest && cpu_of_ring_[i] >= 0)
          OnGuestRecord(r, static_cast<uint32_t>(cpu_of_ring_[i]), l);
      }
      from += n;
    }
  }
  return true;
}

void HangScreen::OnGuestRecord(const ipt_record& r, uint32_t ring_cpu, const Layout& l) {
  const auto cpu = static_cast<uint16_t>(ring_cpu);
  switch (r.type) {
    case IPT_G_QUEUE: {
      if (r.target >= IPT_MAX_CPUS || ring_of_cpu_[r.target] < 0) return;  // as the tracker
      const Key key{r.target, ServedKeyOf(r, l.func_observed)};
      if (auto it = latest_.find(key); it != latest_.end() && it->second >= r.tsc) return;
      Queue(key, {cpu, r.target, r.tsc});
      break;
    }
    case IPT_G_FUNC_ENTRY:
    case IPT_G_IRQ_ENTRY: {
      const ServedKeys k = KeysServedBy(r, l.vcf, l.vcfs);
      for (size_t i = 0; i < k.size; ++i) Serve({cpu, k.keys[i]}, r.tsc);
      break;
    }
    default:
      break;
  }
}

void HangScreen::Serve(const Key& key, uint64_t tsc) {
  auto [it, inserted] = latest_.try_emplace(key, tsc);
  if (!inserted) {
    it->second = std::max(it->second, tsc);
  } else if (latest_.size() > kMaxKeys) {
    latest_.clear();  // a guest spraying keys: start over (see the class comment)
    latest_.emplace(key, tsc);
  }
  auto w = waiting_.find(key);
  if (w == waiting_.end()) return;
  std::vector<ByTsc::iterator>& v = w->second;
  v.erase(std::remove_if(v.begin(), v.end(),
                         [&](ByTsc::iterator e) {
                           if (e->first > tsc) return false;
                           by_tsc_.erase(e);
                           return true;
                         }),
          v.end());
  if (v.empty()) waiting_.erase(w);
}

void HangScreen::Queue(const Key& key, const Outstanding& o) {
  if (by_tsc_.size() >= kMaxOutstanding) {
    // Keep the oldest: they are the ones that can turn into a hang first.
    auto newest = std::prev(by_tsc_.end());
    if (o.queue_tsc >= newest->first) {
      stats_.Increment(StatId::screen_requests_not_kept);
      return;
    }
    Unlink(newest);
    stats_.Increment(StatId::screen_requests_not_kept);
  }
  auto e = by_tsc_.emplace(o.queue_tsc, Entry{o, key});
  waiting_[key].push_back(e);
}

void HangScreen::Unlink(ByTsc::iterator e) {
  auto w = waiting_.find(e->second.key);
  if (w != waiting_.end()) {
    std::vector<ByTsc::iterator>& v = w->second;
    v.erase(std::remove(v.begin(), v.end(), e), v.end());
    if (v.empty()) waiting_.erase(w);
  }
  by_tsc_.erase(e);
}

void HangScreen::DropQueuedUpTo(uint64_t tsc) {
  while (!by_tsc_.empty() && by_tsc_.begin()->first <= tsc) Unlink(by_tsc_.begin());
}

std::optional<HangScreen::Outstanding> HangScreen::Oldest() const {
  if (by_tsc_.empty()) return std::nullopt;
  return by_tsc_.begin()->second.o;
}

std::vector<bool> HangScreen::CorruptRings(StreamKind stream) const {
  const auto& v = rings_[stream == StreamKind::kGuest ? 1 : 0];
  std::vector<bool> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i].corrupt;
  return out;
}

}  // namespace ipitrace
