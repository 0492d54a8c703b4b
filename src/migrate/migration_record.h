// What a restarted agiled needs to carry on a migration that had passed its
// commit point (SWITCHOVER) while pages still came from the source after it
// (post-copy, agile's post-copy tail): STATE_DIR/vms/NAME/migration.record,
// one per VM and side. docs/invariants.md ("A migration in flight when
// agiled dies") says when each side writes and removes it.
//
//   source:      written right before SWITCHOVER leaves; tells a restarted
//                agiled to keep the VM paused and fenced and to re-dial the
//                destination with RESUME (same migration id) until the rest
//                of the pages are across, as after a lost link.
//   destination: written at SWITCHOVER, before the VM may run here; holds
//                the pages still at the source then (`remote`). The RAM
//                file alone cannot tell them: a page the source listed as
//                zero is a hole as well. With it a restarted agiled adopts
//                the VM with those holes kRemote (vCPUs wait, never zeros)
//                and waits for the source's RESUME.
//
// File format (this header and migration_record.cc only):
//   "AGMIGRC1 " <XXH3-64 of the body, 16 hex digits> " " <body length> "\n" <body: JSON>
// Written like vm.record: to migration.record.tmp, fsync, rename, fsync the
// folder; a reader sees the old record or the new, a damaged one (magic,
// length, checksum, JSON, fields) is Corruption. Not thread-safe per file:
// one writer (the migration of that VM) at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

struct MigrationRecord {
  enum class Role { kSource, kDestination };
  std::string vm;
  Role role = Role::kSource;
  wire::MigMode mode = wire::MigMode::kPostcopy;
  uint64_t id_lo = 0, id_hi = 0;  // HELLO's random migration id (RESUME names it)
  std::string peer_host;          // the other agiled's id (source: the VM's new owner; destination: HELLO's source)
  std::string peer_addr;          // source: the destination's HOST:PORT; destination: ""
  bool tail = false;              // agile's post-copy tail (not post-copy mode)
  bool lease = false;             // source: the swap-store namespace moved with the VM (the fence asks memd)
  uint64_t bandwidth = 0;         // source: the operator's --bandwidth (bytes/s, 0 = none), kept after a restart
  // source: false once the migration failed after switchover (window over,
  // a cancel): a restart keeps the VM fenced but dials nobody.
  bool recover = true;
  std::string store_vm_id;        // destination: HELLO's store namespace ("" without one)
  uint64_t pages = 0;             // guest pages
  std::vector<uint8_t> remote;    // destination: one byte per page, 1 = at the source at switchover
  // destination: SWITCHOVER asked for the VM to run here (the source ran
  // it). A restart may come before `cont`: then the guest is resumed once
  // the last page has arrived. source: the VM ran when it was paused for
  // the switchover (resumed here only then, should it come back).
  bool resume = false;
};

inline constexpr char kMigrationRecordFile[] = "migration.record";

std::string EncodeMigrationRecord(const MigrationRecord& r);
Result<MigrationRecord> DecodeMigrationRecord(const std::string& bytes);

// Crash-consistent replace of DIR/NAME (migration.record unless named
// otherwise: the recovery board keeps its records in the same format).
Status WriteMigrationRecord(const std::string& dir, const MigrationRecord& r,
                            const std::string& name = kMigrationRecordFile);
// NotFound when there is none; Corruption when it is damaged.
Result<MigrationRecord> ReadMigrationRecord(const std::string& dir, const std::string& name = kMigrationRecordFile);
// Idempotent; the folder is synced so the removal outlives a crash.
Status RemoveMigrationRecord(const std::string& dir, const std::string& name = kMigrationRecordFile);

}  // namespace agile::migrate
