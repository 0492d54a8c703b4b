// What a migration reports (agilectl migrate --json prints exactly this), and
// the progress it reports while it runs. Both speak QEMU's `query-migrate`
// vocabulary (status, total-time, downtime, setup-time, expected-downtime,
// ram.{transferred,remaining,total,mbps,dirty-pages-rate,dirty-sync-count};
// times in ms, sizes in bytes), with agile's own fields beside them
// (pages-from-store, pages-postcopied, switchover-time, ...). The 0.x names
// (ok, total_time_ms, bytes_sent, ...) are kept for one release as aliases
// (docs/migration.md, "Report").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace agile::migrate {

// query-migrate's statuses, as a migration goes through them.
inline constexpr const char* kStatusSetup = "setup";                    // handshake with the destination
inline constexpr const char* kStatusActive = "active";                  // pre-copy rounds, the VM runs
inline constexpr const char* kStatusDevice = "device";                  // VM paused: last pages, device state
inline constexpr const char* kStatusPostcopyActive = "postcopy-active";  // runs at the destination, pages follow
// Post-copy recovery (QEMU's names): the link broke after switchover and
// both sides keep their state; the source re-dials.
inline constexpr const char* kStatusPostcopyPaused = "postcopy-paused";
inline constexpr const char* kStatusCompleted = "completed";
inline constexpr const char* kStatusFailed = "failed";
inline constexpr const char* kStatusCancelled = "cancelled";

// Our finer-grained phase (handshake, precopy, stop-and-copy, device-state,
// switched-over, postcopy-tail, postcopy-push, postcopy-paused, qemu-migrate, qemu-postcopy) as a status.
inline const char* StatusOfPhase(const std::string& phase, bool switched) {
  if (phase == "handshake") return kStatusSetup;
  if (phase == "stop-and-copy" || phase == "device-state") return kStatusDevice;
  // qemu-postcopy: QEMU was asked to switch to post-copy (qemu-postcopy and
  // -hybrid's commit point), whether or not it has yet.
  if (phase == "switched-over" || phase == "postcopy-tail" || phase == "postcopy-push" || phase == "qemu-postcopy")
    return kStatusPostcopyActive;
  if (phase == "postcopy-paused") return kStatusPostcopyPaused;
  return switched ? kStatusPostcopyActive : kStatusActive;
}

struct Report {
  std::string mode;
  std::string vm;
  std::string destination;
  std::string status = kStatusSetup;  // completed, failed or cancelled once Run returns
  bool ok = false;                    // status == completed
  std::string error;
  bool converged = true;       // pre-copy rounds met the downtime target before the cap
  double total_time_ms = 0;    // start until the source holds nothing of the VM (or until it failed)
  double setup_time_ms = 0;    // start until the destination accepted (the handshake)
  double switchover_ms = 0;    // start until the VM runs at the destination
  double downtime_ms = 0;      // VM paused at the source until running at the destination
  uint64_t ram_total = 0;      // guest RAM
  uint64_t ram_remaining = 0;  // bytes still to send when the report was taken (0 once completed)
  double dirty_pages_rate = 0; // pages/s the guest dirtied during the last pre-copy round
  uint64_t bytes_sent = 0;     // on the migration connection and QEMU's device-state stream
  uint64_t device_state_bytes = 0;
  // How QEMU's own stream travelled, as QEMU's migrate parameters said before
  // it started: "tls" (tls-creds set) or "plain".
  std::string qemu_stream = "plain";
  uint32_t rounds = 0;
  uint64_t pages_precopied = 0;   // sent before switchover (all rounds)
  uint64_t pages_postcopied = 0;  // pulled from the source after switchover
  uint64_t pages_from_store = 0;  // left in the swap store for the destination to fault in
  uint64_t pages_zero = 0;        // known zero: never sent
  uint64_t pages_demand = 0;      // post-copy pages the destination faulted on (subset of postcopied)
  uint32_t recoveries = 0;        // post-copy links lost after switchover and recovered
  uint64_t disk_bytes = 0;        // --copy-storage: bytes the disk mirrors copied before they were ready
  // Where the downtime went, step by step (ms; agile, precopy and postcopy
  // modes): pausing QEMU, the last dirty scan and stop-and-copy, LOCATIONS,
  // QEMU's device state, and the commit (store TRANSFER, SWITCHOVER, the
  // destination resuming the VM, its ACK). Empty in qemu-* modes.
  std::vector<std::pair<std::string, double>> downtime_steps;

  double Mbps() const { return total_time_ms > 0 ? static_cast<double>(bytes_sent) * 8 / 1e3 / total_time_ms : 0; }

  nlohmann::json ToJson() const {
    nlohmann::json j = {
        {"status", status},
        {"mode", mode},
        {"vm", vm},
        {"destination", destination},
        {"error", error},
        {"total-time", total_time_ms},
        {"setup-time", setup_time_ms},
        {"downtime", downtime_ms},
        {"ram",
         {{"transferred", bytes_sent},
          {"remaining", ram_remaining},
          {"total", ram_total},
          {"mbps", Mbps()},
          {"dirty-pages-rate", dirty_pages_rate},
          {"dirty-sync-count", rounds}}},
        // agile's own
        {"switchover-time", switchover_ms},
        {"converged", converged},
        {"device-state-bytes", device_state_bytes},
        {"qemu-stream", qemu_stream},
        {"pages-precopied", pages_precopied},
        {"pages-postcopied", pages_postcopied},
        {"pages-demand", pages_demand},
        {"recoveries", recoveries},
        {"pages-from-store", pages_from_store},
        {"pages-zero", pages_zero},
        {"disk-transferred", disk_bytes},
    };
    j["downtime-steps"] = nlohmann::json::array();  // in order: a json object would sort them by name
    for (const auto& [step, ms] : downtime_steps) j["downtime-steps"].push_back({{"step", step}, {"ms", ms}});
    // The 0.x names, kept for one release.
    j.update({{"ok", ok},
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
              {"pages_demand", pages_demand}});
    return j;
  }
};

}  // namespace agile::migrate
