// The destination side of a migration: handles one connection that agiled's
// TCP listener recognised as the migration protocol. Launches the incoming
// QEMU, places every page as the source says, answers post-copy faults by
// asking the source, and resumes the VM at SWITCHOVER. Any failure before
// switchover removes the incoming VM; the source keeps the original.
#pragma once

#include <memory>
#include <thread>

#include "base/fd.h"
#include "base/timeouts.h"
#include "migrate/migrating_vm.h"
#include "migrate/migration_record.h"
#include "migrate/recovery_board.h"

namespace agile::migrate {

// Who sent the migration, as the connection established it.
struct MigrationPeer {
  std::string identity;          // the source's TLS certificate name; "" on a plain connection
  bool may_pass_qemu_args = false;  // authenticated, or a loopback link: raw QEMU arguments in the spec are accepted
  std::string store_addr;        // our swap store (--memd): the source's must be the same one
  std::string tls_dir;           // our --tls-dir: with an identity, QEMU's own stream is TLS too
  Timeouts timeouts;             // docs/timeouts.md
  // Post-copy recovery (RESUME connections find paused migrations here);
  // null: a lost link after switchover is not recoverable.
  RecoveryBoard* recovery = nullptr;
};

// Blocks until the migration ends (either way). A connection whose first
// frame is RESUME is handed to the paused migration it names (or refused)
// and this returns at once. `listen_host` is the address
// QEMU's incoming device-state socket binds to. With an identity, HELLO's
// source host must be it. Messages follow migrate/receiver_states.h.
void ReceiveMigration(UniqueFd conn, IncomingHost* host, const std::string& listen_host, const MigrationPeer& peer);

// After an agiled restart: carries on the incoming post-copy `rec` describes
// (migration.record, role destination) for `vm`, re-adopted with the pages
// then at the source as kRemote. Registers it on peer.recovery as paused
// before returning (call it before agiled serves, so no RESUME can come
// first), then the returned thread waits up to the recovery window for the
// source's RESUME and runs the migration to its end like any other. Join it
// after peer.recovery->Close().
std::thread ResumeIncomingAfterRestart(std::shared_ptr<MigratingVm> vm, const MigrationRecord& rec,
                                       IncomingHost* host, const MigrationPeer& peer);

}  // namespace agile::migrate
