#include "vm/latency.h"

namespace agile::vm {

LatencyHistogram::LatencyHistogram() {
  for (auto& b : fine_) b.store(0);
  for (auto& b : coarse_) b.store(0);
}

void LatencyHistogram::Record(uint64_t ns) {
  uint64_t us = ns / 1000;
  if (us < kFine) {
    fine_[us].fetch_add(1, std::memory_order_relaxed);
  } else {
    uint64_t ms = us / 1000;
    coarse_[ms < kCoarse ? ms : kCoarse - 1].fetch_add(1, std::memory_order_relaxed);
  }
  count_.fetch_add(1, std::memory_order_relaxed);
}

double LatencyHistogram::PercentileUs(double p) const {
  uint64_t total = count();
  if (total == 0) return 0;
  auto rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(total));
  if (rank >= total) rank = total - 1;
  uint64_t seen = 0;
  for (int i = 0; i < kFine; ++i) {
    seen += fine_[i].load(std::memory_order_relaxed);
    if (seen > rank) return i + 1;
  }
  for (int i = 1; i < kCoarse; ++i) {
    seen += coarse_[i].load(std::memory_order_relaxed);
    if (seen > rank) return (i + 1) * 1000.0;
  }
  return kCoarse * 1000.0;
}

}  // namespace agile::vm
