// The destination side of a migration: handles one connection that agiled's
// TCP listener recognised as the migration protocol. Launches the incoming
// QEMU, places every page as the source says, answers post-copy faults by
// asking the source, and resumes the VM at SWITCHOVER. Any failure before
// switchover removes the incoming VM; the source keeps the original.
#pragma once

#include "base/fd.h"
#include "migrate/migrating_vm.h"

namespace agile::migrate {

// Blocks until the migration ends (either way). `listen_host` is the address
// QEMU's incoming device-state socket binds to.
void ReceiveMigration(UniqueFd conn, IncomingHost* host, const std::string& listen_host);

}  // namespace agile::migrate
