#include "agiled/metrics.h"

#include <string>
#include <vector>

namespace agile::agiled {
using nlohmann::json;

namespace {

// Fault latency buckets, in us (LatencyHistogram's resolution: 1 us to 1 ms, then 1 ms).
const std::vector<double> kFaultBoundsUs = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000};

void FaultLatency(metrics::Scrape* s, const std::string& vm, const char* kind, const vm::LatencyHistogram& h) {
  std::vector<uint64_t> counts;
  double sum = 0;
  h.Export(kFaultBoundsUs, &counts, &sum);
  std::vector<double> bounds_s;
  for (double us : kFaultBoundsUs) bounds_s.push_back(us / 1e6);
  s->Histogram("agile_vm_fault_latency_seconds", "Time to serve a fault, by kind", {{"vm", vm}, {"kind", kind}},
               bounds_s, counts, sum);
}

}  // namespace

void CollectHostMetrics(metrics::Scrape* s, VmManager* vms, PressurePolicy* policy) {
  json h = policy->HostStatus();
  s->Gauge("agile_host_psi_memory_some_avg10_ratio", "Host memory pressure: PSI some avg10, as a ratio", {},
           h.value("psi_some_avg10", 0.0) / 100);
  s->Gauge("agile_host_budget_bytes", "--host-budget for the VMs' resident guest RAM (0: none)", {},
           h.value("host_budget_bytes", 0.0));
  s->Gauge("agile_host_vm_resident_bytes", "Resident guest RAM of all VMs, as the policy last measured it", {},
           h.value("vm_resident_bytes", 0.0));
  s->Gauge("agile_host_under_pressure", "1 while the policy offloads in advance", {},
           h.value("under_pressure", false) ? 1 : 0);
  s->Counter("agile_host_advance_offloaded_bytes_total", "Bytes the pressure policy offloaded", {},
             h.value("advance_offloaded_bytes", 0.0));

  auto list = vms->List();
  s->Gauge("agile_vms", "VMs managed by this agiled", {}, static_cast<double>(list.size()));
  for (const auto& v : list) {
    const std::string name = v->spec().name;
    json st = v->Stat();
    s->Gauge("agile_vm_memory_bytes", "Guest RAM size", {{"vm", name}}, static_cast<double>(v->spec().memory_bytes));
    s->Gauge("agile_vm_up", "1 while the VM runs (or is paused)", {{"vm", name}},
             st.value("state", "") == "running" || st.value("state", "") == "paused" ? 1 : 0);
    s->Gauge("agile_vm_degraded",
             "1 while vm stat says health degraded (degraded.reason: a swap store that cannot be reached, a state "
             "record that cannot be written)",
             {{"vm", name}}, st.value("health", "") == "degraded" ? 1 : 0);
    if (st.contains("pages"))
      for (const char* state : {"resident", "zero", "offloaded", "in_flight", "remote"})
        s->Gauge("agile_vm_pages", "Guest pages by state", {{"vm", name}, {"state", state}},
                 st["pages"].value(state, 0.0));
    if (const vm::FaultStats* f = v->fault_stats()) {
      const std::pair<const char*, uint64_t> kinds[] = {
          {"first_touch", f->first_touch.load()}, {"minor", f->minor.load()},       {"refault", f->refault.load()},
          {"prefetched", f->prefetched.load()},   {"spurious", f->spurious.load()}, {"deferred", f->deferred.load()},
          {"fetch_error", f->fetch_errors.load()}};
      for (const auto& [kind, n] : kinds)
        s->Counter("agile_vm_faults_total", "Faults served, by kind (refault: an offloaded page fetched back)",
                   {{"vm", name}, {"kind", kind}}, static_cast<double>(n));
      FaultLatency(s, name, "first_touch", f->first_touch_latency);
      FaultLatency(s, name, "refault", f->refault_latency);
    }
    if (st.contains("offload") && st["offload"].is_object())
      s->Counter("agile_vm_offloaded_bytes_total", "Bytes offloaded to the swap store", {{"vm", name}},
                 st["offload"].value("bytes_offloaded", 0.0));
    json w = v->WorkingSet();
    if (w.contains("windows_bytes"))
      for (auto& [win, bytes] : w["windows_bytes"].items())
        if (bytes.is_number())
          s->Gauge("agile_vm_wss_bytes", "Working set: resident pages accessed within the window",
                   {{"vm", name}, {"window", win}}, bytes.get<double>());
    if (w.contains("tracker"))
      s->Gauge("agile_vm_tracker_cpu_ratio", "Working-set tracker's estimated CPU, share of one core", {{"vm", name}},
               w["tracker"].value("est_cpu_pct", 0.0) / 100);
  }
}

}  // namespace agile::agiled
