// One VM under agiled: a stock QEMU whose guest RAM file agiled created, whose
// userfaultfd agiled received through the shim, and whose faults agiled
// serves. Owns the QEMU process, the fault thread and the VM's GuestMemory.
// Implements what a migration needs of it (migrate::MigratingVm).
// Thread-safe: all public methods may be called from any control thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "base/process.h"
#include "host/host_config.h"
#include "host/vm_record.h"
#include "migrate/migrating_vm.h"
#include "offload/evictor.h"
#include "offload/swap_store.h"
#include "offload/victim_policy.h"
#include "track/access_tracker.h"
#include "qemu/launch.h"
#include "qemu/qmp.h"
#include "uffd/compat.h"
#include "uffd/uffd.h"
#include "vm/fault_server.h"
#include "vm/guest_memory.h"

namespace agile::host {

class ManagedVm : public migrate::MigratingVm {
 public:
  // Creates the RAM file, starts QEMU with the shim, takes over its memory
  // and waits until QMP answers. On failure nothing is left behind and the
  // error carries QEMU's last words.
  // incoming: QEMU waits for a migration (-incoming defer) and every guest
  // page starts kRemote (at the migration source) until placed; store_vm_id
  // then names the swap-store namespace the VM's cold pages already live in.
  static Result<std::unique_ptr<ManagedVm>> Launch(const qemu::VmSpec& spec, const HostConfig& host,
                                                   bool incoming = false, const std::string& store_vm_id = "");
  // Re-adopts a VM whose QEMU an earlier agiled of this state dir left
  // running (docs/invariants.md, "Crash consistency"): takes the uffd the
  // shim hands over again, rebuilds page states from the RAM file and the
  // location map, re-owns its swap-store namespace with the recorded token,
  // reconnects QMP and serves faults, tracking and offloading again.
  // When the VM cannot be adopted (QEMU gone, an interrupted incoming
  // migration, damaged state) the result is a VM in state "lost" with the
  // reason, whose resources have been released; it stays listed until
  // `vm stop` forgets it.
  static std::unique_ptr<ManagedVm> Adopt(const VmRecord& record, const HostConfig& host);
  // A VM libvirt is starting through the agile-qemu wrapper (process `pid`,
  // which execs QEMU once this returns; docs/libvirt.md). Creates the RAM
  // file and the shim's socket and records the VM, but takes nothing over
  // yet: FinishAttach() does, once QEMU runs. serial_log and qemu_log are
  // libvirt's files for the console and QEMU's output (may be empty).
  struct AttachInfo {
    pid_t pid = -1;
    std::string serial_log, qemu_log;
  };
  // What the wrapper gives QEMU (see AttachInfo).
  struct AttachPaths {
    std::string ram_path, shim_socket, qmp_socket, shim_path;
  };
  static Result<std::unique_ptr<ManagedVm>> PrepareAttach(const qemu::VmSpec& spec, const HostConfig& host,
                                                          const AttachInfo& info);
  AttachPaths attach_paths() const;
  // Waits for the shim's handover and QMP, then serves the VM as one agiled
  // started. On failure QEMU is killed (a VM never runs unmanaged).
  Status FinishAttach();
  // A VM whose state record is unreadable: only its name is known.
  static std::unique_ptr<ManagedVm> Lost(const std::string& name, const HostConfig& host, const std::string& why);
  ~ManagedVm() override;

  // Asks QEMU to quit, escalating to SIGTERM/SIGKILL after timeout_ms, then
  // frees the RAM file. Idempotent.
  Status Stop(int timeout_ms = 15000);

  const qemu::VmSpec& spec() const override { return spec_; }
  std::string state() const;
  nlohmann::json Stat();
  // Offloads coldest pages to the swap store until at most target_bytes of
  // guest RAM are resident. One offload at a time per VM.
  Result<offload::EvictReport> Offload(uint64_t target_bytes);

  // Working set: resident pages accessed within each configured window, and
  // the tracker's own figures. Empty without tracking.
  nlohmann::json WorkingSet() const;
  // Resident pages seen accessed within window_s by the full coverage
  // (0 without tracking); lags a phase change by a coverage cycle.
  uint64_t WssBytes(double window_s) const;
  // The working set as the sampler measures it over its interval (right
  // within three intervals of a change); the coverage's first window until the
  // sampler's first interval ends. What `wss_bytes` and the policy use.
  uint64_t EstimatedWssBytes() const;
  // The fault service's counters and latencies (metrics); null for stock VMs.
  const vm::FaultStats* fault_stats() const { return faults_ ? &faults_->stats() : nullptr; }
  // Faults that brought offloaded pages back, since start (policy feedback).
  uint64_t Refaults() const;
  uint64_t ResidentBytes() const;
  double UptimeS() const;

  // --- migrate::MigratingVm (src/migrate/migrating_vm.h) ---
  Result<nlohmann::json> Qmp(const std::string& cmd, const nlohmann::json& args = nullptr) override;
  std::shared_ptr<vm::GuestMemory> memory() override { return memory_; }
  offload::SwapStore* store() override { return store_.get(); }
  void SetMigrationStatus(nlohmann::json status) override;
  void BeginOutgoing() override;
  Status EndOutgoing(bool migrated, bool keep_store) override;
  void SetRemotePager(vm::RemotePager* pager) override;
  Status AdoptStore(const std::string& store_vm_id, uint64_t epoch, uint64_t secret, uint64_t secret_hi) override;
  Status PersistState() override { return PersistRecord(); }
  Result<memd::OwnerToken> HandBackStore(const std::string& host) override;
  void MarkRunning(bool all_pages_here = true) override;
  Status RecordArrival(bool arrived) override;
  // The record's `unconfirmed` mark (vm_record.h) and its clearing once the guest ran here.
  bool Unconfirmed();
  void Confirm();
  void SetFenced(const std::string& reason, bool lease) override;
  // STATE_DIR/vms/NAME/migration.record (migrate/migration_record.h).
  Status SaveMigrationRecord(const migrate::MigrationRecord* r) override;
  // Adopted after a restart in the middle of a post-copy (either side):
  // what migration.record said, for agiled to carry the migration on.
  const std::optional<migrate::MigrationRecord>& pending_migration() const { return pending_migration_; }

  // `vm resume`. A VM fenced by a migration that reached its commit point
  // (SetFenced) is resumed only when the swap store says this host still
  // owns its namespace (lease; `force` does not override that), or, with
  // no lease to ask, only with `force`. kFailedPrecondition-style
  // kPermissionDenied with the reason otherwise.
  Status Resume(bool force);
  bool fenced() {
    std::lock_guard<std::mutex> l(fence_mu_);
    return !fence_reason_.empty();
  }

  bool stock() const { return spec_.stock; }
  // Set by `migrate --cancel`; polled by the running migration.
  std::atomic<bool>& migration_cancel() { return migration_cancel_; }

  // The last `lines` lines of the serial console.
  Result<std::string> Console(int lines) const;

 private:
  ManagedVm(qemu::VmSpec spec, const HostConfig& host);
  Status Start(bool incoming, const std::string& store_vm_id);
  // Receives the shim's uffd and starts serving faults (non-stock VMs).
  // adopt: the record of a VM re-adopted after a restart (page states are
  // recovered, the store token re-adopted); null for a new QEMU.
  Status TakeOverMemory(int listen_fd, bool incoming, const std::string& store_vm_id,
                        const VmRecord* adopt = nullptr);
  Status AdoptRunning(const VmRecord& rec);
  Status PrepareAttachFiles(const AttachInfo& info);
  void BecomeRunning();
  // libvirt pauses and resumes its VM over its own monitor, which agiled
  // does not see, and a stock QEMU's own migration may leave it paused or
  // running: Stat() asks QEMU (briefly, never waiting for the QMP lock).
  void RefreshPausedFromQemu();
  void MarkLost(const std::string& why, const VmRecord* rec);
  // Rewrites vm.record from the current state (pid, incoming, store token).
  // A failure is logged and shown by `vm stat` (health degraded) until a
  // write succeeds again: a restart meanwhile would adopt an older record.
  Status PersistRecord();
  void Monitor();
  // Connects QMP once QEMU's main loop answers (AdoptRunning, when QMP did not
  // answer or must not be waited for); ends if QEMU ends or Stop().
  void ConnectQmpLate();
  // QEMU has exited (reaped or not), from any thread.
  bool QemuEnded() const;
  void Cleanup();
  std::string QemuLogTail() const;
  nlohmann::json GuestStatus() const;
  // The swap store's LostPagesHandler: marks the VM damaged for each lost
  // page it no longer holds itself.
  void OnLostPages(const offload::LostPages& lost);

  qemu::VmSpec spec_;
  HostConfig host_;
  std::string dir_, ram_dir_, ram_path_, qmp_path_, serial_path_, qemu_log_path_, locations_path_;
  std::mutex record_mu_;
  VmRecord record_;  // what vm.record says (record_mu_)
  // The last write of vm.record failed with this ("" when it succeeded). Its
  // own lock: Stat must not wait for a record's fsync.
  std::mutex record_error_mu_;
  std::string record_error_;
  Process qemu_;
  // Created with QEMU, handed to GuestMemory once the shim hands over the uffd.
  UniqueFd ram_fd_;
  // The shim's socket between PrepareAttach and FinishAttach.
  UniqueFd attach_listen_;
  // Lives as long as this VM object, so an offload or a migration that still
  // holds a pointer after Stop() finds it retired, never a reused descriptor.
  std::shared_ptr<vm::GuestMemory> memory_;
  std::unique_ptr<vm::FaultServer> faults_;
  std::unique_ptr<offload::SwapStore> store_;           // null without --memd
  std::unique_ptr<offload::LastFaultPolicy> fault_policy_;  // fallback without tracking
  std::unique_ptr<track::AccessTracker> tracker_;            // null for stock VMs or old kernels
  std::unique_ptr<offload::TrackerPolicy> tracker_policy_;
  std::unique_ptr<offload::FanOutObserver> observers_;     // tracker + fallback both see faults
  offload::VictimPolicy* policy_ = nullptr;                  // the one Offload() uses
  std::unique_ptr<offload::Evictor> evictor_;
  std::mutex offload_mu_;        // one offload at a time; held by an outgoing migration
  std::unique_lock<std::mutex> outgoing_lock_;  // offload_mu_ while a migration sends the VM
  std::mutex offload_stats_mu_;  // guards offload_total_ (Stat must not wait for an offload)
  offload::EvictReport offload_total_;
  std::mutex damage_mu_;  // guards the two below
  std::set<uint64_t> damaged_pages_;  // offloaded pages the swap store lost
  std::string damage_reason_;
  std::mutex qmp_mu_;
  // The guest's vCPUs are stopped (vm pause, a migration's stop-and-copy, an
  // incoming VM not yet resumed): "paused" in stat. Follows the QMP commands
  // that change or report it.
  std::atomic<bool> guest_paused_{false};
  std::unique_ptr<qemu::QmpClient> qmp_;
  std::thread monitor_;
  std::thread qmp_late_;  // ConnectQmpLate, joined by Stop() once QEMU has ended
  std::atomic<bool> qmp_connecting_{false};  // ConnectQmpLate has not connected yet (for Qmp()'s error)
  UniqueFd monitor_wake_;
  std::atomic<int> state_{0};  // State enum in managed_vm.cc
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  uint64_t started_ns_ = 0;
  std::string exit_reason_;
  bool keep_store_ = false;  // set when the store namespace moved to another host
  std::mutex fence_mu_;
  std::string fence_reason_;  // non-empty: fenced (SetFenced)
  bool fence_lease_ = false;
  std::mutex migration_mu_;
  nlohmann::json migration_status_;
  // Set by AdoptRunning only (before the VM is shared): a post-copy to carry on.
  std::optional<migrate::MigrationRecord> pending_migration_;
  std::atomic<bool> migration_cancel_{false};
};

}  // namespace agile::host
