// The migration receiver's state machine: which message may arrive in which
// phase of one incoming migration. Anything else (a second HELLO, PAGES
// after DONE, SWITCHOVER before LOCATIONS, a second SWITCHOVER) ends that
// migration with an error; other migrations and VMs are not touched.
//
//   kHello --HELLO--> kRounds (agile, precopy, postcopy) or kQemu (every qemu-* mode)
//   kRounds:    PAGES ROUND LOCATIONS ABORT;   LOCATIONS --> kLocations
//   kLocations: PAGES LOCATIONS SWITCHOVER ABORT;  SWITCHOVER --> kSwitched
//   kSwitched:  PAGES DONE ABORT, only when pages still come after switchover
//               (post-copy, agile's tail);     DONE --> kDone
//   kQemu:      ROUND DONE ABORT;              DONE --> kDone
//   kDone:      nothing
// Pure functions: thread-safe.
#pragma once

#include <cstdint>

#include "base/status.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

enum class RecvPhase { kHello, kRounds, kLocations, kSwitched, kQemu, kDone };
const char* RecvPhaseName(RecvPhase p);

// Ok when `msg` may arrive in `phase`; kCorruption naming both otherwise.
Status Admit(RecvPhase phase, uint16_t msg, bool pages_after_switchover);
// The phase after an admitted `msg` was handled.
RecvPhase After(RecvPhase phase, uint16_t msg, wire::MigMode mode);

}  // namespace agile::migrate
