// SPDX-License-Identifier: MIT
#include "snapshot.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "region_bytes.h"

namespace ipitrace {

std::string Snapshot::Truncated() const {
  for (const Region* r : {&hv, &guest}) {
    if (r->bytes && r->bytes->truncated()) {
      return fmt::format("{}/{}.region shrank while it was being read; the "
                         "analysis is void",
                         dir, StreamName(r->kind));
    }
  }
  return {};
}

Result<Snapshot> SnapshotLoader::Load(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::Error(ErrorCode::kIo,
                         fmt::format("{}: not a snapshot directory", dir));
  }
  Snapshot snap;
  snap.dir = dir;

  {
    std::ifstream in(dir + "/manifest.json");
    if (!in) {
      stats_->Increment(StatId::manifest_missing);
    } else {
      std::stringstream ss;
      ss << in.rdbuf();
      auto j = nlohmann::ordered_json::parse(ss.str(), nullptr,
                                             /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        stats_->Increment(StatId::manifest_invalid);
      } else {
        snap.manifest = std::move(j);
      }
    }
  }

  RegionReader reader(stats_, sink_);
  struct Want {
    const char* file;
    StreamKind kind;
    Region* out;
  };
  for (const Want& w : {Want{"hv.region", StreamKind::kHv, &snap.hv},
                        Want{"guest.region", StreamKind::kGuest, &snap.guest}}) {
    const std::string path = dir + "/" + w.file;
    if (w.kind == StreamKind::kHv && RegionBytes::Absent(path)) {
      // No hypervisor stream at all: guest-only (the Analyzer says so).
      snap.hv = NoHvRegion("no hv.region in the snapshot");
      continue;
    }
    auto file = RegionBytes::Open(path);  // PATH mapped, else PATH.zst
    if (!file.ok()) return file.status();
    auto region = reader.Read(std::move(file).value(), w.kind, path);
    if (!region.ok()) return region.status();
    *w.out = std::move(region).value();
  }
  return snap;
}

}  // namespace ipitrace
