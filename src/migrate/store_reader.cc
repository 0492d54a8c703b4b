#include "migrate/store_reader.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <string>
#include <thread>

#include "base/clock.h"

namespace agile::migrate {

Status StoreReader::Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) {
  Status s = store_->FetchBulk(idx, out, present);
  const int budget_ms = retry_ms_.load();
  if (s.ok() || s.code() != Code::kUnavailable || budget_ms <= 0) return s;
  // Each attempt is bounded by the store's own timeouts (connect, request);
  // this bounds how long the outage may last in all.
  spdlog::warn("swap store unreachable while the migration reads cold pages after its commit point ({}); retrying "
               "every {} ms for up to {} ms", s.ToString(), kRetryMs, budget_ms);
  const uint64_t t0 = MonotonicNs();
  const uint64_t end = t0 + static_cast<uint64_t>(budget_ms) * 1000000ULL;
  while (MonotonicNs() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kRetryMs));
    s = store_->FetchBulk(idx, out, present);
    if (s.code() != Code::kUnavailable) {
      if (s.ok())
        spdlog::info("swap store reachable again after {} ms; the migration goes on",
                     (MonotonicNs() - t0) / 1000000ULL);
      return s;
    }
  }
  return s.Annotate("swap store unreachable for " + std::to_string(budget_ms) + " ms after the commit point");
}

}  // namespace agile::migrate
