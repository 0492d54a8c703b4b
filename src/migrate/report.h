// What a migration reports (agilectl migrate --json prints exactly this).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace agile::migrate {

struct Report {
  std::string mode;
  std::string vm;
  std::string destination;
  bool ok = false;
  std::string error;
  bool converged = true;       // pre-copy rounds met the downtime target before the cap
  double total_time_ms = 0;    // start until the source holds nothing of the VM
  double switchover_ms = 0;    // start until the VM runs at the destination
  double downtime_ms = 0;      // VM paused at the source until running at the destination
  uint64_t bytes_sent = 0;     // on the migration connection and QEMU's device-state stream
  uint64_t device_state_bytes = 0;
  uint32_t rounds = 0;
  uint64_t pages_precopied = 0;   // sent before switchover (all rounds)
  uint64_t pages_postcopied = 0;  // pulled from the source after switchover
  uint64_t pages_from_store = 0;  // left in the swap store for the destination to fault in
  uint64_t pages_zero = 0;        // known zero: never sent
  uint64_t pages_demand = 0;      // post-copy pages the destination faulted on (subset of postcopied)

  nlohmann::json ToJson() const {
    return {{"mode", mode},
            {"vm", vm},
            {"destination", destination},
            {"ok", ok},
            {"error", error},
            {"converged", converged},
            {"total_time_ms", total_time_ms},
            {"switchover_ms", switchover_ms},
            {"downtime_ms", downtime_ms},
            {"bytes_sent", bytes_sent},
            {"device_state_bytes", device_state_bytes},
            {"rounds", rounds},
            {"pages_precopied", pages_precopied},
            {"pages_postcopied", pages_postcopied},
            {"pages_from_store", pages_from_store},
            {"pages_zero", pages_zero},
            {"pages_demand", pages_demand}};
  }
};

}  // namespace agile::migrate
