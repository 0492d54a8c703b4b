// The control API's operations, mapped onto the VmManager. Each op validates
// its arguments fully before changing anything.
//
// Migrations are jobs agiled owns: vm.migrate starts the Sender on a thread of
// its own (one job per VM at a time), then streams the job's progress to the
// caller until it ends (or returns at once with "detach"). The caller going
// away does not cancel it; vm.migrate_status reads (or watches) the job from
// any connection, vm.migrate_cancel cancels it. The last job of each VM name
// stays readable after it ends.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "control/control_server.h"
#include "host/pressure_policy.h"
#include "host/vm_manager.h"
#include "metrics/metrics.h"
#include "migrate/migration_record.h"
#include "migrate/sender.h"

namespace agile::agiled {

using host::ManagedVm;
using host::PressurePolicy;
using host::VmManager;

class Api {
 public:
  Api(VmManager* vms, PressurePolicy* policy, std::function<void()> request_shutdown)
      : vms_(vms), policy_(policy), request_shutdown_(std::move(request_shutdown)) {}
  // Cancels running migrations (effective before their switchover) and waits for them.
  ~Api();
  // Asks every running migration to end (before its switchover, or while it
  // waits for a lost post-copy link: docs/migration.md), so that callers
  // following them return; agiled calls it before it stops serving.
  void CancelAll();
  // Called on a control connection's thread; any number at once.
  // caller: who asked (raw QEMU arguments only from the local unix socket).
  control::Reply Handle(const std::string& op, const nlohmann::json& args,
                        const std::function<void(const nlohmann::json&)>& progress = nullptr,
                        const control::Caller& caller = control::Caller{true, ""});
  // Migrations since start, by mode and outcome, with durations and bytes (metrics).
  void CollectMetrics(metrics::Scrape* s);
  // At start-up, before serving: the post-copy an earlier agiled of this
  // state dir was the source of when it died (`rec`, migration.record) goes
  // on as a job of `vm` (migrate status, --recover and --cancel find it):
  // re-dial the destination with RESUME, push what it lacks.
  Status ResumeMigration(const std::shared_ptr<ManagedVm>& vm, const migrate::MigrationRecord& rec);

 private:
  // One migration of one VM. Written by its thread, read by any control thread.
  struct Job {
    std::string name;
    std::weak_ptr<ManagedVm> vm;  // for cancelling at shutdown
    std::mutex mu;
    std::condition_variable cv;
    nlohmann::json progress;  // the latest progress (report.h's vocabulary)
    nlohmann::json report;    // the final report; null while it runs
    uint64_t seq = 0;         // progress reports so far
    // `migrate --recover` (post-copy recovery): a reconnect asked for, to
    // this address ("" = the same one); taken by the Sender.
    std::optional<std::string> recover_to;
    std::thread thread;
  };
  Result<nlohmann::json> HandleVmOp(const std::string& op, const nlohmann::json& args);
  // `vm stop` of a VM whose migration job still runs: cancels the job and
  // waits (bounded) for it to end before the VM goes.
  void EndJobOfStoppedVm(const std::string& name);
  Result<nlohmann::json> Attach(const nlohmann::json& args);
  control::Reply Migrate(const std::shared_ptr<ManagedVm>& vm, const nlohmann::json& args,
                         const std::function<void(const nlohmann::json&)>& progress);
  // Registers a migration job of `vm` (AlreadyExists while one runs) and
  // starts `run` on a Sender made with `o` on the job's thread.
  Result<std::shared_ptr<Job>> StartJob(const std::shared_ptr<ManagedVm>& vm, migrate::SendOptions o,
                                        std::function<migrate::Report(migrate::Sender&)> run);
  // vm.migrate_recover: asks a migration paused after a lost post-copy link
  // to reconnect now; waits for that attempt's outcome.
  control::Reply MigrateRecover(const std::string& name, const nlohmann::json& args);
  // vm.migrate_cancel: cancels a migration before its commit point; refused
  // after it (post-copy running or paused: the destination runs the VM).
  Result<nlohmann::json> MigrateCancel(const std::string& name, ManagedVm* vm);
  control::Reply MigrateStatus(const std::string& name, bool watch,
                               const std::function<void(const nlohmann::json&)>& progress);
  // Streams the job's progress to `progress` until it ends; returns its report.
  static nlohmann::json Follow(Job* job, const std::function<void(const nlohmann::json&)>& progress);
  // The final answer for a report: the report, or an error carrying it.
  control::Reply Outcome(const nlohmann::json& report);
  // The VM's migration job here (running, or its last one), or null.
  std::shared_ptr<Job> FindJob(const std::string& name);

  VmManager* vms_;
  PressurePolicy* policy_;
  std::function<void()> request_shutdown_;
  std::mutex jobs_mu_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // by VM name: running, or the last one
  // Ended migrations, for metrics: by mode, then outcome (completed, failed, cancelled).
  struct ModeTotals {
    std::map<std::string, uint64_t> outcomes;
    std::vector<uint64_t> duration_counts, downtime_counts;  // per bucket of kDurationBounds / kDowntimeBounds
    double duration_sum_s = 0, downtime_sum_s = 0;
    uint64_t transferred_bytes = 0;
  };
  std::map<std::string, ModeTotals> totals_;  // guarded by jobs_mu_
  void Record(const nlohmann::json& report);
};

}  // namespace agile::agiled
