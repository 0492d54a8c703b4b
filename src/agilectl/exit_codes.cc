#include "agilectl/exit_codes.h"

namespace agile::agilectl {
using nlohmann::json;

std::string ExitTable() {
  return "  0  success\n"
         "  1  failure (agiled, or a resource it needs such as memd, failed the request)\n"
         "  2  usage: the command line is wrong\n"
         "  3  agiled unreachable (not running, wrong -H, or the connection broke)\n"
         "  4  not found (no such VM on that agiled)\n"
         "  5  refused: the request is invalid, exists already, or is unsupported there\n"
         "  6  migration failed (the message says where the VM runs now)\n"
         "  7  migration cancelled\n";
}

namespace {

bool IsCancel(const Failure& f) {
  // agiled's "unavailable" answer to a migration carries its report (error.report).
  return f.report.is_object() && f.report.value("status", "") == "cancelled";
}

const char* CodeString(const Failure& f) {
  switch (ExitCode(f)) {
    case kExitUsage: return "usage";
    case kExitUnreachable: return "unreachable";
    case kExitMigrationFailed: return "migration-failed";
    case kExitCancelled: return "cancelled";
    default: return CodeName(f.status.code());
  }
}

}  // namespace

bool IsMigrationOp(const std::string& op) { return op == "vm.migrate" || op == "vm.migrate_status"; }

int ExitCode(const Failure& f) {
  switch (f.origin) {
    case Origin::kUsage: return kExitUsage;
    case Origin::kConnection: return kExitUnreachable;
    case Origin::kAgiled: break;
  }
  switch (f.status.code()) {
    case Code::kOk: return kExitOk;
    case Code::kNotFound: return kExitNotFound;
    case Code::kInvalidArgument:
    case Code::kAlreadyExists:
    case Code::kPermissionDenied:
    case Code::kUnsupported: return kExitRefused;
    case Code::kUnavailable:
      // vm.migrate answers "unavailable" for every migration that started and
      // failed (api.cc); bad arguments and unknown VMs come back as above.
      if (IsMigrationOp(f.op)) return IsCancel(f) ? kExitCancelled : kExitMigrationFailed;
      return kExitFailure;
    default: return kExitFailure;
  }
}

json FailureJson(const Failure& f) {
  json j = f.report.is_object() ? f.report : json::object();
  j.update({{"status", IsCancel(f) ? "cancelled" : "failed"},
            {"exit_code", ExitCode(f)},
            {"error", {{"code", CodeString(f)}, {"message", f.status.message()}}}});
  if (f.origin == Origin::kAgiled) j["error"]["agiled_code"] = CodeName(f.status.code());
  if (!f.progress.is_null()) j["progress"] = f.progress;
  return j;
}

}  // namespace agile::agilectl
