// SPDX-License-Identifier: MIT
//
// End-to-end: runs make_snapshot and the ipitrace binary (paths from the
// environment, set by meson test) and checks exit codes and the JSON.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <catch2/catch_test_macros.hpp>
#include <nlohmann/json.hpp>

#include "ipitrace_abi.h"

namespace {

// Every verdict of tracker.h IPT_VERDICTS appears in verdict_counts.
constexpr size_t kVerdictNames = 15;

struct Run {
  int rc = -1;
  std::string out;
};

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  REQUIRE(v != nullptr);
  return v;
}

// Runs cmd; captures stdout (or, with want_stderr, stderr instead).
Run Exec(const std::string& cmd, bool want_stderr = false) {
  Run r;
  const std::string redir = want_stderr ? " 2>&1 >/dev/null" : " 2>/dev/null";
  FILE* p = ::popen((cmd + redir).c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Stderr(const std::string& cmd) {
  return Exec(cmd, /*want_stderr=*/true).out;
}

std::string TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ipitrace-cli-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  return tmpl;
}

std::string Agent() { return Env("IPITRACE_BIN"); }

std::string MakeSnapshot(const std::string& kind) {
  const std::string dir = TempDir() + "/snap";
  REQUIRE(Exec(Env("IPITRACE_MAKE_SNAPSHOT") + " " + dir + " " + kind).rc == 0);
  return dir;
}

TEST_CASE("cli - version, help and usage errors") {
  Run v = Exec(Agent() + " --version");
  CHECK(v.rc == 0);
  CHECK(v.out.find("ipitrace") != std::string::npos);
  CHECK(Exec(Agent() + " --help").rc == 0);
  Run h = Exec(Agent() + " analyze --help");
  CHECK(h.rc == 0);
  CHECK(h.out.find("--threshold-ms") != std::string::npos);
  CHECK(Exec(Agent() + " dump --help").rc == 0);
  CHECK(Exec(Agent()).rc == 2);
  CHECK(Exec(Agent() + " analyze").rc == 2);
  CHECK(Exec(Agent() + " analyze /tmp --bogus").rc == 2);
  CHECK(Exec(Agent() + " frobnicate").rc == 2);
  CHECK(Exec(Agent() + " analyze /tmp --threshold-ms -1").rc == 2);
}

TEST_CASE("cli - missing or unreadable input exits 3") {
  CHECK(Exec(Agent() + " analyze /nonexistent/snapshot").rc == 3);
  const std::string dir = MakeSnapshot("mixed");
  std::filesystem::remove(dir + "/guest.region");
  CHECK(Exec(Agent() + " analyze " + dir).rc == 3);
  const std::string err = Stderr(Agent() + " analyze " + dir);
  CHECK(err.find("guest.region") != std::string::npos);
  CHECK(err.find('\n') == err.size() - 1);  // one line
}

TEST_CASE("cli - claim marks a guest region file, and never someone else's") {
  const std::string dir = MakeSnapshot("mixed");
  const std::string path = dir + "/claimed.region";
  REQUIRE(Exec(Agent() + " claim " + path + " --size-mb 4").rc == 0);
  CHECK(std::filesystem::file_size(path) == (4u << 20));
  uint64_t magic = 0;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  REQUIRE(std::fread(&magic, sizeof(magic), 1, f) == 1);
  std::fclose(f);
  CHECK(magic == IPT_MAGIC);
  // Claimed again, or an ipitrace region laid out already: fine.
  CHECK(Exec(Agent() + " claim " + path + " --size-mb 4").rc == 0);
  CHECK(Exec(Agent() + " claim " + dir + "/guest.region --size-mb 1").rc == 0);
  // Another program's file: refused, exit 10, not a byte changed.
  const std::string foreign = dir + "/foreign.bin";
  const std::string data(8192, 'Q');
  f = std::fopen(foreign.c_str(), "wb");
  REQUIRE(f != nullptr);
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
  CHECK(Exec(Agent() + " claim " + foreign + " --size-mb 4").rc == 10);
  CHECK(std::filesystem::file_size(foreign) == data.size());
  std::string back(data.size(), '\0');
  f = std::fopen(foreign.c_str(), "rb");
  REQUIRE(f != nullptr);
  REQUIRE(std::fread(back.data(), 1, back.size(), f) == back.size());
  std::fclose(f);
  CHECK(back == data);
  CHECK(Exec(Agent() + " claim " + path).rc == 2);  // --size-mb is required
}

TEST_CASE("cli - malformed region exits 4") {
  const std::string dir = MakeSnapshot("badmagic");
  CHECK(Exec(Agent() + " analyze " + dir).rc == 4);
  CHECK(Stderr(Agent() + " analyze " + dir).find("bad magic") != std::string::npos);
  std::filesystem::resize_file(dir + "/hv.region", 10);
  CHECK(Exec(Agent() + " analyze " + dir + " --json").rc == 4);
}

TEST_CASE("cli - every subcommand has --help; new subcommands' usage errors") {
  for (const char* sub : {"analyze", "dump", "watch", "export"}) {
    Run h = Exec(Agent() + " " + sub + " --help");
    CHECK(h.rc == 0);
    CHECK(h.out.find("Usage") != std::string::npos);
  }
  CHECK(Exec(Agent() + " watch").rc == 2);
  CHECK(Exec(Agent() + " watch /tmp --hang-ms 0").rc == 2);
  CHECK(Exec(Agent() + " export /tmp").rc == 2);  // --timeline required
}

TEST_CASE("cli - compressed regions, corrupt zstd, truncated and wrong-version regions") {
  const std::string dir = MakeSnapshot("mixed");
  // .zst is read transparently when the plain file is absent.
  REQUIRE(Exec("zstd -q --rm " + dir + "/hv.region").rc == 0);
  Run r = Exec(Agent() + " analyze " + dir + " --json");
  CHECK(r.rc == 0);
  CHECK(nlohmann::json::parse(r.out)["verdict_counts"]["lost-in-routing"] == 2);
  // Corrupt zstd: malformed (4), one clear line.
  std::filesystem::resize_file(dir + "/hv.region.zst", 40);
  CHECK(Exec(Agent() + " analyze " + dir).rc == 4);
  CHECK(Stderr(Agent() + " analyze " + dir).find("zstd") != std::string::npos);

  const std::string d2 = MakeSnapshot("mixed");
  // Wrong ABI major (offset 8).
  {
    std::FILE* f = std::fopen((d2 + "/guest.region").c_str(), "r+b");
    REQUIRE(f != nullptr);
    std::fseek(f, 8, SEEK_SET);
    const uint16_t major = 99;
    std::fwrite(&major, 2, 1, f);
    std::fclose(f);
  }
  CHECK(Exec(Agent() + " analyze " + d2).rc == 4);
  CHECK(Stderr(Agent() + " analyze " + d2).find("ABI major") != std::string::npos);
}

TEST_CASE("cli - export --timeline writes Chrome trace JSON") {
  const std::string dir = MakeSnapshot("mixed");
  const std::string out = dir + "/timeline.json";
  REQUIRE(Exec(Agent() + " export --timeline " + out + " " + dir).rc == 0);
  std::FILE* f = std::fopen(out.c_str(), "r");
  REQUIRE(f != nullptr);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  std::fclose(f);
  const auto j = nlohmann::json::parse(text);
  size_t flows_start = 0, flows_end = 0, metadata = 0, records = 0, backwards = 0;
  double last_ts = -1;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] == "s") ++flows_start;
    if (e["ph"] == "f") ++flows_end;
    if (e["ph"] == "M") ++metadata;
    // Records of both streams in one time order (MergedRecords).
    if (e["ph"] == "X" || e["ph"] == "B" || e["ph"] == "E") {
      ++records;
      backwards += e["ts"].get<double>() < last_ts;
      last_ts = e["ts"].get<double>();
    }
  }
  CHECK(records > 0);
  CHECK(backwards == 0);
  CHECK(flows_start > 0);
  CHECK(flows_start == flows_end);
  CHECK(metadata > 0);
  CHECK(Exec(Agent() + " export --timeline /nonexistent/dir/t.json " + dir).rc == 3);
}

TEST_CASE("cli - analyze reports latency and target activity") {
  const std::string dir = MakeSnapshot("mixed");
  Run r = Exec(Agent() + " analyze " + dir + " --json");
  REQUIRE(r.rc == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["latency"].size() == 4);
  CHECK(j["latency"][0]["stage"] == "send->IRR");
  for (const auto& st : j["latency"]) {  // the histogram holds every sample
    uint64_t n = 0;
    for (const auto& c : st["histogram"]["counts"]) n += c.get<uint64_t>();
    CHECK(n == st["count"].get<uint64_t>());
    CHECK(st["histogram"]["counts"].back().get<uint64_t>() > 0);
  }
  for (const auto& l : j["losses"]) CHECK(l.contains("target_activity"));
  Run t = Exec(Agent() + " analyze " + dir);
  CHECK(t.out.find("stage latency") != std::string::npos);
  CHECK(t.out.find("while it waited") != std::string::npos);
}

TEST_CASE("cli - verdicts --json publishes the one table, with stages") {
  Run r = Exec(Agent() + " verdicts --json");
  REQUIRE(r.rc == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["schema_version"] == 2);
  REQUIRE(j["verdicts"].size() == kVerdictNames);
  for (const auto& v : j["verdicts"]) {
    // A loss names the stage where the IPI vanished; nothing else does.
    CHECK((v["stage"] != "-") == v["loss"].get<bool>());
    CHECK(!v["meaning"].get<std::string>().empty());
  }
  CHECK(j["verdicts"][4]["name"] == "lost-in-routing");
  CHECK(j["verdicts"][4]["stage"] == "routing");
}

TEST_CASE("cli - analyze --json on a synthetic snapshot") {
  const std::string dir = MakeSnapshot("mixed");
  Run r = Exec(Agent() + " analyze " + dir + " --json --threshold-ms 5");
  REQUIRE(r.rc == 0);
  const auto j = nlohmann::json::parse(r.out);

  CHECK(j["requests"] == 18);
  const auto& vc = j["verdict_counts"];
  CHECK(vc.size() == kVerdictNames);
  CHECK(vc["queued-behind-loss"] == 0);
  CHECK(vc["served-by-ipi"] == 13);
  CHECK(vc["served-without-ipi"] == 2);
  CHECK(vc["lost-in-routing"] == 2);
  CHECK(vc["in-flight"] == 1);
  CHECK(vc["lost-guest-to-hypervisor"] == 0);
  CHECK(vc["inconclusive-gap"] == 0);

  REQUIRE(j["losses"].size() == 2);
  int late = 0;
  for (const auto& l : j["losses"]) {
    CHECK(l["verdict"] == "lost-in-routing");
    CHECK(l["target_cpu"] == 2);
    CHECK(l["target_vcpu"] == 2);
    CHECK(l["func"] == "0xffffffff81001000");
    CHECK(l["func_name"] == "generic_func");
    CHECK(l["evidence"].size() >= 3);
    CHECK(l["evidence"][0]["type"] == "G_QUEUE");
    CHECK(l["evidence"][0]["stream"] == "guest");
    CHECK(l["evidence"][2]["type"] == "H_ICR");
    CHECK(l["evidence"][2]["stream"] == "hv");
    CHECK(l["evidence"][2]["a"].size() == 4);
    if (l["served_late"] == true) {
      ++late;
      CHECK(l["source_cpu"] == 1);
      CHECK(l["vector"] == 0xfb);
      CHECK(l["served_tsc"].is_number());
    } else {
      CHECK(l["source_cpu"] == 0);
      CHECK(l["vector"] == 0xfc);
      CHECK(l["served_tsc"].is_null());
    }
  }
  CHECK(late == 1);

  REQUIRE(j["per_cpu"].size() == 4);
  CHECK(j["per_cpu"][2]["vcpu"] == 2);
  CHECK(j["per_cpu"][2]["apic_id"] == 2);
  CHECK(j["per_cpu"][1]["hv_ack_callfunc"] == 4);  // 3 single + 1 mask
  CHECK(j["per_cpu"][1]["guest_irq_callfunc"] == 4);

  bool saw_torn = false;
  for (const auto& s : j["stats"]) {
    CHECK(s.contains("severity"));
    CHECK(s.contains("description"));
    if (s["name"] == "torn_record") {
      saw_torn = true;
      CHECK(s["count"] == 0);
    }
  }
  CHECK(saw_torn);
  CHECK(j["window"]["guest"]["rings"].size() == 4);
  CHECK(j["window"]["hv"]["rings"].size() == 5);
  CHECK(j["manifest"]["format"] == 1);
  CHECK(j["unresolved"].size() == 1);

  // Each request served without its own IPI, with the reason.
  REQUIRE(j["served_without_ipi"].size() == 2);
  CHECK(j["served_without_ipi_truncated"] == false);
  for (const auto& x : j["served_without_ipi"]) {
    CHECK(x["verdict"] == "served-without-ipi");
    CHECK(x["served_tsc"].is_number());
    CHECK(!x["reason"].get<std::string>().empty());
  }
}

TEST_CASE("cli - analyze lists the slowest requests first") {
  const std::string dir = MakeSnapshot("mixed");
  Run r = Exec(Agent() + " analyze " + dir + " --json --threshold-ms 0");
  REQUIRE(r.rc == 0);
  const auto j = nlohmann::json::parse(r.out);
  const auto& slow = j["slow"];
  // Every request with a service time: 15 served, 1 lost IPI served late.
  CHECK(slow["count"] == 16);
  CHECK(slow["listed"] == 16);
  REQUIRE(slow["requests"].size() == 16);
  bool ascending_somewhere = false;
  for (size_t i = 1; i < slow["requests"].size(); ++i)
    ascending_somewhere |= slow["requests"][i]["latency_ms"].get<double>() >
                           slow["requests"][i - 1]["latency_ms"].get<double>();
  CHECK(!ascending_somewhere);
  CHECK(slow["requests"][0]["latency_ms"].get<double>() >
        slow["requests"][15]["latency_ms"].get<double>());
}

TEST_CASE("cli - analyze text report and dump") {
  const std::string dir = MakeSnapshot("mixed");
  Run r = Exec(Agent() + " analyze " + dir);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("lost-in-routing") != std::string::npos);
  CHECK(r.out.find("data quality") != std::string::npos);
  CHECK(r.out.find("served late") != std::string::npos);
  // Each loss says how far its chain got (Request::reached).
  CHECK(r.out.find("its chain reached: ICR") != std::string::npos);
  Run d = Exec(Agent() + " dump " + dir + " --limit 5");
  CHECK(d.rc == 0);
  CHECK(std::count(d.out.begin(), d.out.end(), '\n') == 5);
}

}  // namespace
