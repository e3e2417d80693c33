// SPDX-License-Identifier: MIT
//
// watch_rss RECORDS [CPUS] [LOSS_EVERY] [MAX_RSS_MIB]: the memory of `ipitrace watch`
// while it follows a VM, over a stream of about RECORDS records.  A
// producer writes call-function requests (9 records each: G_QUEUE, G_SEND,
// G_IRQ_ENTRY, G_FUNC_ENTRY, G_FUNC_EXIT on the guest rings; H_ICR, H_IRR,
// H_ACK, H_EOI on the hv rings) into two in-memory regions laid out as the
// producers lay out theirs (rings of 4096 records that wrap), dropping the
// delivery of every LOSS_EVERY-th request; every 64 requests the HangScreen
// that watch polls reads what the rings gained, and a request outstanding
// longer than 1 ms of stream time counts as a hang (watch would then run
// the full analysis) and is forgotten, as watch does.  Prints one JSON line:
// records written and read, CPU seconds, max RSS, peak outstanding
// requests and keys, hangs.  Used by scripts/bench-agent.sh (a billion
// records: the bound of 256 MiB) and, with MAX_RSS_MIB (exit status 1 when
// the max RSS is above it), as a meson test.
#include <sys/resource.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench/stream_args.h"
#include "hang_screen.h"

namespace {

constexpr uint32_t kCapacity = 4096;
constexpr uint32_t kKhz = 2'000'000;
constexpr uint8_t kVecSingle = 0xfb;

class Region {
 public:
  Region(uint16_t producer, uint32_t rings)
      : rings_(rings),
        stride_(IPT_RING_HEADER_SIZE + uint64_t{kCapacity} * IPT_RECORD_SIZE),
        bytes_(IPT_HEADER_SIZE + rings * stride_) {
    ipt_region_header h{};
    h.magic = IPT_MAGIC;
    h.abi_major = IPT_ABI_MAJOR;
    h.abi_minor = IPT_ABI_MINOR;
    h.producer = producer;
    h.record_size = IPT_RECORD_SIZE;
    h.header_size = IPT_HEADER_SIZE;
    h.ring_count = rings;
    h.ring_capacity = kCapacity;
    h.flags = IPT_REGION_F_READY | IPT_REGION_F_TRACING;
    h.ring_stride = stride_;
    h.region_size = bytes_.size();
    h.tsc_khz = kKhz;
    h.cpu_count = rings;
    h.vec_call_function = 0xfc;
    h.vec_call_function_single = kVecSingle;
    h.generation = 1;
    std::memcpy(bytes_.data(), &h, sizeof(h));
    for (uint32_t i = 0; i < rings; ++i) Header(i)->cpu = i;
  }
  void Append(uint32_t ring, ipt_record r) {
    ipt_ring_header* rh = Header(ring);
    r.seq = rh->head;
    r.cpu = static_cast<uint16_t>(ring);
    std::memcpy(bytes_.data() + IPT_HEADER_SIZE + ring * stride_ + IPT_RING_HEADER_SIZE +
                    (rh->head & (kCapacity - 1)) * IPT_RECORD_SIZE,
                &r, sizeof(r));
    ++rh->head;
    ++written_;
  }
  std::span<const std::byte> bytes() const { return bytes_; }
  uint64_t written() const { return written_; }

 private:
  ipt_ring_header* Header(uint32_t ring) {
    return reinterpret_cast<ipt_ring_header*>(bytes_.data() + IPT_HEADER_SIZE + ring * stride_);
  }
  uint32_t rings_;
  uint64_t stride_;
  std::vector<std::byte> bytes_;
  uint64_t written_ = 0;
};

ipt_record Rec(uint16_t type, uint64_t tsc, uint16_t target = IPT_CPU_NONE) {
  ipt_record r{};
  r.type = type;
  r.tsc = tsc;
  r.target = target;
  return r;
}

// One request from CPU s to CPU t at 'tsc', every record of it in both
// regions; the loss_every-th one is lost after its ICR (its csd stays
// locked in the guest: never entered again).
void WriteRequest(Region* hv_p, Region* guest_p, uint64_t i, uint32_t s, uint32_t t, uint64_t tsc,
                  uint64_t loss_every) {
  constexpr uint64_t kFunc = 0xffffffff81001000ULL, kCsd = 0xffff888003a00000ULL;
  Region& hv = *hv_p;
  Region& guest = *guest_p;
  const bool lost = loss_every != 0 && i % loss_every == loss_every - 1;
  // A lost request's csd stays locked in the guest: never entered again.
  const uint64_t csd = lost ? kCsd + 0x1000'0000 + i * 0x40 : kCsd + s * 0x20;
  ipt_record q = Rec(IPT_G_QUEUE, tsc, static_cast<uint16_t>(t));
  q.flags = IPT_CSD_SYNC;
  q.a[0] = kFunc;
  q.a[1] = csd;
  guest.Append(s, q);
  ipt_record send = Rec(IPT_G_SEND, tsc + 10, static_cast<uint16_t>(t));
  send.a[0] = 1;
  guest.Append(s, send);
  ipt_record icr = Rec(IPT_H_ICR, tsc + 20);
  icr.vector = kVecSingle;
  icr.a[0] = uint64_t{1} << t;
  hv.Append(s, icr);
  if (!lost) {
    ipt_record irr = Rec(IPT_H_IRR, tsc + 30, static_cast<uint16_t>(t));
    irr.vector = kVecSingle;
    hv.Append(s, irr);
    ipt_record ack = Rec(IPT_H_ACK, tsc + 40);
    ack.vector = kVecSingle;
    hv.Append(t, ack);
    ipt_record irq = Rec(IPT_G_IRQ_ENTRY, tsc + 50);
    irq.vector = kVecSingle;
    guest.Append(t, irq);
    ipt_record fe = Rec(IPT_G_FUNC_ENTRY, tsc + 60);
    fe.a[0] = kFunc;
    fe.a[1] = csd;
    guest.Append(t, fe);
    ipt_record fx = fe;
    fx.type = IPT_G_FUNC_EXIT;
    fx.tsc = tsc + 61;
    guest.Append(t, fx);
    ipt_record eoi = Rec(IPT_H_EOI, tsc + 70);
    eoi.vector = kVecSingle;
    hv.Append(t, eoi);
  }
}

}  // namespace

int main(int argc, char** argv) {
  ipitrace::bench::StreamArgs args;
  if (!ipitrace::bench::ParseStreamArgs(
          argc, argv, "watch_rss RECORDS [CPUS] [LOSS_EVERY] [MAX_RSS_MIB]", &args))
    return 2;
  const uint64_t records = args.records;
  const uint32_t cpus = args.cpus;
  const uint64_t loss_every = args.loss_every;
  const double max_rss_mib = argc > 4 ? std::strtod(argv[4], nullptr) : 0;
  if (cpus < 2 || cpus > IPT_MAX_CPUS) return 2;
  Region hv(IPT_PRODUCER_QEMU, cpus), guest(IPT_PRODUCER_GUEST, cpus);
  ipitrace::HangScreen screen;
  std::vector<ipitrace::HangScreen::CorruptRing> corrupt;
  constexpr uint64_t kHangTicks = kKhz;  // 1 ms
  auto cpu_now = ipitrace::bench::CpuSeconds;
  const double c0 = cpu_now();
  uint64_t tsc = 1000, hangs = 0;
  size_t peak_outstanding = 0, peak_keys = 0;
  for (uint64_t i = 0; hv.written() + guest.written() < records; ++i) {
    const uint32_t s = static_cast<uint32_t>(i % cpus);
    const uint32_t t = static_cast<uint32_t>((i / cpus + 1 + s) % cpus);
    if (s != t) WriteRequest(&hv, &guest, i, s, t, tsc, loss_every);
    tsc += 100;
    if (i % 64 == 63) {  // a poll
      if (screen.Update(hv.bytes(), guest.bytes(), &corrupt) !=
          ipitrace::HangScreen::UpdateResult::kOk)
        return 1;
      peak_outstanding = std::max(peak_outstanding, screen.outstanding());
      peak_keys = std::max(peak_keys, screen.keys());
      const auto o = screen.Oldest();
      if (o && screen.newest_tsc() - o->queue_tsc > kHangTicks) {
        ++hangs;  // watch: full analysis, report; then forget what waited that long
        screen.DropQueuedUpTo(screen.newest_tsc() - kHangTicks - 1);
      }
    }
  }
  const double cpu = cpu_now() - c0;
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  const uint64_t written = hv.written() + guest.written();
  std::printf("{\"records_written\":%llu,\"records_read\":%llu,\"overwritten\":%llu,"
              "\"rejected\":%llu,\"cpu_s\":%.3f,\"records_per_cpu_s\":%.0f,"
              "\"max_rss_mib\":%.1f,\"peak_outstanding\":%zu,\"peak_keys\":%zu,"
              "\"hangs\":%llu}\n",
              static_cast<unsigned long long>(written),
              static_cast<unsigned long long>(screen.records()),
              static_cast<unsigned long long>(screen.stats().Get(ipitrace::StatId::ring_overwritten)),
              static_cast<unsigned long long>(screen.stats().Get(ipitrace::StatId::torn_record) +
                                              screen.stats().Get(ipitrace::StatId::unknown_record_type)),
              cpu,
              static_cast<double>(written) / cpu, static_cast<double>(ru.ru_maxrss) / 1024.0,
              peak_outstanding, peak_keys, static_cast<unsigned long long>(hangs));
  const double rss = static_cast<double>(ru.ru_maxrss) / 1024.0;
  if (max_rss_mib > 0 && rss > max_rss_mib) {
    std::fprintf(stderr, "watch_rss: max RSS %.1f MiB over the bound of %.1f MiB\n", rss,
                 max_rss_mib);
    return 1;
  }
  if (loss_every != 0 && hangs == 0) {
    std::fprintf(stderr, "watch_rss: no lost request was seen outstanding\n");
    return 1;
  }
  return 0;
}
