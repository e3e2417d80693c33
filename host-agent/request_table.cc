// SPDX-License-Identifier: MIT
#include "request_table.h"

#include "result.h"
#include "tracker.h"  // TrackerInputs

namespace ipitrace {

RequestTable::RequestTable() = default;
RequestTable::RequestTable(RequestTable&&) noexcept = default;
RequestTable& RequestTable::operator=(RequestTable&&) noexcept = default;
RequestTable::~RequestTable() = default;

void RequestTable::Add(const Request& r, uint16_t source_ring, uint32_t queue,
                       NormalReason reason, bool whole) {
  Row& row = rows_.emplace_back();
  row.queue_tsc = r.queue_tsc;
  row.queue = queue;
  row.source_cpu = static_cast<uint16_t>(r.source_cpu);
  row.target_cpu = static_cast<uint16_t>(r.target_cpu);
  row.source_ring = source_ring;
  row.verdict = r.verdict;
  row.flags = FlagsOf(r, reason);
  if (r.served_tsc) row.served_tsc = *r.served_tsc;
  if (whole) AddDetail(r, reason);
}

uint8_t RequestTable::FlagsOf(const Request& r, NormalReason reason) {
  return static_cast<uint8_t>((r.owns_ipi ? kOwnsIpi : 0) | (r.served_tsc ? kServed : 0) |
                              (static_cast<unsigned>(reason) << kReasonShift));
}

void RequestTable::AddDetail(const Request& r, NormalReason reason) {
  rows_.back().detail = static_cast<uint32_t>(details_.size());
  detail_rows_.push_back(static_cast<uint32_t>(rows_.size() - 1));
  Request& d = details_.emplace_back(r);
  if (reason != NormalReason::kNone) d.reason = kNormalReasons[static_cast<size_t>(reason)];
}

void RequestTable::SyncRow(size_t i) {
  Row& row = rows_[i];
  const Request& r = details_[row.detail];
  row.verdict = r.verdict;
  row.flags = FlagsOf(r, NormalReason::kNone);  // the detail holds the reason
  row.served_tsc = r.served_tsc ? *r.served_tsc : 0;
}

const ipt_record& RequestTable::QueueRecord(const Row& row) const {
  const Snapshot& snap = inputs_->snapshot;
  IPT_CHECK(row.source_ring < snap.guest.rings.size());
  const std::vector<uint32_t>& queues = inputs_->index->guest(row.source_ring).queues;
  IPT_CHECK(row.queue < queues.size());
  return snap.guest.rings[row.source_ring].records[queues[row.queue]];
}

uint64_t RequestTable::func(size_t i) const {
  if (const Request* d = detail(i)) return d->func;
  return QueueRecord(rows_[i]).a[0];
}

Request RequestTable::operator[](size_t i) const {
  IPT_CHECK(i < rows_.size());
  const Row& row = rows_[i];
  if (row.detail != kNoDetail) return details_[row.detail];
  // Not kept whole: what the row and its G_QUEUE say.
  const ipt_record& q = QueueRecord(row);
  Request r;
  r.source_cpu = row.source_cpu;
  r.target_cpu = row.target_cpu;
  r.source_vcpu = inputs_->map.VcpuOf(row.source_cpu);
  r.target_vcpu = inputs_->map.VcpuOf(row.target_cpu);
  r.queue_tsc = row.queue_tsc;
  r.func = q.a[0];
  r.csd = q.a[1];
  r.csd_type = q.flags;
  if (row.served()) r.served_tsc = row.served_tsc;
  r.verdict = row.verdict;
  r.owns_ipi = row.owns_ipi();
  if (row.reason() != NormalReason::kNone)
    r.reason = kNormalReasons[static_cast<size_t>(row.reason())];
  return r;
}

}  // namespace ipitrace
