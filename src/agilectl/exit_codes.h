// agilectl's exit statuses and its JSON answer on failure: one table, used by
// main.cc, printed in `agilectl --help` and README.md ("Exit status").
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"

namespace agile::agilectl {

enum Exit : int {
  kExitOk = 0,
  kExitFailure = 1,          // anything else: agiled or a resource it needs failed
  kExitUsage = 2,            // the command line is wrong (unknown option, bad value)
  kExitUnreachable = 3,      // agiled could not be reached, or the connection broke
  kExitNotFound = 4,         // no such VM
  kExitRefused = 5,          // agiled refused the request: invalid, exists already, not now, unsupported
  kExitMigrationFailed = 6,  // a migration started and failed (where the VM runs is in the message)
  kExitCancelled = 7,        // a migration was cancelled (agilectl migrate --cancel)
};

// The table for --help and the README, one "  N  meaning" line each.
std::string ExitTable();

// Where a failure happened: agilectl itself (usage), the connection to agiled,
// or agiled's answer to operation `op`.
enum class Origin { kUsage, kConnection, kAgiled };

struct Failure {
  Origin origin;
  Status status;
  std::string op;            // "vm.migrate", ...; empty for usage errors
  nlohmann::json progress;   // vm.migrate: the last progress report agiled sent, if any
  nlohmann::json report;     // vm.migrate(_status): the failed migration's report (error.report), if any
};

// The ops whose "unavailable" answer means a migration that started and ended
// without completing (exit 6, or 7 when its report's status is "cancelled").
bool IsMigrationOp(const std::string& op);

int ExitCode(const Failure& f);
// {"status": "failed", "exit_code": N, "error": {"code": "...", "message": "..."}}, and for migrations
// the last progress agiled reported under "progress". A migration that started and failed also
// carries its report's fields (migrate/report.h) beside them, and "status" is the report's:
// "failed", or "cancelled".
nlohmann::json FailureJson(const Failure& f);

}  // namespace agile::agilectl
