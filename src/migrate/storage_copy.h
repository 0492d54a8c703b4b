// --copy-storage: a disk-backed VM's disks move with it to a destination
// that does not share them, the way libvirt's --copy-storage-all does it with
// stock QEMU. The destination creates an empty image per disk and its
// incoming QEMU exports them over NBD (nbd-server-start, block-export-add);
// the source's QEMU mirrors each disk into its export (blockdev-mirror,
// sync=full) while the guest runs, until every job is ready (the copies have
// caught up and follow each guest write). Once the VM is paused, the mirrors
// complete (block-job-cancel of a ready job: what is still dirty is copied,
// the target flushed, no pivot) before QEMU's device state moves, so the
// destination's disks are exactly the source's at the switchover. Before
// switchover a failure or cancel force-cancels the mirrors and the
// destination drops its copies; the source's disks were never changed.
//
// Both classes drive QEMU through MigratingVm::Qmp on the migration's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "migrate/migrating_vm.h"

namespace agile::migrate {

// The virtual size in bytes of each of the VM's disks (node "disk0", ...),
// from query-named-block-nodes.
Result<std::vector<uint64_t>> DiskSizes(MigratingVm* vm);

// Source side: the mirror jobs "mirror-disk<i>" into NBD nodes "nbd-disk<i>".
class DiskMirror {
 public:
  explicit DiskMirror(MigratingVm* vm) : vm_(vm) {}
  ~DiskMirror() { Abort(); }
  DiskMirror(const DiskMirror&) = delete;
  DiskMirror& operator=(const DiskMirror&) = delete;

  // Connects to the destination's exports and starts one mirror per disk.
  Status Start(const std::string& nbd_host, uint16_t nbd_port, size_t disks);
  // Polls until every job is ready. `check` runs each poll (cancel, peer
  // failure); `progress` sees bytes copied and to copy over all disks.
  Status WaitReady(const std::function<Status()>& check,
                   const std::function<void(uint64_t done, uint64_t total)>& progress, int timeout_ms);
  // The VM is paused: completes every job (target consistent and flushed)
  // and disconnects from the exports.
  Status Complete(int timeout_ms);
  // Before switchover, on failure: force-cancels what runs and disconnects.
  // Best effort, idempotent; a no-op after Complete.
  void Abort();
  bool active() const { return started_ > 0; }

 private:
  Result<nlohmann::json> Jobs();
  // Dismisses concluded jobs until none is left; a job's error is returned
  // unless ignore_errors (a forced cancel ends with one).
  Status WaitGone(int timeout_ms, bool ignore_errors);
  void DeleteTargets();

  MigratingVm* vm_;
  size_t disks_ = 0;
  size_t started_ = 0;   // mirror jobs started
  size_t targets_ = 0;   // NBD nodes added
};

// Destination side: exports the incoming VM's disks (nodes "disk<i>", as
// "disk<i>", writable) on host:port.
Status ExportDisks(MigratingVm* vm, const std::string& host, uint16_t port, size_t disks);
// Stops the NBD server and its exports (the source has disconnected).
Status StopDiskExports(MigratingVm* vm);

}  // namespace agile::migrate
