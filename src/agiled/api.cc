#include "agiled/api.h"

#include <algorithm>
#include <chrono>
#include <set>

#include <spdlog/spdlog.h>

#include "base/size.h"
#include "base/socket.h"
#include "migrate/report.h"
#include "migrate/sender.h"

namespace agile::agiled {
using nlohmann::json;

namespace {

Result<std::string> NameArg(const json& args) {
  if (!args.contains("name") || !args["name"].is_string()) return InvalidArgument("missing \"name\"");
  return args["name"].get<std::string>();
}

// An optional non-negative integer argument. Never through json::value<int>():
// a float there (1e80) converts with undefined behaviour.
Result<uint64_t> UintArg(const json& args, const char* key, uint64_t def) {
  if (!args.is_object()) return def;
  auto it = args.find(key);
  if (it == args.end()) return def;
  if (!it->is_number_unsigned()) return InvalidArgument(std::string(key) + " must be a non-negative integer");
  return it->get<uint64_t>();
}

}  // namespace

namespace {
// Histogram buckets: whole migrations (s), and downtimes (s).
const std::vector<double> kDurationBounds = {0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600};
const std::vector<double> kDowntimeBounds = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void AddTo(std::vector<uint64_t>* counts, const std::vector<double>& bounds, double v) {
  counts->resize(bounds.size() + 1);
  size_t b = 0;
  while (b < bounds.size() && bounds[b] < v) ++b;
  ++(*counts)[b];
}
}  // namespace

void Api::Record(const json& report) {
  std::lock_guard<std::mutex> l(jobs_mu_);
  ModeTotals& t = totals_[report.value("mode", "")];
  const std::string status = report.value("status", "");
  ++t.outcomes[status];
  const double secs = report.value("total-time", 0.0) / 1e3;
  AddTo(&t.duration_counts, kDurationBounds, secs);
  t.duration_sum_s += secs;
  if (status == migrate::kStatusCompleted) {
    const double down = report.value("downtime", 0.0) / 1e3;
    AddTo(&t.downtime_counts, kDowntimeBounds, down);
    t.downtime_sum_s += down;
  }
  t.transferred_bytes += report.contains("ram") ? report["ram"].value("transferred", 0ull) : 0;
}

void Api::CollectMetrics(metrics::Scrape* s) {
  std::lock_guard<std::mutex> l(jobs_mu_);
  for (const auto& [mode, t] : totals_) {
    for (const char* outcome : {migrate::kStatusCompleted, migrate::kStatusFailed, migrate::kStatusCancelled}) {
      auto it = t.outcomes.find(outcome);
      s->Counter("agile_migrations_total", "Outgoing migrations that ended, by mode and outcome",
                 {{"mode", mode}, {"outcome", outcome}}, it == t.outcomes.end() ? 0 : it->second);
    }
    s->Histogram("agile_migration_duration_seconds", "Outgoing migrations' total time (start until the end)",
                 {{"mode", mode}}, kDurationBounds, t.duration_counts, t.duration_sum_s);
    s->Histogram("agile_migration_downtime_seconds", "Completed migrations' downtime (paused until running there)",
                 {{"mode", mode}}, kDowntimeBounds, t.downtime_counts, t.downtime_sum_s);
    s->Counter("agile_migration_transferred_bytes_total", "Bytes outgoing migrations sent (ram.transferred)",
               {{"mode", mode}}, static_cast<double>(t.transferred_bytes));
  }
  uint64_t running = 0;
  for (const auto& [name, job] : jobs_) {
    std::lock_guard<std::mutex> jl(job->mu);
    if (job->report.is_null()) ++running;
  }
  s->Gauge("agile_migrations_running", "Outgoing migrations in progress", {}, static_cast<double>(running));
}

Api::~Api() {
  std::map<std::string, std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> l(jobs_mu_);
    jobs.swap(jobs_);
  }
  for (auto& [name, job] : jobs) {
    if (auto vm = job->vm.lock()) vm->migration_cancel() = true;
  }
  for (auto& [name, job] : jobs)
    if (job->thread.joinable()) job->thread.join();
}

void Api::CancelAll() {
  std::lock_guard<std::mutex> l(jobs_mu_);
  for (auto& [name, job] : jobs_)
    if (auto vm = job->vm.lock()) vm->migration_cancel() = true;
}

json Api::Follow(Job* job, const std::function<void(const json&)>& progress) {
  std::unique_lock<std::mutex> l(job->mu);
  uint64_t seen = 0;
  for (;;) {
    if (!job->report.is_null()) return job->report;
    if (job->seq != seen) {
      seen = job->seq;
      json p = job->progress;
      l.unlock();
      if (progress) progress(p);  // to a client that left: lost, and the job goes on
      l.lock();
      continue;
    }
    job->cv.wait(l);
  }
}

control::Reply Api::Outcome(const json& report) {
  if (report.value("status", "") == migrate::kStatusCompleted) return Result<json>(report);
  return control::Reply(Status(Code::kUnavailable, report.value("error", std::string("migration failed"))),
                        json{{"report", report}});
}

control::Reply Api::Migrate(const std::shared_ptr<ManagedVm>& vm, const json& args,
                            const std::function<void(const json&)>& progress) {
  migrate::SendOptions o;
  if (!args.contains("to") || !args["to"].is_string()) return InvalidArgument("vm.migrate needs \"to\": HOST:PORT");
  o.to = args["to"];
  AGILE_ASSIGN_OR_RETURN(o.mode, wire::ParseMigMode(args.value("mode", std::string("agile"))));
  AGILE_ASSIGN_OR_RETURN(o.max_downtime_ms, UintArg(args, "max_downtime_ms", 300));
  AGILE_ASSIGN_OR_RETURN(o.bandwidth, UintArg(args, "bandwidth", 0));
  AGILE_ASSIGN_OR_RETURN(uint64_t rounds, UintArg(args, "max_rounds", 30));
  if (rounds < 1 || rounds > 1000) return InvalidArgument("max_rounds must be 1..1000");
  o.max_rounds = static_cast<decltype(o.max_rounds)>(rounds);
  if (args.contains("postcopy_tail") && !args["postcopy_tail"].is_boolean())
    return InvalidArgument("postcopy_tail must be true or false");
  o.postcopy_tail = args.value("postcopy_tail", true);
  if (args.contains("copy_storage") && !args["copy_storage"].is_boolean())
    return InvalidArgument("copy_storage must be true or false");
  o.copy_storage = args.value("copy_storage", false);
  if (args.contains("detach") && !args["detach"].is_boolean()) return InvalidArgument("detach must be true or false");
  const bool detach = args.value("detach", false);
  AGILE_ASSIGN_OR_RETURN(auto job, StartJob(vm, std::move(o), [](migrate::Sender& s) { return s.Run(); }));
  if (detach) {
    std::lock_guard<std::mutex> l(job->mu);
    json p = job->progress;
    p["name"] = vm->spec().name;
    p["running"] = true;
    p["detached"] = true;
    return Result<json>(p);
  }
  return Outcome(Follow(job.get(), progress));
}

Status Api::ResumeMigration(const std::shared_ptr<ManagedVm>& vm, const migrate::MigrationRecord& rec) {
  migrate::SendOptions o;
  o.to = rec.peer_addr;
  o.mode = rec.mode;
  o.bandwidth = rec.bandwidth;  // the operator's cap outlives the restart
  return StartJob(vm, std::move(o), [rec](migrate::Sender& s) { return s.ResumeAfterRestart(rec); }).status();
}

Result<std::shared_ptr<Api::Job>> Api::StartJob(const std::shared_ptr<ManagedVm>& vm, migrate::SendOptions o,
                                                std::function<migrate::Report(migrate::Sender&)> run) {
  const std::string name = vm->spec().name;
  auto job = std::make_shared<Job>();
  job->name = name;
  job->vm = vm;
  {
    std::lock_guard<std::mutex> l(jobs_mu_);
    auto it = jobs_.find(name);
    if (it != jobs_.end()) {
      std::lock_guard<std::mutex> jl(it->second->mu);
      if (it->second->report.is_null())
        return AlreadyExists("vm " + name + " is migrating already (agilectl migrate status " + name + ")");
    }
    if (it != jobs_.end() && it->second->thread.joinable()) it->second->thread.join();  // ended: joins at once
    vm->migration_cancel() = false;
    o.cancel = &vm->migration_cancel();
    o.tls = vms_->host().tls;
    o.timeouts = vms_->host().timeouts;
    o.recover_requested = [j = job.get()]() -> std::optional<std::string> {
      std::lock_guard<std::mutex> l(j->mu);
      auto r = std::move(j->recover_to);
      j->recover_to.reset();
      return r;
    };
    o.progress = [j = job.get()](const json& p) {
      std::lock_guard<std::mutex> l(j->mu);
      j->progress = p;
      ++j->seq;
      j->cv.notify_all();
    };
    job->progress = {{"status", migrate::kStatusSetup}, {"vm", name}, {"destination", o.to}};
    jobs_[name] = job;
    // The job's thread holds the VM (and the job) until the migration ends.
    job->thread = std::thread([this, vm, j = job.get(), o = std::move(o), run = std::move(run)]() mutable {
      migrate::Sender sender(vm.get(), vms_->host().id, std::move(o));
      migrate::Report r = run(sender);
      if (r.ok) {
        vms_->Forget(j->name);
      } else {
        auto st = vm->state();
        if (vm->fenced()) r.error += " (the VM stays paused on this host, fenced: see `vm stat`)";
        else r.error += st == "running" ? " (the VM keeps running on this host)"
                                        : " (the VM is " + st + " on this host; see agiled's log)";
      }
      json report = r.ToJson();
      Record(report);
      std::lock_guard<std::mutex> l(j->mu);
      j->report = std::move(report);
      j->cv.notify_all();
    });
  }
  return job;
}

void Api::EndJobOfStoppedVm(const std::string& name) {
  // A migration job outlived `vm stop` (soak run 182: a source paused in
  // post-copy recovery went on re-dialing for minutes, and a new VM of the
  // same name found `migrate status` and `--recover` answering for that
  // job). Stopping the VM is the operator giving up this copy: its job
  // ends first, as at agiled's stop (nothing else is freed on either side).
  auto job = FindJob(name);
  if (job == nullptr) return;
  std::unique_lock<std::mutex> l(job->mu);
  if (!job->report.is_null()) return;
  auto vm = job->vm.lock();
  if (vm == nullptr) return;
  spdlog::warn("vm {}: stopped while its migration job runs (status {}): the job ends first", name,
               job->progress.value("status", std::string("?")));
  vm->migration_cancel() = true;
  // A recovery wait sees the flag within a slice; a send in flight within
  // its I/O timeout. Past that the VM is stopped under the job all the same.
  if (!job->cv.wait_for(l, std::chrono::milliseconds(vms_->host().timeouts.migrate_io_ms + 2000),
                        [&] { return !job->report.is_null(); }))
    spdlog::warn("vm {}: its migration job has not ended yet; stopping the VM under it", name);
}

std::shared_ptr<Api::Job> Api::FindJob(const std::string& name) {
  std::lock_guard<std::mutex> l(jobs_mu_);
  auto it = jobs_.find(name);
  return it == jobs_.end() ? nullptr : it->second;
}

control::Reply Api::MigrateRecover(const std::string& name, const json& args) {
  std::string to;
  if (args.contains("to")) {
    if (!args["to"].is_string() || !ParseHostPort(args["to"].get<std::string>()).ok())
      return InvalidArgument("vm.migrate_recover: \"to\" must be HOST:PORT");
    to = args["to"];
  }
  std::shared_ptr<Job> job = FindJob(name);
  if (!job) {
    auto vm = vms_->Get(name);
    if (vm.ok() && (*vm)->Stat().contains("migration"))
      return InvalidArgument("vm " + name + " is the destination of its migration here: run `agilectl migrate "
                                "--recover " + name + "` at the source agiled, which re-dials this one");
    return NotFound("no migration of a VM named '" + name + "' on this agiled");
  }
  std::unique_lock<std::mutex> l(job->mu);
  if (!job->report.is_null())
    return InvalidArgument("the migration of " + name + " has ended (" + job->report.value("status", "") +
                              "): nothing to recover");
  if (job->progress.value("status", "") != migrate::kStatusPostcopyPaused)
    return InvalidArgument("the migration of " + name + " is not paused for recovery (status " +
                              job->progress.value("status", "") + ")");
  const uint64_t attempts = job->progress.value("recovery", json::object()).value("attempts", 0ull);
  job->recover_to = to;
  // The attempt's outcome: the migration runs on, or the attempt count grew
  // (with its error). Bounded: one dial plus one peer wait.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(vms_->host().timeouts.migrate_peer_ms +
                                                                                 vms_->host().timeouts.migrate_io_ms);
  bool moved = job->cv.wait_until(l, until, [&] {
    return !job->report.is_null() || job->progress.value("status", "") != migrate::kStatusPostcopyPaused ||
           job->progress.value("recovery", json::object()).value("attempts", 0ull) > attempts;
  });
  json p = job->report.is_null() ? job->progress : job->report;
  p["name"] = name;
  if (!moved) return Unavailable("the recovery attempt of " + name + " did not finish in time; see `agilectl migrate status " + name + "`");
  if (p.value("status", "") == migrate::kStatusPostcopyPaused)
    return control::Reply(Unavailable("recovery of " + name + " failed: " +
                                      p["recovery"].value("last-error", std::string("?")) +
                                      " (still paused; both sides keep their state)"),
                          json{{"report", p}});
  p["recovered"] = p.value("status", "") != migrate::kStatusFailed;
  return Result<json>(p);
}

Result<json> Api::MigrateCancel(const std::string& name, ManagedVm* vm) {
  std::shared_ptr<Job> job = FindJob(name);
  if (!job) {
    if (vm->Stat().contains("migration"))
      return InvalidArgument("vm " + name + " is the destination of its migration here: a migration is cancelled at "
                             "its source (`agilectl migrate --cancel " + name + "` there), before its commit point");
    vm->migration_cancel() = true;  // nothing runs: the next migration starts with it cleared
    return json{{"name", name}, {"cancel_requested", true}};
  }
  // Under the job's lock: the status read is the one the flag is set against.
  std::lock_guard<std::mutex> l(job->mu);
  const std::string status = job->report.is_null() ? job->progress.value("status", "") : "";
  // After the commit point the VM runs at the destination and the pages it
  // still lacks exist only here: giving up would strand both copies (neither
  // complete), so the migration goes on, or stays paused for recovery
  // (docs/migration.md, "Post-copy recovery"). agiled stopping still ends it.
  if (status == migrate::kStatusPostcopyActive && job->progress.value("phase", "") == "qemu-postcopy")
    return InvalidArgument("the migration of " + name + " is past its commit point: QEMU was asked to switch to " +
                           "post-copy (" + job->progress.value("mode", std::string("qemu-postcopy")) +
                           "), and cancelling QEMU's post-copy breaks the guest at both ends; it completes by itself");
  if (status == migrate::kStatusPostcopyActive || status == migrate::kStatusPostcopyPaused)
    return InvalidArgument(
        "the migration of " + name + " is past its commit point (" + status + "): the VM runs at " +
        job->progress.value("destination", std::string("the destination")) +
        " and the pages it still lacks are only here, so it cannot be cancelled; " +
        (status == migrate::kStatusPostcopyPaused
             ? "it stays paused for recovery: `agilectl migrate --recover " + name +
                   " [--to HOST:PORT]`, or it fails by itself at the end of the recovery window, freeing nothing"
             : std::string("it completes once the last page has arrived")));
  vm->migration_cancel() = true;
  return json{{"name", name}, {"cancel_requested", true}};
}

control::Reply Api::MigrateStatus(const std::string& name, bool watch,
                                  const std::function<void(const json&)>& progress) {
  std::shared_ptr<Job> job = FindJob(name);
  if (!job) {
    // The destination of a migration: no job here, but the incoming VM
    // shows where it stands (post-copy, or paused for recovery).
    auto vm = vms_->Get(name);
    if (vm.ok()) {
      json st = (*vm)->Stat();
      if (st.contains("migration") && st["migration"].is_object()) {
        json j = st["migration"];
        j["name"] = name;
        j["running"] = true;
        if (!j.contains("direction")) j["direction"] = "incoming";
        return Result<json>(j);
      }
    }
    return NotFound("no migration of a VM named '" + name + "' on this agiled");
  }
  if (watch) return Outcome(Follow(job.get(), progress));
  std::lock_guard<std::mutex> l(job->mu);
  const bool running = job->report.is_null();
  json j = running ? job->progress : job->report;
  j["name"] = name;
  j["running"] = running;
  return Result<json>(j);
}

control::Reply Api::Handle(const std::string& op, const json& args, const std::function<void(const json&)>& progress,
                           const control::Caller& caller) {
  // QEMU's command line is root's to extend: not over TCP, even authenticated.
  if (!caller.local && args.is_object() && args.contains("qemu_args") &&
      !(args["qemu_args"].is_array() && args["qemu_args"].empty()))
    return PermissionDenied("qemu_args (raw QEMU arguments) are accepted only on the local unix socket, not from " +
                            caller.Describe());
  // Disks are host files and tap/bridge NICs host interfaces: a disk could
  // name any file agiled (root) can read, so they are root's too.
  for (const char* key : {"disks", "nics"})
    if (!caller.local && args.is_object() && args.contains(key) && !(args[key].is_array() && args[key].empty()))
      return PermissionDenied(std::string(key) + " (host files and interfaces) are accepted only on the local unix socket, not from " +
                              caller.Describe());
  if (op == "vm.attach") {
    // A process id and host files: root's, on this machine only.
    if (!caller.local) return PermissionDenied("vm.attach (libvirt's agile-qemu wrapper) is accepted only on the local unix socket");
    return Attach(args);
  }
  if (op == "vm.migrate_recover") {
    AGILE_ASSIGN_OR_RETURN(std::string name, NameArg(args));
    return MigrateRecover(name, args);
  }
  if (op == "vm.migrate" || op == "vm.migrate_status") {
    AGILE_ASSIGN_OR_RETURN(std::string name, NameArg(args));
    if (op == "vm.migrate_status") {
      if (args.contains("watch") && !args["watch"].is_boolean()) return InvalidArgument("watch must be true or false");
      return MigrateStatus(name, args.value("watch", false), progress);
    }
    AGILE_ASSIGN_OR_RETURN(auto vm, vms_->Get(name));
    if (vm->state() == "lost") return Unavailable("vm " + name + " is lost (" + vm->Stat().value("exit", "") + ")");
    if (vm->spec().libvirt)
      return Unsupported("vm " + name + " was started by libvirt: migrating libvirt domains under agiled is not "
                         "supported yet (docs/libvirt.md)");
    return Migrate(vm, args, progress);
  }
  return HandleVmOp(op, args);
}

// vm.attach: libvirt's agile-qemu wrapper, before it execs QEMU
// (docs/libvirt.md). Answers where QEMU's RAM, shim socket and QMP go.
Result<json> Api::Attach(const json& args) {
  if (!args.is_object()) return InvalidArgument("vm.attach needs an object");
  AGILE_ASSIGN_OR_RETURN(std::string name, NameArg(args));
  AGILE_ASSIGN_OR_RETURN(uint64_t memory, UintArg(args, "memory_bytes", 0));
  AGILE_ASSIGN_OR_RETURN(uint64_t vcpus, UintArg(args, "vcpus", 1));
  AGILE_ASSIGN_OR_RETURN(uint64_t pid, UintArg(args, "pid", 0));
  if (pid == 0 || pid > 0x7fffffff) return InvalidArgument("vm.attach needs \"pid\": the process that execs QEMU");
  qemu::VmSpec spec;
  spec.name = name;
  spec.memory_bytes = memory;
  spec.vcpus = static_cast<int>(std::min<uint64_t>(vcpus, 1u << 20));
  spec.workload = "none";  // the domain's own business; status lines on its console are still read
  spec.libvirt = true;
  host::ManagedVm::AttachInfo info;
  info.pid = static_cast<pid_t>(pid);
  for (const char* key : {"serial_log", "qemu_log"})
    if (args.contains(key) && !args[key].is_string()) return InvalidArgument(std::string(key) + " must be a path");
  info.serial_log = args.value("serial_log", std::string());
  info.qemu_log = args.value("qemu_log", std::string());
  AGILE_ASSIGN_OR_RETURN(auto paths, vms_->Attach(spec, info));
  return json{{"name", name},
              {"ram_path", paths.ram_path},
              {"shim_socket", paths.shim_socket},
              {"qmp_socket", paths.qmp_socket},
              {"shim_path", paths.shim_path}};
}

Result<json> Api::HandleVmOp(const std::string& op, const json& args) {
  if (op == "host.info") {
    const auto& h = vms_->host();
    return json{{"id", h.id},
                {"state_dir", h.state_dir},
                {"shm_root", h.shm_root},
                {"vms", vms_->List().size()},
                {"memd", h.memd_addr},
                {"pressure", policy_->HostStatus()}};
  }
  if (op == "host.shutdown") {
    request_shutdown_();
    return json{{"shutting_down", true}};
  }
  if (op == "vm.start") {
    AGILE_ASSIGN_OR_RETURN(qemu::VmSpec spec, qemu::VmSpec::FromJson(args));
    if (spec.libvirt) return InvalidArgument("libvirt VMs are started by libvirt (agile-qemu calls vm.attach)");
    AGILE_ASSIGN_OR_RETURN(auto vm, vms_->Start(spec));
    return vm->Stat();
  }
  if (op == "vm.list") {
    json out = json::array();
    for (auto& vm : vms_->List()) {
      json s = vm->Stat();
      out.push_back({{"name", s["name"]},
                     {"state", s["state"]},
                     {"memory_bytes", s["memory_bytes"]},
                     {"workload", s["workload"]},
                     {"resident_pages", s.contains("pages") ? s["pages"].value("resident", 0) : 0}});
    }
    return out;
  }
  static const std::set<std::string> kVmOps = {"vm.stop",    "vm.stat",    "vm.console",
                                               "vm.offload", "vm.migrate_cancel",
                                               "vm.pause",   "vm.resume",        "vm.wss",
                                               "vm.policy"};
  if (!kVmOps.count(op))
    return InvalidArgument("unknown op '" + op +
                           "' (host.info, host.shutdown, vm.start, vm.attach, vm.list, vm.stat, vm.console, vm.offload, "
                           "vm.migrate, vm.migrate_status, vm.migrate_cancel, vm.migrate_recover, vm.pause, vm.resume, vm.wss, vm.policy, vm.stop)");
  AGILE_ASSIGN_OR_RETURN(std::string name, NameArg(args));
  if (op == "vm.stop") {
    EndJobOfStoppedVm(name);
    AGILE_RETURN_IF_ERROR(vms_->Stop(name));
    return json{{"name", name}, {"state", "stopped"}};
  }
  AGILE_ASSIGN_OR_RETURN(auto vm, vms_->Get(name));
  if (op == "vm.console") {
    AGILE_ASSIGN_OR_RETURN(uint64_t lines, UintArg(args, "lines", 40));
    AGILE_ASSIGN_OR_RETURN(std::string text, vm->Console(static_cast<int>(std::min<uint64_t>(lines, 1u << 30))));
    return json{{"name", name}, {"text", text}};
  }
  if (op == "vm.wss") {
    json w = vm->WorkingSet();
    if (w.empty()) return Unsupported("vm " + name + " has no working-set tracking (stock VM, or a kernel without PAGEMAP_SCAN)");
    w["name"] = name;
    w["resident_bytes"] = vm->ResidentBytes();
    w["policy"] = policy_->VmStatus(name);
    return w;
  }
  if (op == "vm.policy") {
    if (args.contains("mode")) {
      AGILE_ASSIGN_OR_RETURN(uint64_t pin, UintArg(args, "pin_bytes", 0));
      AGILE_RETURN_IF_ERROR(policy_->Set(name, args["mode"].get<std::string>(), pin));
    }
    json p = policy_->VmStatus(name);
    p["name"] = name;
    return p;
  }
  if (op == "vm.pause") {
    AGILE_RETURN_IF_ERROR(vm->Qmp("stop").status());
    return vm->Stat();
  }
  if (op == "vm.resume") {
    if (args.contains("force") && !args["force"].is_boolean()) return InvalidArgument("force must be true or false");
    AGILE_RETURN_IF_ERROR(vm->Resume(args.value("force", false)));
    return vm->Stat();
  }
  if (op == "vm.migrate_cancel") return MigrateCancel(name, vm.get());
  if (op == "vm.offload") {
    if (!args.contains("resident_bytes") || !args["resident_bytes"].is_number_unsigned())
      return InvalidArgument("vm.offload needs \"resident_bytes\" (a non-negative integer)");
    uint64_t target = args["resident_bytes"];
    if (target > vm->spec().memory_bytes)
      return InvalidArgument("--resident " + std::to_string(target) + " exceeds the VM's memory");
    AGILE_ASSIGN_OR_RETURN(auto r, vm->Offload(target));
    return json{{"name", name},
                {"pages_offloaded", r.pages_offloaded},
                {"pages_zero", r.pages_zero},
                {"bytes_sent", r.bytes_sent},
                {"seconds", r.seconds},
                {"throughput_mb_s", r.seconds > 0 ? static_cast<double>(r.bytes_sent) / 1e6 / r.seconds : 0.0},
                {"resident_bytes", r.resident_after * 4096}};
  }
  json st = vm->Stat();
  st["policy"] = policy_->VmStatus(name);
  return st;
}

}  // namespace agile::agiled
