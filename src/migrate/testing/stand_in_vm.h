// A MigratingVm for unit tests that drive one piece of a migration (QEMU's
// monitor, a hand-back, a capability set-up) without a host: every hook a
// test does not script is a no-op, so each test overrides only spec()'s name
// and Qmp(), and what it checks.
#pragma once

#include <memory>
#include <string>

#include "migrate/migrating_vm.h"

namespace agile::migrate::testing {

class StandInVm : public MigratingVm {
 public:
  const qemu::VmSpec& spec() const override { return spec_; }
  std::shared_ptr<vm::GuestMemory> memory() override { return nullptr; }
  offload::SwapStore* store() override { return nullptr; }
  void SetMigrationStatus(nlohmann::json) override {}
  void BeginOutgoing() override {}
  Status EndOutgoing(bool, bool) override { return Status::Ok(); }
  void SetFenced(const std::string&, bool) override {}
  void SetRemotePager(vm::RemotePager*) override {}
  Status AdoptStore(const std::string&, uint64_t, uint64_t, uint64_t) override { return Status::Ok(); }
  Status PersistState() override { return Status::Ok(); }
  Result<memd::OwnerToken> HandBackStore(const std::string&) override { return Unsupported("no store"); }
  void MarkRunning(bool) override {}
  Status RecordArrival(bool) override { return Status::Ok(); }

 protected:
  qemu::VmSpec spec_;
};

}  // namespace agile::migrate::testing
