// SPDX-License-Identifier: MIT
#include "region_bytes.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch_test_macros.hpp>

#include "analyzer.h"
#include "file_bytes.h"
#include "mapped_file.h"
#include "snapshot.h"
#include "testing/scenario.h"

namespace ipitrace {
namespace {

namespace fs = std::filesystem;

std::string TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "ipitrace-rb-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  return tmpl;
}

void Write(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// Reads every byte through a volatile pointer (the compiler may not skip
// or merge the loads).
uint64_t SumBytes(std::span<const std::byte> bytes) {
  const auto* p = reinterpret_cast<const volatile unsigned char*>(bytes.data());
  uint64_t sum = 0;
  for (size_t i = 0; i < bytes.size(); ++i) sum += p[i];
  return sum;
}

TEST_CASE("open_regular_file - the one open+fstat: missing, directory, regular") {
  const std::string dir = TempDir();
  auto missing = OpenRegularFile(dir + "/nope");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == ErrorCode::kIo);
  CHECK(missing.status().message().find("cannot open " + dir + "/nope") == 0);
  auto d = OpenRegularFile(dir);
  REQUIRE_FALSE(d.ok());
  CHECK(d.status().message() == "cannot read " + dir + ": not a regular file");
  // MappedFile and ReadRegionFile report the same.
  CHECK(MappedFile::Open(dir).status().message() == d.status().message());
  CHECK(ReadRegionFile(dir).status().message() == d.status().message());
  Write(dir + "/f", std::vector<std::byte>(100, std::byte{1}));
  auto f = OpenRegularFile(dir + "/f");
  REQUIRE(f.ok());
  CHECK(f.value().size == 100);
  CHECK(f.value().fd.get() >= 0);
  fs::remove_all(dir);
}

TEST_CASE("region_bytes - a file shrinking under a fenced mapping reads zeros, no SIGBUS") {
  const std::string dir = TempDir();
  const std::string path = dir + "/region";
  Write(path, std::vector<std::byte>(1 << 16, std::byte{0x5a}));
  auto r = RegionBytes::Open(path);
  REQUIRE(r.ok());
  const std::shared_ptr<const RegionBytes> bytes = r.value();
  CHECK(SumBytes(bytes->bytes()) == uint64_t{0x5a} << 16);
  CHECK_FALSE(bytes->truncated());
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 4096) == 0);  // keep the first page
    ::close(fd);
  }
  // The pages past the new end raise SIGBUS; the fence maps zeros instead.
  CHECK(SumBytes(bytes->bytes()) == uint64_t{0x5a} * 4096);
  CHECK(bytes->truncated());
  fs::remove_all(dir);
}

TEST_CASE("snapshot - a region truncated while analysed makes the analysis void") {
  testing::Scenario sc(2, 1024);
  for (uint64_t i = 0; i < 200; ++i)
    sc.FullChain(static_cast<uint32_t>(i % 2), static_cast<uint32_t>((i + 1) % 2),
                 1000 + i * 100, 0xffffffff81001000ULL, 0xffff888000001000ULL);
  const std::string dir = TempDir() + "/snap";
  sc.WriteDir(dir);
  Stats stats;
  auto snap = SnapshotLoader(&stats).Load(dir);
  REQUIRE(snap.ok());
  CHECK(snap.value().Truncated().empty());
  REQUIRE(::truncate((dir + "/guest.region").c_str(), 4096) == 0);
  const Analysis a = Analyzer(&stats, {}).Analyze(std::move(snap).value());
  const std::string t = a.snapshot.Truncated();
  CHECK(t.find("guest.region shrank while it was being read") != std::string::npos);
  fs::remove_all(fs::path(dir).parent_path());
}

}  // namespace
}  // namespace ipitrace
