// What a migration needs of the VM it moves, and of the host that receives
// one: guest memory, the VM's swap-store namespace, QEMU's monitor and a few
// lifecycle hooks. The host (src/host) implements these; migration code knows
// nothing else of how VMs are run, so it can be driven in tests by a stand-in.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"
#include "migrate/migration_record.h"
#include "offload/swap_store.h"
#include "qemu/launch.h"
#include "vm/fault_server.h"
#include "vm/guest_memory.h"

namespace agile::migrate {

class MigratingVm {
 public:
  virtual ~MigratingVm() = default;
  virtual const qemu::VmSpec& spec() const = 0;
  // QEMU's monitor (QMP): device-state migration, pause and resume.
  virtual Result<nlohmann::json> Qmp(const std::string& cmd, const nlohmann::json& args = nullptr) = 0;
  // The guest memory agiled owns; null for stock VMs (the qemu-* modes,
  // where QEMU moves all of RAM itself).
  virtual std::shared_ptr<vm::GuestMemory> memory() = 0;
  // The VM's namespace in the swap store; null without a store.
  virtual offload::SwapStore* store() = 0;
  // What `vm stat` shows of the migration while it runs; null when it ends.
  virtual void SetMigrationStatus(nlohmann::json status) = 0;
  // A post-copy across an agiled restart (migrate/migration_record.h):
  // keeps `r` in the VM's state, crash-consistently, before the state it
  // describes is relied on; null removes it. Stand-ins keep nothing.
  virtual Status SaveMigrationRecord(const MigrationRecord* r) {
    (void)r;
    return Status::Ok();
  }

  // ---- source ----
  // From here until EndOutgoing no offload runs and working-set tracking is
  // off (its scans would take the dirty bits pre-copy needs).
  virtual void BeginOutgoing() = 0;
  // migrated: the VM runs elsewhere now; stop QEMU and free guest RAM here,
  // keeping the store namespace when its ownership moved with the VM
  // (keep_store). Otherwise the VM stays: tracking and offload resume.
  virtual Status EndOutgoing(bool migrated, bool keep_store) = 0;
  // The fence (docs/migration.md, "Failure safety"): set (non-empty reason)
  // when a migration reaches its commit point, so `vm resume` here is
  // refused unless the swap store says this host still owns the VM's
  // namespace; cleared when the source provably kept the VM.
  // lease: the VM's swap-store namespace went (or may have gone) with it,
  // so memd's answer decides; otherwise the fence is local only.
  virtual void SetFenced(const std::string& reason, bool lease) = 0;
  // Writes the VM's state record now, with the store token it holds (after
  // the source took its namespace back from a destination that never ran it:
  // AdoptStore alone keeps the token in memory).
  virtual Status PersistState() = 0;

  // ---- destination ----
  // Where faults on pages still at the source are sent (null: none).
  virtual void SetRemotePager(vm::RemotePager* pager) = 0;
  // Use the VM's store namespace under the ownership token the source
  // handed over (agile mode). In memory only, as it runs in the downtime:
  // the state record gets the token with MarkRunning.
  virtual Status AdoptStore(const std::string& store_vm_id, uint64_t epoch, uint64_t secret, uint64_t secret_hi) = 0;
  // The VM never ran here and goes back to its source (SWITCHOVER_ACK "not
  // resumed"): hands the namespace adopted at SWITCHOVER to `host` (TRANSFER)
  // and returns the token to give it; this host's token is void after. On
  // failure the namespace is kept whoever owns it now: dropping this copy
  // then does not release it (its cold pages exist nowhere else).
  virtual Result<memd::OwnerToken> HandBackStore(const std::string& host) = 0;
  // The incoming migration switched over; the VM runs here now. all_pages_here=false (post-copy: pages still at the
  // source) keeps the state record's "incoming" mark, so an agiled restarted
  // before the last page arrives reports the VM lost instead of re-adopting it
  // with the missing pages taken for never-touched (zero) ones.
  virtual void MarkRunning(bool all_pages_here = true) = 0;
  // Every page here (no post-copy): writes the state record as arrived, with
  // the token adopted at SWITCHOVER, before `cont`. An agiled restarted from
  // then on re-adopts the VM (running if `cont` ran, paused if not) instead
  // of dropping the copy its source has let go of, or cannot resume without
  // the lease. arrived=false undoes it before a hand-back: a copy that never
  // ran here must never be re-adopted. An error (the record not written)
  // must stop the switchover: the VM must not run here on an old record.
  virtual Status RecordArrival(bool arrived) = 0;
};

// The receiving host: starts the incoming QEMU and drops it on failure.
class IncomingHost {
 public:
  virtual ~IncomingHost() = default;
  virtual const std::string& host_id() const = 0;
  virtual bool has_store() const = 0;
  // Starts QEMU with -incoming defer; every guest page starts at the source
  // (kRemote). store_vm_id names the store namespace of its cold pages.
  virtual Result<std::shared_ptr<MigratingVm>> StartIncoming(const qemu::VmSpec& spec,
                                                             const std::string& store_vm_id) = 0;
  // Stops and forgets an incoming VM whose migration failed.
  virtual void DropIncoming(const std::string& name) = 0;
  // --copy-storage: creates an empty image (format, bytes) for disk `index`
  // of VM `name` in this host's own storage and returns its path.
  virtual Result<std::string> CreateDiskCopy(const std::string& name, size_t index, const std::string& format,
                                             uint64_t bytes) = 0;
  // Deletes the disk copies of a VM whose incoming migration failed.
  virtual void RemoveDiskCopies(const std::string& name) = 0;
  // A migration whose copy here was dropped before SWITCHOVER was taken,
  // while the source had already transferred the VM's swap-store namespace
  // to this host (its token never arrived): hands namespace store_vm_id,
  // under `token`, to `host` (TRANSFER) and returns the token to give it.
  virtual Result<memd::OwnerToken> HandBackNamespace(const std::string& store_vm_id, const memd::OwnerToken& token,
                                                     const std::string& host) {
    (void)store_vm_id, (void)token, (void)host;
    return Unsupported("this host keeps no swap-store namespaces");
  }
};

}  // namespace agile::migrate
