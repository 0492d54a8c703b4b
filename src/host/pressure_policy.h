// Advance offloading (Agile's first step): when the host runs short of
// memory, keep each VM's resident set near its working set plus a margin by
// pushing its coldest pages to the swap store - before any migration needs it.
//
// Pressure means: the VMs' resident guest RAM above --host-budget, or PSI
// memory "some avg10" above psi_threshold_pct. Each period, under pressure,
// every VM in auto mode is offloaded down to WSS + margin (pinned VMs down to
// their pin; exempt VMs never). The margin follows the VM's refaults: a VM
// that refaults more than refault_high pages/s gets 1.5x the margin, one that
// stays under refault_low for 10 periods gives 10% back, never below the base.
// Thread-safe: configuration calls may come from any control thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <optional>
#include <thread>

#include "host/vm_manager.h"

namespace agile::host {

struct PolicyOptions {
  uint64_t host_budget = 0;          // bytes of resident guest RAM for all VMs; 0 = PSI only
  double psi_threshold_pct = 10;     // /proc/pressure/memory some avg10
  int interval_ms = 1000;
  uint64_t min_margin = 16ull << 20;
  double margin_fraction = 0.10;     // base margin: this much of the WSS, at least min_margin
  double refault_high = 100;         // pages/s: raise the margin
  double refault_low = 5;            // pages/s: quiet
  double warmup_s = 15;              // a new VM's working set is not known before this
};

class PressurePolicy {
 public:
  PressurePolicy(VmManager* vms, PolicyOptions opts);
  ~PressurePolicy();
  void Start();
  void Stop();

  // vm policy: "auto" (default), "pin" (keep resident at most pin_bytes), "exempt".
  Status Set(const std::string& vm, const std::string& mode, uint64_t pin_bytes);
  nlohmann::json VmStatus(const std::string& vm);
  nlohmann::json HostStatus();
  // SIGHUP: new budget, PSI threshold and interval, taken by the policy
  // thread before its next look (the rest of PolicyOptions is not reloadable).
  void Reconfigure(uint64_t host_budget, double psi_threshold_pct, int interval_ms);

 private:
  struct VmPolicy {
    std::string mode = "auto";
    uint64_t pin_bytes = 0;
    uint64_t margin = 0;
    uint64_t last_refaults = 0;
    int quiet_periods = 0;
    double refault_rate = 0;
    uint64_t target = 0;
  };
  void Run();
  void Tick();
  static double ReadPsiSomeAvg10();

  VmManager* vms_;
  PolicyOptions opt_;  // written only by the policy thread (or before it starts), under mu_
  std::optional<PolicyOptions> pending_;  // Reconfigure's, for the policy thread (mu_)
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  std::map<std::string, VmPolicy> per_vm_;
  uint64_t last_usage_ = 0;
  double last_psi_ = 0;
  bool under_pressure_ = false;
  uint64_t offloaded_bytes_ = 0;
};

}  // namespace agile::host
