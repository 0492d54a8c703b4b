#include "agiled/reload.h"

#include <CLI/CLI.hpp>

#include "base/size.h"

namespace agile::agiled {

Result<Reloadable> ReadReloadable(int argc, const char* const* argv, const Reloadable& defaults) {
  CLI::App app;
  app.allow_extras();
  app.allow_config_extras(CLI::config_extras_mode::ignore);
  app.set_config("--config", "/etc/agile/agiled.conf");
  app.set_help_flag();
  Reloadable r = defaults;
  std::string budget;
  app.add_option("--log-level", r.log_level);
  app.add_option("--host-budget", budget);
  app.add_option("--psi-threshold", r.psi_threshold_pct);
  app.add_option("--policy-interval-ms", r.policy_interval_ms);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return InvalidArgument(std::string("configuration: ") + e.what());
  }
  if (!budget.empty()) {
    AGILE_ASSIGN_OR_RETURN(r.host_budget, ParseSize(budget));
  }
  if (r.policy_interval_ms <= 0) return InvalidArgument("--policy-interval-ms must be positive");
  return r;
}

}  // namespace agile::agiled
