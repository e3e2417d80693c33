// SPDX-License-Identifier: MIT
#include "region_reader.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "testing/region_builder.h"

namespace ipitrace {
namespace {

using testing::RegionBuilder;

ipt_record Mark(uint64_t tsc) {
  ipt_record r{};
  r.type = IPT_G_MARK;
  r.tsc = tsc;
  r.target = IPT_CPU_NONE;
  return r;
}

Result<Region> ReadGuest(const std::vector<std::byte>& bytes, Stats* stats) {
  return RegionReader(stats).Read(bytes, StreamKind::kGuest, "guest.region");
}

template <typename T>
void Poke(std::vector<std::byte>* bytes, size_t offset, T value) {
  std::memcpy(bytes->data() + offset, &value, sizeof(T));
}

TEST_CASE("region_reader - good region") {
  RegionBuilder b(StreamKind::kGuest, 2, 8);
  for (uint64_t i = 0; i < 5; ++i) b.Append(0, Mark(100 + i));
  b.Append(1, Mark(50));
  b.AddSymbol(0xffffffff81000000ULL, "do_nothing", 0x10);
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  const Region& region = r.value();
  REQUIRE(region.rings.size() == 2);
  CHECK(region.rings[0].records.size() == 5);
  CHECK(region.rings[0].first_tsc() == 100);
  CHECK(region.rings[0].last_tsc() == 104);
  CHECK(region.rings[0].overwritten == 0);
  CHECK(region.rings[1].records.size() == 1);
  CHECK(region.RingForCpu(1) == &region.rings[1]);
  CHECK(region.RingForCpu(2) == nullptr);
  REQUIRE(region.FindSymbol(0xffffffff81000000ULL));
  CHECK(region.FindSymbol(0xffffffff81000000ULL)->name == "do_nothing");
  for (size_t i = 0; i < kNumStats; ++i) {
    INFO(Stats::Name(static_cast<StatId>(i)));
    CHECK(stats.Get(static_cast<StatId>(i)) == 0);
  }
}

TEST_CASE("region_reader - a distrusted ring is one gap from its head, for one read") {
  RegionBuilder b(StreamKind::kGuest, 2, 8);
  for (uint64_t i = 0; i < 5; ++i) b.Append(0, Mark(100 + i));
  for (uint64_t i = 0; i < 3; ++i) b.Append(1, Mark(50 + i));
  Stats stats;
  RegionReader reader(&stats);
  auto r = reader.Read(b.Bytes(), StreamKind::kGuest, "guest.region", {false, true});
  REQUIRE(r.ok());
  REQUIRE(r.value().rings.size() == 2);
  CHECK(r.value().rings[0].records.size() == 5);
  const Ring& bad = r.value().rings[1];
  CHECK(bad.records.empty());
  REQUIRE(bad.gaps.size() == 1);
  CHECK(bad.gaps[0].index == 3);
  CHECK(bad.gaps[0].tsc_bound == UINT64_MAX);
  CHECK(r.value().RingForCpu(1) == &bad);  // still CPU 1's ring, now all gap
  // The next read trusts it again.
  auto again = reader.Read(b.Bytes(), StreamKind::kGuest, "guest.region");
  REQUIRE(again.ok());
  CHECK(again.value().rings[1].records.size() == 3);
  CHECK(again.value().rings[1].gaps.empty());
}

TEST_CASE("region_reader - symbols: name and module as %pS prints them, hostile names bounded") {
  RegionBuilder b(StreamKind::kGuest, 1, 8);
  b.Append(0, Mark(100));
  b.AddSymbol(0xffffffffc0a01230ULL, "kvm_flush_remote", 0x90, "kvm", 0x10);
  b.AddSymbol(0xffffffff81001000ULL, "do_flush_tlb_all", 0x30);
  b.AddSymbol(0xffffffff81001000ULL, "a_second_entry_for_it", 0x30);  // ignored
  char raw[48];
  std::memset(raw, 'x', sizeof(raw));  // no NUL anywhere
  b.AddRawSymbol(0xffffffff81002000ULL, raw);
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  const Region& g = r.value();
  CHECK(g.symbols.size() == 3);
  const Symbol* k = g.FindSymbol(0xffffffffc0a01230ULL);
  REQUIRE(k != nullptr);
  CHECK(SymbolText(*k) == "kvm_flush_remote+0x10/0x90 [kvm]");
  const Symbol* t = g.FindSymbol(0xffffffff81001000ULL);
  REQUIRE(t != nullptr);
  CHECK(SymbolText(*t) == "do_flush_tlb_all+0x0/0x30");
  const Symbol* x = g.FindSymbol(0xffffffff81002000ULL);
  REQUIRE(x != nullptr);
  CHECK(x->name == std::string(48, 'x'));
  CHECK(x->module.empty());
  CHECK(g.FindSymbol(0xffffffff81001001ULL) == nullptr);
}

TEST_CASE("region_reader - truncated region is an error") {
  RegionBuilder b(StreamKind::kGuest, 2, 8);
  auto bytes = b.Bytes();
  Stats stats;
  SECTION("shorter than the header") {
    bytes.resize(100);
    auto r = ReadGuest(bytes, &stats);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ErrorCode::kMalformed);
    CHECK(r.status().message().find("truncated") != std::string::npos);
  }
  SECTION("rings beyond the end") {
    bytes.resize(bytes.size() - 64);
    auto r = ReadGuest(bytes, &stats);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ErrorCode::kMalformed);
  }
  CHECK(stats.Get(StatId::region_truncated) == 1);
}

TEST_CASE("region_reader - wrong magic") {
  RegionBuilder b(StreamKind::kGuest, 1, 8);
  b.header().magic = 0x1234;
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == ErrorCode::kMalformed);
  CHECK(r.status().message().find("magic") != std::string::npos);
  CHECK(stats.Get(StatId::bad_magic) == 1);
}

TEST_CASE("region_reader - wrong major version") {
  RegionBuilder b(StreamKind::kGuest, 1, 8);
  b.header().abi_major = IPT_ABI_MAJOR + 1;
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("ABI major") != std::string::npos);
  CHECK(stats.Get(StatId::abi_major_mismatch) == 1);
}

TEST_CASE("region_reader - wrong producer") {
  RegionBuilder b(StreamKind::kHv, 1, 8);
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE_FALSE(r.ok());
  CHECK(stats.Get(StatId::producer_mismatch) == 1);
}

TEST_CASE("region_reader - bad ring layout fields") {
  RegionBuilder b(StreamKind::kGuest, 2, 8);
  Stats stats;
  SECTION("capacity not a power of two") {
    b.header().ring_capacity = 6;
    auto r = ReadGuest(b.Bytes(), &stats);
    REQUIRE_FALSE(r.ok());
    CHECK(stats.Get(StatId::header_field_out_of_range) == 1);
  }
  SECTION("capacity beyond the file") {
    b.header().ring_capacity = 1u << 20;
    b.header().ring_stride = IPT_RING_HEADER_SIZE + (uint64_t{1} << 20) * 64;
    auto r = ReadGuest(b.Bytes(), &stats);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ErrorCode::kMalformed);
  }
  SECTION("stride too small for the capacity") {
    b.header().ring_stride = 64;
    auto r = ReadGuest(b.Bytes(), &stats);
    REQUIRE_FALSE(r.ok());
    CHECK(stats.Get(StatId::header_field_out_of_range) == 1);
  }
  SECTION("stride overflows") {
    b.header().ring_stride = ~uint64_t{0} - 7;
    auto r = ReadGuest(b.Bytes(), &stats);
    REQUIRE_FALSE(r.ok());
  }
  SECTION("ring_count zero / too large") {
    b.header().ring_count = GENERATE(0u, IPT_MAX_CPUS + 1, 0xffffffffu);
    auto r = ReadGuest(b.Bytes(), &stats);
    REQUIRE_FALSE(r.ok());
  }
  SECTION("cpu_count too large") {
    b.header().cpu_count = IPT_MAX_CPUS + 1;
    REQUIRE_FALSE(ReadGuest(b.Bytes(), &stats).ok());
  }
  SECTION("region_size beyond the file") {
    b.header().region_size += 4096;
    auto r = ReadGuest(b.Bytes(), &stats);
    REQUIRE_FALSE(r.ok());
    CHECK(stats.Get(StatId::region_truncated) == 1);
  }
}

TEST_CASE("region_reader - ring cpu out of range or duplicated") {
  RegionBuilder b(StreamKind::kGuest, 3, 8);
  b.Append(0, Mark(1));
  b.Append(1, Mark(2));
  b.Append(2, Mark(3));
  b.ring_header(1).cpu = 5000;
  b.ring_header(2).cpu = 0;
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  CHECK(stats.Get(StatId::ring_cpu_out_of_range) == 1);
  CHECK(stats.Get(StatId::ring_cpu_duplicate) == 1);
  CHECK(r.value().RingForCpu(0) == &r.value().rings[0]);
  CHECK(r.value().rings[1].records.empty());
  CHECK(r.value().rings[2].records.empty());
}

TEST_CASE("region_reader - head wrapped: overwrite counted, first retained") {
  RegionBuilder b(StreamKind::kGuest, 1, 8);
  for (uint64_t i = 0; i < 20; ++i) b.Append(0, Mark(1000 + i));
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  const Ring& ring = r.value().rings[0];
  CHECK(ring.head == 20);
  CHECK(ring.overwritten == 12);
  CHECK(ring.first_index == 12);
  REQUIRE(ring.records.size() == 8);
  CHECK(ring.records.front().seq == 12);
  CHECK(ring.first_tsc() == 1012);
  CHECK(ring.last_tsc() == 1019);
  CHECK(ring.gaps.empty());
  CHECK(stats.Get(StatId::ring_overwritten) == 12);
}

TEST_CASE("region_reader - torn record counted and skipped") {
  RegionBuilder b(StreamKind::kGuest, 1, 8);
  for (uint64_t i = 0; i < 6; ++i) b.Append(0, Mark(100 + i));
  b.Tear(0, 3);
  b.Tear(0, 5);
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  const Ring& ring = r.value().rings[0];
  CHECK(ring.records.size() == 4);
  CHECK(stats.Get(StatId::torn_record) == 2);
  REQUIRE(ring.gaps.size() == 2);
  CHECK(ring.gaps[0].index == 3);
  CHECK(ring.gaps[0].tsc_bound == 104);
  CHECK(ring.gaps[1].index == 5);
  CHECK(ring.gaps[1].tsc_bound == UINT64_MAX);
}

TEST_CASE("region_reader - stale slot from a previous lap is torn") {
  RegionBuilder b(StreamKind::kGuest, 1, 4);
  for (uint64_t i = 0; i < 6; ++i) b.Append(0, Mark(100 + i));
  // Pretend the writer published head 7 but slot 6 still holds seq 2.
  b.ring_header(0).head = 7;
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  CHECK(r.value().rings[0].records.size() == 3);
  CHECK(stats.Get(StatId::torn_record) == 1);
}

TEST_CASE("region_reader - bad records: unknown type, cpu out of range") {
  RegionBuilder b(StreamKind::kGuest, 1, 8);
  b.Append(0, Mark(1));
  ipt_record unknown = Mark(2);
  unknown.type = 200;
  b.Append(0, unknown);
  ipt_record bad_target{};
  bad_target.type = IPT_G_QUEUE;
  bad_target.tsc = 3;
  bad_target.target = 4000;
  b.Append(0, bad_target);
  b.Append(0, Mark(0));  // tsc backwards
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  CHECK(r.value().rings[0].records.size() == 2);
  CHECK(stats.Get(StatId::unknown_record_type) == 1);
  CHECK(stats.Get(StatId::cpu_out_of_range) == 1);
  CHECK(stats.Get(StatId::tsc_backwards) == 1);
  CHECK(r.value().rings[0].gaps.size() == 1);
}

TEST_CASE("region_reader - all-zero and all-0xFF buffers rejected cleanly") {
  const uint8_t fill = GENERATE(uint8_t{0x00}, uint8_t{0xff});
  const size_t size = GENERATE(size_t{0}, size_t{64}, size_t{4096}, size_t{1} << 20);
  std::vector<std::byte> bytes(size, std::byte{fill});
  for (StreamKind kind : {StreamKind::kGuest, StreamKind::kHv}) {
    Stats stats;
    auto r = RegionReader(&stats).Read(bytes, kind, "x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ErrorCode::kMalformed);
    CHECK_FALSE(r.status().message().empty());
  }
}

TEST_CASE("region_reader - hostile head values stay in bounds") {
  RegionBuilder b(StreamKind::kHv, 1, 8, /*misc_ring=*/true);
  auto bytes = b.Bytes();
  const uint64_t head = GENERATE(uint64_t{7}, uint64_t{9}, ~uint64_t{0}, uint64_t{1} << 63);
  Poke(&bytes, IPT_HEADER_SIZE, head);  // ring 0 head
  Stats stats;
  auto r = RegionReader(&stats).Read(bytes, StreamKind::kHv, "hv");
  REQUIRE(r.ok());
  CHECK(r.value().rings[0].records.empty());
  CHECK(r.value().misc_ring == 1);
  // All-zero slots: slot 0 has seq 0 (accepted index only when head <= 8,
  // then rejected as type 0); every other slot is torn.
  CHECK(stats.Get(StatId::torn_record) + stats.Get(StatId::unknown_record_type) ==
        std::min<uint64_t>(head, 8));
}

TEST_CASE("region_reader - ring index wraps at 2^32 and 2^64") {
  const uint64_t start = GENERATE(uint64_t{1} << 32, ~uint64_t{0});
  RegionBuilder b(StreamKind::kGuest, 1, 8);
  b.ring_header(0).head = start - 3;
  for (uint64_t i = 0; i < 6; ++i) b.Append(0, Mark(100 + i));
  Stats stats;
  auto r = ReadGuest(b.Bytes(), &stats);
  REQUIRE(r.ok());
  const Ring& ring = r.value().rings[0];
  if (start == (uint64_t{1} << 32)) {
    // Window [head - 8, head): 6 records written, 2 slots never written.
    CHECK(ring.head == (uint64_t{1} << 32) + 3);
    CHECK(ring.records.size() == 6);
    CHECK(stats.Get(StatId::torn_record) == 2);
  } else {
    // head wrapped past 2^64 to 2: window [0, 2), the two newest.
    CHECK(ring.head == 2);
    CHECK(ring.records.size() == 2);
    CHECK(ring.overwritten == 0);
  }
  for (const ipt_record& rec : ring.records) CHECK(rec.tsc >= 100);
}

TEST_CASE("region_reader - random corruption never crashes") {
  RegionBuilder b(StreamKind::kHv, 4, 16, /*misc_ring=*/true);
  for (uint32_t ring = 0; ring < 4; ++ring)
    for (uint64_t i = 0; i < 20; ++i) b.Append(ring, Mark(i * 10));
  const auto good = b.Bytes();
  std::mt19937_64 rng(12345);
  size_t accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      // Bias towards the header's first 192 bytes and the ring headers.
      const size_t span = (rng() & 1) ? 192 : bytes.size();
      bytes[rng() % span] = static_cast<std::byte>(rng());
    }
    if (rng() % 16 == 0) bytes.resize(rng() % bytes.size());
    Stats stats;
    auto r = RegionReader(&stats).Read(bytes, StreamKind::kHv, "fuzz");
    if (r.ok()) {
      ++accepted;
      for (const Ring& ring : r.value().rings) CHECK(ring.records.size() <= 16);
    } else {
      CHECK_FALSE(r.status().message().empty());
    }
  }
  CHECK(accepted > 0);
}

}  // namespace
}  // namespace ipitrace
