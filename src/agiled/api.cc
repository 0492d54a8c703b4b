#include "agiled/api.h"

#include <algorithm>
#include <set>

#include "base/size.h"
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

Result<json> Api::Migrate(const std::shared_ptr<ManagedVm>& vm, const json& args,
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
  o.progress = progress;
  vm->migration_cancel() = false;
  o.cancel = &vm->migration_cancel();
  std::string name = vm->spec().name;
  migrate::Sender sender(vm.get(), vms_->host().id, o);
  migrate::Report r = sender.Run();
  if (r.ok) vms_->Forget(name);
  json j = r.ToJson();
  if (!r.ok) {
    auto st = vm->state();
    return Status(Code::kUnavailable,
                  r.error + (st == "running" ? " (the VM keeps running on this host)"
                                             : " (the VM is " + st + " on this host; see agiled's log)"));
  }
  return j;
}

Result<json> Api::Handle(const std::string& op, const json& args, const std::function<void(const json&)>& progress) {
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
                     {"resident_pages", s["pages"].value("resident", 0)}});
    }
    return out;
  }
  static const std::set<std::string> kVmOps = {"vm.stop",    "vm.stat",    "vm.console",
                                               "vm.offload", "vm.migrate", "vm.migrate_cancel",
                                               "vm.pause",   "vm.resume",        "vm.wss",
                                               "vm.policy"};
  if (!kVmOps.count(op))
    return InvalidArgument("unknown op '" + op +
                           "' (host.info, host.shutdown, vm.start, vm.list, vm.stat, vm.console, vm.offload, "
                           "vm.migrate, vm.migrate_cancel, vm.pause, vm.resume, vm.wss, vm.policy, vm.stop)");
  AGILE_ASSIGN_OR_RETURN(std::string name, NameArg(args));
  if (op == "vm.stop") {
    AGILE_RETURN_IF_ERROR(vms_->Stop(name));
    return json{{"name", name}, {"state", "stopped"}};
  }
  AGILE_ASSIGN_OR_RETURN(auto vm, vms_->Get(name));
  if (op == "vm.console") {
    AGILE_ASSIGN_OR_RETURN(uint64_t lines, UintArg(args, "lines", 40));
    AGILE_ASSIGN_OR_RETURN(std::string text, vm->Console(static_cast<int>(std::min<uint64_t>(lines, 1u << 30))));
    return json{{"name", name}, {"text", text}};
  }
  if (op == "vm.migrate") return Migrate(vm, args, progress);
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
  if (op == "vm.pause" || op == "vm.resume") {
    AGILE_RETURN_IF_ERROR(vm->Qmp(op == "vm.pause" ? "stop" : "cont").status());
    return vm->Stat();
  }
  if (op == "vm.migrate_cancel") {
    vm->migration_cancel() = true;
    return json{{"name", name}, {"cancel_requested", true}};
  }
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
