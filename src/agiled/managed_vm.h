// One VM under agiled: a stock QEMU whose guest RAM file agiled created, whose
// userfaultfd agiled received through the shim, and whose faults agiled
// serves. Owns the QEMU process, the fault thread and the page table.
// Thread-safe: all public methods may be called from any control thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "agiled/host_config.h"
#include "base/process.h"
#include "offload/evictor.h"
#include "offload/swap_store.h"
#include "offload/victim_policy.h"
#include "qemu/launch.h"
#include "qemu/qmp.h"
#include "uffd/uffd.h"
#include "vm/fault_server.h"
#include "vm/page_table.h"
#include "vm/shim_link.h"

namespace agile::agiled {

class ManagedVm {
 public:
  // Creates the RAM file, starts QEMU with the shim, takes over its memory
  // and waits until QMP answers. On failure nothing is left behind and the
  // error carries QEMU's last words.
  static Result<std::unique_ptr<ManagedVm>> Launch(const qemu::VmSpec& spec, const HostConfig& host);
  ~ManagedVm();

  // Asks QEMU to quit, escalating to SIGTERM/SIGKILL after timeout_ms, then
  // frees the RAM file. Idempotent.
  Status Stop(int timeout_ms = 15000);

  const qemu::VmSpec& spec() const { return spec_; }
  std::string state() const;
  nlohmann::json Stat();
  // Offloads coldest pages to the swap store until at most target_bytes of
  // guest RAM are resident. One offload at a time per VM.
  Result<offload::EvictReport> Offload(uint64_t target_bytes);

  // The last `lines` lines of the serial console.
  Result<std::string> Console(int lines) const;

 private:
  ManagedVm(qemu::VmSpec spec, const HostConfig& host);
  Status Start();
  void Monitor();
  void Cleanup();
  Result<nlohmann::json> Qmp(const std::string& cmd, const nlohmann::json& args = nullptr);
  std::string QemuLogTail() const;
  nlohmann::json GuestStatus() const;

  qemu::VmSpec spec_;
  HostConfig host_;
  std::string dir_, ram_dir_, ram_path_, qmp_path_, serial_path_, qemu_log_path_;
  UniqueFd ram_fd_;
  Process qemu_;
  std::unique_ptr<vm::ShimLink> shim_;
  std::unique_ptr<uffd::Uffd> uffd_;
  std::unique_ptr<vm::PageTable> table_;
  std::unique_ptr<vm::FaultServer> faults_;
  std::unique_ptr<offload::SwapStore> store_;           // null without --memd
  std::unique_ptr<offload::LastFaultPolicy> policy_;
  std::unique_ptr<offload::Evictor> evictor_;
  std::mutex offload_mu_;        // one offload at a time
  std::mutex offload_stats_mu_;  // guards offload_total_ (Stat must not wait for an offload)
  offload::EvictReport offload_total_;
  std::mutex qmp_mu_;
  std::unique_ptr<qemu::QmpClient> qmp_;
  std::thread monitor_;
  UniqueFd monitor_wake_;
  std::atomic<int> state_{0};  // State enum in managed_vm.cc
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  uint64_t started_ns_ = 0;
  std::string exit_reason_;
};

}  // namespace agile::agiled
