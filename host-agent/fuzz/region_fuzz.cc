// SPDX-License-Identifier: MIT
//
// libFuzzer target: region decoding + tracking + both reports.
//
// Input: byte 0 = mode, bytes 1..4 = little-endian length L of the hv
// region, then L bytes of hv region, then the guest region (the rest).
// Mode bit 0: "mutate while reading" - a second thread flips bytes of the
// regions while RegionReader copies them (a producer scribbling over a live
// mapping); the agent must stay in bounds whatever it reads.
// Mode bit 1: "in place" - the regions are read as a snapshot's mapped files
// are (RegionBytes: records viewed in the bytes, not copied); with bit 0
// the bytes keep changing through the analysis and both reports, which
// read the records again.
// Mode bit 2: "live" - before that, watch's HangScreen follows the two
// regions for two updates (with bit 0, while they change under it).
//
// Build: meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
//        (CXX=clang++-14); run: build-fuzz/host-agent/region_fuzz CORPUS
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "analyzer.h"
#include "hang_screen.h"
#include "json_report.h"
#include "region_bytes.h"
#include "region_reader.h"
#include "text_report.h"
#include "timeline.h"

namespace {

void Run(std::vector<std::byte>* hv_in, std::vector<std::byte>* guest_in, bool mutate,
         bool in_place, bool live) {
  ipitrace::Stats stats;
  ipitrace::RegionReader reader(&stats);
  // In place: the reader views the records in these buffers, which the
  // flipper may keep changing until the end.
  std::shared_ptr<const ipitrace::RegionBytes> hv_bytes, guest_bytes;
  std::byte* hv_data = hv_in->data();
  std::byte* guest_data = guest_in->data();
  size_t hv_size = hv_in->size(), guest_size = guest_in->size();
  if (in_place) {
    hv_bytes = ipitrace::RegionBytes::FromBuffer(*hv_in);
    guest_bytes = ipitrace::RegionBytes::FromBuffer(*guest_in);
    // Racy by design (see below): the fuzzer scribbles on bytes the agent
    // treats as read-only.
    hv_data = const_cast<std::byte*>(hv_bytes->bytes().data());
    guest_data = const_cast<std::byte*>(guest_bytes->bytes().data());
  }
  std::atomic<bool> stop{false};
  std::thread flipper;
  if (mutate && hv_size && guest_size) {
    flipper = std::thread([&] {
      uint32_t x = 0x9e3779b9u;
      while (!stop.load(std::memory_order_relaxed)) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        const bool hv = x & 1;
        // Volatile byte stores: racy by design (a producer scribbling); the
        // reader copies each field once, so it can read garbage, never OOB.
        auto* p = reinterpret_cast<volatile unsigned char*>(hv ? hv_data : guest_data);
        const size_t at = (x >> 1) % (hv ? hv_size : guest_size);
        p[at] = static_cast<unsigned char>(p[at] ^ (1u << (x % 8)));
      }
    });
  }
  auto stop_flipper = [&] {
    if (flipper.joinable()) {
      stop = true;
      flipper.join();
    }
  };
  if (live) {
    ipitrace::HangScreen screen;
    std::vector<ipitrace::HangScreen::CorruptRing> corrupt;
    for (int k = 0; k < 2; ++k) {
      if (screen.Update({hv_data, hv_size}, {guest_data, guest_size}, &corrupt) !=
          ipitrace::HangScreen::UpdateResult::kOk)
        break;
      if (auto o = screen.Oldest()) screen.DropQueuedUpTo(o->queue_tsc);
    }
  }
  auto h = in_place ? reader.Read(hv_bytes, ipitrace::StreamKind::kHv, "hv")
                    : reader.Read(*hv_in, ipitrace::StreamKind::kHv, "hv");
  auto g = in_place ? reader.Read(guest_bytes, ipitrace::StreamKind::kGuest, "guest")
                    : reader.Read(*guest_in, ipitrace::StreamKind::kGuest, "guest");
  if (!in_place) stop_flipper();  // copies: nothing reads the bytes again
  if (!h.ok() || !g.ok()) {
    stop_flipper();
    return;
  }
  ipitrace::Snapshot snap;
  snap.dir = "<fuzz>";
  snap.hv = std::move(h).value();
  snap.guest = std::move(g).value();
  ipitrace::Analysis a =
      ipitrace::Analyzer(&stats, ipitrace::AnalyzerOptions{}).Analyze(std::move(snap));
  (void)ipitrace::TextReport(&a).Render();
  (void)ipitrace::JsonReport(&a).Build().dump(
      -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  // Every request read back (those not kept whole: from their rows and
  // G_QUEUE records).
  for (size_t i = 0; i < a.requests.size() && i < 64; ++i) (void)a.requests[i];
  stop_flipper();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const bool mutate = data[0] & 1;
  const bool in_place = data[0] & 2;
  const bool live = data[0] & 4;
  uint32_t len = 0;
  std::memcpy(&len, data + 1, 4);
  const size_t rest = size - 5;
  if (len > rest) len = static_cast<uint32_t>(rest);
  std::vector<std::byte> hv(reinterpret_cast<const std::byte*>(data + 5),
                            reinterpret_cast<const std::byte*>(data + 5 + len));
  std::vector<std::byte> guest(reinterpret_cast<const std::byte*>(data + 5 + len),
                               reinterpret_cast<const std::byte*>(data + size));
  Run(&hv, &guest, mutate, in_place, live);
  return 0;
}
