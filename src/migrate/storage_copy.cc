#include "migrate/storage_copy.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "qemu/devices.h"

namespace agile::migrate {
using nlohmann::json;

namespace {
std::string JobId(size_t i) { return "mirror-" + qemu::DiskNodeName(i); }
std::string TargetNode(size_t i) { return "nbd-" + qemu::DiskNodeName(i); }
constexpr int kPollMs = 100;
}  // namespace

Result<std::vector<uint64_t>> DiskSizes(MigratingVm* vm) {
  const size_t n = vm->spec().disks.size();
  AGILE_ASSIGN_OR_RETURN(json nodes, vm->Qmp("query-named-block-nodes", {{"flat", true}}));
  std::vector<uint64_t> sizes(n, 0);
  if (!nodes.is_array()) return Internal("query-named-block-nodes: not a list");
  for (const auto& node : nodes) {
    std::string name = node.value("node-name", "");
    for (size_t i = 0; i < n; ++i)
      if (name == qemu::DiskNodeName(i) && node.contains("image"))
        sizes[i] = node["image"].value("virtual-size", 0ull);
  }
  for (size_t i = 0; i < n; ++i)
    if (sizes[i] == 0) return Internal("QEMU reports no size for " + qemu::DiskNodeName(i));
  return sizes;
}

Status DiskMirror::Start(const std::string& nbd_host, uint16_t nbd_port, size_t disks) {
  disks_ = disks;
  for (size_t i = 0; i < disks; ++i) {
    json server = {{"type", "inet"}, {"host", nbd_host}, {"port", std::to_string(nbd_port)}};
    AGILE_RETURN_IF_ERROR(vm_->Qmp("blockdev-add", {{"driver", "nbd"},
                                                    {"node-name", TargetNode(i)},
                                                    {"server", server},
                                                    {"export", qemu::DiskNodeName(i)}})
                              .status()
                              .Annotate("QMP blockdev-add of the destination's NBD export " + qemu::DiskNodeName(i)));
    ++targets_;
    AGILE_RETURN_IF_ERROR(vm_->Qmp("blockdev-mirror", {{"job-id", JobId(i)},
                                                       {"device", qemu::DiskNodeName(i)},
                                                       {"target", TargetNode(i)},
                                                       {"sync", "full"},
                                                       // The job stays until we dismiss it, so its
                                                       // end is seen even between two polls.
                                                       {"auto-dismiss", false}})
                              .status()
                              .Annotate("QMP blockdev-mirror " + qemu::DiskNodeName(i)));
    ++started_;
  }
  return Status::Ok();
}

Result<json> DiskMirror::Jobs() {
  AGILE_ASSIGN_OR_RETURN(json jobs, vm_->Qmp("query-block-jobs"));
  if (!jobs.is_array()) return Internal("query-block-jobs: not a list");
  json ours = json::array();
  for (const auto& j : jobs)
    if (j.value("device", "").rfind("mirror-disk", 0) == 0) ours.push_back(j);
  return ours;
}

Status DiskMirror::WaitReady(const std::function<Status()>& check,
                             const std::function<void(uint64_t, uint64_t)>& progress, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    AGILE_RETURN_IF_ERROR(check());
    AGILE_ASSIGN_OR_RETURN(json jobs, Jobs());
    uint64_t done = 0, total = 0;
    size_t ready = 0;
    for (const auto& j : jobs) {
      std::string st = j.value("status", "");
      if (st == "concluded" || st == "aborting" || st == "null")
        return Internal("disk mirror " + j.value("device", "?") + " ended early" +
                        (j.contains("error") ? ": " + j["error"].get<std::string>() : ""));
      done += j.value("offset", 0ull);
      total += j.value("len", 0ull);
      if (j.value("ready", false)) ++ready;
    }
    if (jobs.size() != started_) return Internal("a disk mirror job disappeared");
    if (progress) progress(done, total);
    if (ready == started_) return Status::Ok();
    if (std::chrono::steady_clock::now() > end) return Unavailable("disk mirrors not ready in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
}

Status DiskMirror::WaitGone(int timeout_ms, bool ignore_errors) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    AGILE_ASSIGN_OR_RETURN(json jobs, Jobs());
    bool running = false;
    for (const auto& j : jobs) {
      std::string st = j.value("status", "");
      if (st != "concluded") {
        running = true;
        continue;
      }
      std::string id = j.value("device", "");
      if (j.contains("error") && !ignore_errors) {
        (void)vm_->Qmp("job-dismiss", {{"id", id}});
        return Internal("disk mirror " + id + " failed: " + j["error"].get<std::string>());
      }
      AGILE_RETURN_IF_ERROR(vm_->Qmp("job-dismiss", {{"id", id}}).status());
    }
    if (!running && jobs.empty()) return Status::Ok();
    if (std::chrono::steady_clock::now() > end) return Unavailable("disk mirrors did not finish in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Status DiskMirror::Complete(int timeout_ms) {
  // Cancelling a ready mirror without force completes it: the rest of its
  // dirty bitmap is copied and the target flushed; the source keeps its
  // own disk (no pivot). The guest is paused, so nothing is dirtied after.
  for (size_t i = 0; i < started_; ++i)
    AGILE_RETURN_IF_ERROR(vm_->Qmp("block-job-cancel", {{"device", JobId(i)}}).status().Annotate("QMP block-job-cancel"));
  AGILE_RETURN_IF_ERROR(WaitGone(timeout_ms, /*ignore_errors=*/false));
  started_ = 0;
  DeleteTargets();
  return Status::Ok();
}

void DiskMirror::Abort() {
  for (size_t i = 0; i < started_; ++i) (void)vm_->Qmp("block-job-cancel", {{"device", JobId(i)}, {"force", true}});
  if (started_ > 0) {
    Status s = WaitGone(10000, /*ignore_errors=*/true);
    if (!s.ok()) spdlog::warn("vm {}: cancelling disk mirrors: {}", vm_->spec().name, s.ToString());
  }
  started_ = 0;
  DeleteTargets();
}

void DiskMirror::DeleteTargets() {
  for (size_t i = 0; i < targets_; ++i) {
    auto r = vm_->Qmp("blockdev-del", {{"node-name", TargetNode(i)}});
    if (!r.ok()) spdlog::warn("vm {}: blockdev-del {}: {}", vm_->spec().name, TargetNode(i), r.status().ToString());
  }
  targets_ = 0;
}

Status ExportDisks(MigratingVm* vm, const std::string& host, uint16_t port, size_t disks) {
  json addr = {{"type", "inet"}, {"data", {{"host", host}, {"port", std::to_string(port)}}}};
  AGILE_RETURN_IF_ERROR(vm->Qmp("nbd-server-start", {{"addr", addr}}).status().Annotate("QMP nbd-server-start"));
  for (size_t i = 0; i < disks; ++i) {
    // Exporting activates the incoming QEMU's image for writing (QEMU does
    // that for exports: they exist for this kind of migration).
    AGILE_RETURN_IF_ERROR(vm->Qmp("block-export-add", {{"type", "nbd"},
                                                       {"id", qemu::DiskNodeName(i)},
                                                       {"node-name", qemu::DiskNodeName(i)},
                                                       {"writable", true}})
                              .status()
                              .Annotate("QMP block-export-add " + qemu::DiskNodeName(i)));
  }
  return Status::Ok();
}

Status StopDiskExports(MigratingVm* vm) {
  return vm->Qmp("nbd-server-stop").status().Annotate("QMP nbd-server-stop");
}

}  // namespace agile::migrate
