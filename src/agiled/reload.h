// SIGHUP: what agiled re-reads from its configuration without a restart.
// The config file (--config, default /etc/agile/agiled.conf) and the original
// command line are parsed again, the command line still winning, and only the
// settings below are taken; everything else (listeners, state dir, memd, TLS,
// QEMU and shim paths, prefetch, tracking budget) needs a restart, which
// keeps the VMs running (docs/invariants.md, "Crash consistency").
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace agile::agiled {

struct Reloadable {
  std::string log_level = "info";
  uint64_t host_budget = 0;  // bytes; 0: none
  double psi_threshold_pct = 10;
  int policy_interval_ms = 1000;
};

// `defaults` holds the values agiled started with for settings given nowhere.
Result<Reloadable> ReadReloadable(int argc, const char* const* argv, const Reloadable& defaults);

}  // namespace agile::agiled
