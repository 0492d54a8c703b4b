// The VMs of one agiled, by name. Launching happens outside the lock (it takes
// seconds) with the name reserved, so two starts of one name cannot race.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <condition_variable>
#include <vector>

#include "host/managed_vm.h"
#include "migrate/migrating_vm.h"

namespace agile::host {

class VmManager : public migrate::IncomingHost {
 public:
  explicit VmManager(HostConfig host) : host_(std::move(host)) {}
  Result<std::shared_ptr<ManagedVm>> Start(const qemu::VmSpec& spec);
  // migrate::IncomingHost: a VM arriving by migration (QEMU -incoming),
  // registered at once so the name is taken and `vm list` shows it as
  // "incoming"; dropped (stopped and forgotten) if the migration fails.
  const std::string& host_id() const override { return host_.id; }
  bool has_store() const override { return !host_.memd_addr.empty(); }
  Result<std::shared_ptr<migrate::MigratingVm>> StartIncoming(const qemu::VmSpec& spec,
                                                              const std::string& store_vm_id) override;
  void DropIncoming(const std::string& name) override { (void)Stop(name); }
  // --copy-storage: STATE_DIR/disks/<vm>/disk<i>.<format>, made with
  // qemu-img; refused while a VM of that name is here (its disks may be those).
  Result<std::string> CreateDiskCopy(const std::string& name, size_t index, const std::string& format,
                                     uint64_t bytes) override;
  void RemoveDiskCopies(const std::string& name) override;
  Result<memd::OwnerToken> HandBackNamespace(const std::string& store_vm_id, const memd::OwnerToken& token,
                                             const std::string& host) override;
  // A VM libvirt is starting through agile-qemu (docs/libvirt.md): prepared
  // now (the name taken, the RAM file made), taken over on a thread of ours
  // once QEMU runs; listed from then on, forgotten when its QEMU ends.
  Result<ManagedVm::AttachPaths> Attach(const qemu::VmSpec& spec, const ManagedVm::AttachInfo& info);
  // Forgets a VM that migrated away (already retired).
  void Forget(const std::string& name);
  Result<std::shared_ptr<ManagedVm>> Get(const std::string& name);
  std::vector<std::shared_ptr<ManagedVm>> List();
  // Stops the VM and forgets it.
  Status Stop(const std::string& name);
  void StopAll();
  // At start-up, before serving: re-adopts every VM an earlier agiled of this
  // state dir left running (STATE_DIR/vms/*/vm.record), in parallel; VMs that
  // cannot be adopted are listed as "lost" with the reason. Returns how many
  // were adopted running.
  size_t AdoptAll();
  const HostConfig& host() const { return host_; }
  ~VmManager();

 private:
  HostConfig host_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<ManagedVm>> vms_;
  std::set<std::string> starting_;
  // Drops libvirt VMs whose QEMU ended (they are libvirt's to restart).
  void PruneEndedLibvirtVms();
  // FinishAttach() runs on detached threads; StopAll and the destructor wait
  // until none is left (they touch vms_).
  int attaching_ = 0;  // mu_
  std::condition_variable attach_done_;
  void WaitForAttaches();
  Result<std::shared_ptr<ManagedVm>> Launch(const qemu::VmSpec& spec, bool incoming, const std::string& store_vm_id);
};

}  // namespace agile::host
