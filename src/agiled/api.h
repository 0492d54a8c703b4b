// The control API's operations, mapped onto the VmManager. Each op validates
// its arguments fully before changing anything.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "host/pressure_policy.h"
#include "control/control_server.h"
#include "host/vm_manager.h"

namespace agile::agiled {

using host::ManagedVm;
using host::PressurePolicy;
using host::VmManager;

class Api {
 public:
  Api(VmManager* vms, PressurePolicy* policy, std::function<void()> request_shutdown)
      : vms_(vms), policy_(policy), request_shutdown_(std::move(request_shutdown)) {}
  // caller: who asked (raw QEMU arguments only from the local unix socket).
  Result<nlohmann::json> Handle(const std::string& op, const nlohmann::json& args,
                                const std::function<void(const nlohmann::json&)>& progress = nullptr,
                                const control::Caller& caller = control::Caller{true, ""});

 private:
  Result<nlohmann::json> Migrate(const std::shared_ptr<ManagedVm>& vm, const nlohmann::json& args,
                                 const std::function<void(const nlohmann::json&)>& progress);
  VmManager* vms_;
  PressurePolicy* policy_;
  std::function<void()> request_shutdown_;
};

}  // namespace agile::agiled
