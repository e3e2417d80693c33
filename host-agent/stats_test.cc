// SPDX-License-Identifier: MIT
#include "stats.h"

#include <set>
#include <string>

#include <catch2/catch_test_macros.hpp>

namespace ipitrace {
namespace {

TEST_CASE("stats - table names are unique and described") {
  std::set<std::string> names;
  for (size_t i = 0; i < kNumStats; ++i) {
    const auto id = static_cast<StatId>(i);
    CHECK(names.insert(std::string(Stats::Name(id))).second);
    CHECK_FALSE(Stats::Description(id).empty());
  }
  CHECK(Stats::Name(StatId::torn_record) == "torn_record");
  CHECK(Stats::SeverityOf(StatId::bad_magic) == Severity::kError);
  CHECK(Stats::SeverityName(Stats::SeverityOf(StatId::ring_overwritten)) ==
        "data_loss");
}

TEST_CASE("stats - counts accumulate") {
  Stats s;
  s.Increment(StatId::torn_record);
  s.Increment(StatId::torn_record, 4);
  CHECK(s.Get(StatId::torn_record) == 5);
  CHECK(s.Get(StatId::bad_magic) == 0);
}

}  // namespace
}  // namespace ipitrace
