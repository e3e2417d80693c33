// SPDX-License-Identifier: MIT
//
// libFuzzer target: region decoding + tracking + both reports.
//
// Input: byte 0 = mode, bytes 1..4 = little-endian length L of the hv
// region, then L bytes of hv region, then the guest region (the rest).
// Mode bit 0: "mutate while reading" - a second thread flips bytes of the
// regions while RegionReader copies them (a producer scribbling over a live
// mapping); the agent must stay in bounds whatever it reads.
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
#include "json_report.h"
#include "region_reader.h"
#include "text_report.h"
#include "timeline.h"

namespace {

void Run(std::vector<std::byte>* hv, std::vector<std::byte>* guest, bool mutate) {
  ipitrace::Stats stats;
  ipitrace::RegionReader reader(&stats);
  std::atomic<bool> stop{false};
  std::thread flipper;
  if (mutate && !hv->empty() && !guest->empty()) {
    flipper = std::thread([&] {
      uint32_t x = 0x9e3779b9u;
      while (!stop.load(std::memory_order_relaxed)) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        auto* v = (x & 1) ? hv : guest;
        // Volatile byte stores: racy by design (a producer scribbling); the
        // reader copies each field once, so it can read garbage, never OOB.
        auto* p = reinterpret_cast<volatile unsigned char*>(v->data());
        const size_t at = (x >> 1) % v->size();
        p[at] = static_cast<unsigned char>(p[at] ^ (1u << (x % 8)));
      }
    });
  }
  auto h = reader.Read(*hv, ipitrace::StreamKind::kHv, "hv");
  auto g = reader.Read(*guest, ipitrace::StreamKind::kGuest, "guest");
  if (flipper.joinable()) {
    stop = true;
    flipper.join();
  }
  if (!h.ok() || !g.ok()) return;
  ipitrace::Snapshot snap;
  snap.dir = "<fuzz>";
  snap.hv = std::move(h).value();
  snap.guest = std::move(g).value();
  ipitrace::Analysis a =
      ipitrace::Analyzer(&stats, ipitrace::AnalyzerOptions{}).Analyze(std::move(snap));
  (void)ipitrace::TextReport(&a).Render();
  (void)ipitrace::JsonReport(&a).Build().dump(
      -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const bool mutate = data[0] & 1;
  uint32_t len = 0;
  std::memcpy(&len, data + 1, 4);
  const size_t rest = size - 5;
  if (len > rest) len = static_cast<uint32_t>(rest);
  std::vector<std::byte> hv(reinterpret_cast<const std::byte*>(data + 5),
                            reinterpret_cast<const std::byte*>(data + 5 + len));
  std::vector<std::byte> guest(reinterpret_cast<const std::byte*>(data + 5 + len),
                               reinterpret_cast<const std::byte*>(data + size));
  Run(&hv, &guest, mutate);
  return 0;
}
