#include "host/pressure_policy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/size.h"

namespace agile::host {
using nlohmann::json;

PressurePolicy::PressurePolicy(VmManager* vms, PolicyOptions opts) : vms_(vms), opt_(opts) {}

PressurePolicy::~PressurePolicy() { Stop(); }

void PressurePolicy::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void PressurePolicy::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void PressurePolicy::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    if (pending_) {
      opt_ = *pending_;
      pending_.reset();
    }
    l.unlock();
    Tick();
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(opt_.interval_ms), [this] { return stop_ || pending_.has_value(); });
  }
}

void PressurePolicy::Reconfigure(uint64_t host_budget, double psi_threshold_pct, int interval_ms) {
  std::lock_guard<std::mutex> l(mu_);
  PolicyOptions o = pending_ ? *pending_ : opt_;
  o.host_budget = host_budget;
  o.psi_threshold_pct = psi_threshold_pct;
  o.interval_ms = interval_ms;
  if (thread_.joinable()) pending_ = o;
  else opt_ = o;
  cv_.notify_all();
}

double PressurePolicy::ReadPsiSomeAvg10() {
  std::ifstream in("/proc/pressure/memory");
  std::string word;
  while (in >> word) {
    if (word.rfind("avg10=", 0) == 0) return std::stod(word.substr(6));  // the first line is "some"
  }
  return 0;
}

Status PressurePolicy::Set(const std::string& vm, const std::string& mode, uint64_t pin_bytes) {
  if (mode != "auto" && mode != "pin" && mode != "exempt")
    return InvalidArgument("policy mode must be auto, pin or exempt, not '" + mode + "'");
  AGILE_ASSIGN_OR_RETURN(auto v, vms_->Get(vm));
  if (mode == "pin" && pin_bytes > v->spec().memory_bytes) return InvalidArgument("pin exceeds the VM's memory");
  std::lock_guard<std::mutex> l(mu_);
  auto& p = per_vm_[vm];
  p.mode = mode;
  p.pin_bytes = pin_bytes;
  return Status::Ok();
}

json PressurePolicy::VmStatus(const std::string& vm) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = per_vm_.find(vm);
  if (it == per_vm_.end()) return {{"mode", "auto"}};
  const auto& p = it->second;
  json j = {{"mode", p.mode}, {"margin_bytes", p.margin}, {"refault_rate", p.refault_rate}, {"target_bytes", p.target}};
  if (p.mode == "pin") j["pin_bytes"] = p.pin_bytes;
  return j;
}

json PressurePolicy::HostStatus() {
  std::lock_guard<std::mutex> l(mu_);
  return {{"host_budget_bytes", opt_.host_budget},   {"vm_resident_bytes", last_usage_},
          {"psi_some_avg10", last_psi_},             {"psi_threshold_pct", opt_.psi_threshold_pct},
          {"under_pressure", under_pressure_},       {"advance_offloaded_bytes", offloaded_bytes_}};
}

void PressurePolicy::Tick() {
  auto vms = vms_->List();
  uint64_t usage = 0;
  for (auto& v : vms) usage += v->ResidentBytes();
  double psi = ReadPsiSomeAvg10();
  bool pressure = (opt_.host_budget > 0 && usage > opt_.host_budget) || psi > opt_.psi_threshold_pct;
  double dt = opt_.interval_ms / 1000.0;

  struct Plan {
    std::shared_ptr<ManagedVm> vm;
    uint64_t target;
    uint64_t excess;  // resident above target when planned
  };
  std::vector<Plan> plans;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (pressure && !under_pressure_)
      spdlog::info("memory pressure: VMs hold {} resident (budget {}), PSI some avg10 {:.1f}%; offloading cold pages",
                   FormatSize(usage), FormatSize(opt_.host_budget), psi);
    last_usage_ = usage;
    last_psi_ = psi;
    under_pressure_ = pressure;
    for (auto& v : vms) {
      if (v->stock() || v->state() != "running") continue;
      auto& p = per_vm_[v->spec().name];
      // Refault feedback keeps the margin honest about the working set's edges.
      uint64_t refaults = v->Refaults();
      p.refault_rate = p.last_refaults ? static_cast<double>(refaults - p.last_refaults) / dt : 0;
      p.last_refaults = refaults;
      // The sampled estimate: right within seconds of a phase change, where
      // the full coverage's window lags by a coverage cycle (minutes on TCG).
      uint64_t wss = v->EstimatedWssBytes();
      uint64_t base = std::max<uint64_t>(opt_.min_margin, static_cast<uint64_t>(static_cast<double>(wss) * opt_.margin_fraction));
      if (p.margin < base) p.margin = base;
      if (p.refault_rate > opt_.refault_high) {
        p.margin = std::min<uint64_t>(v->spec().memory_bytes, p.margin * 3 / 2 + (8ull << 20));
        p.quiet_periods = 0;
      } else if (p.refault_rate < opt_.refault_low && ++p.quiet_periods >= 10) {
        p.margin = std::max(base, p.margin * 9 / 10);
        p.quiet_periods = 0;
      }
      if (p.mode == "exempt") continue;
      if (p.mode == "pin") p.target = p.pin_bytes;
      else if (wss == 0 || v->UptimeS() < opt_.warmup_s) continue;
      else p.target = std::min<uint64_t>(v->spec().memory_bytes, wss + p.margin);
      bool act = p.mode == "pin" || pressure;
      // A little slack so a VM is not offloaded for every page it gains.
      uint64_t resident = v->ResidentBytes();
      if (act && resident > p.target + (4ull << 20)) plans.push_back({v, p.target, resident - p.target});
    }
  }
  // Offloads run one after another and take seconds each under load: the VM
  // holding the most above its target goes first, so the host is relieved
  // soonest and a VM about to migrate is not left for last.
  std::sort(plans.begin(), plans.end(), [](const Plan& a, const Plan& b) { return a.excess > b.excess; });
  for (auto& plan : plans) {
    auto r = plan.vm->Offload(plan.target);
    if (r.ok()) {
      std::lock_guard<std::mutex> l(mu_);
      offloaded_bytes_ += r->bytes_sent;
    } else if (r.status().code() != Code::kUnavailable) {
      spdlog::warn("vm {}: advance offload failed: {}", plan.vm->spec().name, r.status().ToString());
    }
  }
}

}  // namespace agile::host
