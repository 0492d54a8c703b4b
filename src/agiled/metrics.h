// agiled's metrics (--metrics-listen): per VM pages by state, working set per
// window, faults by kind with their latency, offload bytes, tracker CPU; the
// host's PSI and budget; migrations (Api::CollectMetrics). Rates are the
// scraper's: rate() over the _total counters.
#pragma once

#include "agiled/api.h"
#include "metrics/metrics.h"

namespace agile::agiled {

// Reads the VMs' and the policy's counters into `s`; safe on any thread.
void CollectHostMetrics(metrics::Scrape* s, VmManager* vms, PressurePolicy* policy);

}  // namespace agile::agiled
