// The stock baselines (qemu-precopy, qemu-postcopy, qemu-precopy-tuned,
// qemu-hybrid): QEMU moves all of guest RAM itself over its own connection
// and agiled only drives it over QMP, keeping its own migration connection
// alive meanwhile.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/status.h"
#include "migrate/channel.h"
#include "migrate/migrating_vm.h"
#include "migrate/report.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

class QemuMigration {
 public:
  struct Options {
    wire::MigMode mode = wire::MigMode::kQemuPrecopy;  // one of the qemu-* modes
    uint64_t max_downtime_ms = 300;
    uint64_t bandwidth = 0;       // bytes/s; 0 = unlimited
    // Before the guest switched: QEMU's stream moving no byte for this long
    // fails the migration (a partition; QEMU itself would wait for ever).
    int stall_ms = 15000;
    // `migrate --cancel`: ends the wait before the guest switched.
    std::function<bool()> interrupted;
    // qemu-postcopy, qemu-hybrid: called right before QEMU is asked to switch
    // to post-copy (their commit point), so that whoever answers cancels
    // can refuse from then on. A cancel that `interrupted` reports after
    // this call returned was asked before it, and is still obeyed: QEMU is
    // then not asked to switch.
    std::function<void()> committing;
    // After the switch to post-copy (qemu-postcopy, qemu-hybrid), when the
    // job gives up on QEMU's own outcome: its status staying postcopy-paused
    // for stall_ms, or its stream moving no byte for this long in any status
    // (QEMU 7.2 can hang its completion in postcopy-active when the
    // destination QEMU dies: soak seed 7, run 167 of session 9).
    int post_stall_ms = 120000;
  };
  // ch: agiled's own connection to the destination (keepalives only).
  QemuMigration(MigratingVm* vm, Channel* ch, Options opt) : vm_(vm), ch_(ch), opt_(opt) {}

  // Migrates to QEMU's incoming side at `uri` until QEMU reports completion.
  // Fills the report's timings and counters (switchover_ms relative to
  // t0_ns). *switched: the guest runs at the destination now - also when
  // post-copy had started before a failure, as nothing is left to resume
  // here. progress(round) runs with each keepalive.
  Status Run(const std::string& uri, uint64_t t0_ns, Report* report, bool* switched,
             const std::function<void(uint32_t round)>& progress);

 private:
  MigratingVm* vm_;
  Channel* ch_;
  Options opt_;
};

}  // namespace agile::migrate
