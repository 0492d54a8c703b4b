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
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

void LatencyHistogram::Export(const std::vector<double>& bounds_us, std::vector<uint64_t>* counts,
                              double* sum_s) const {
  counts->assign(bounds_us.size() + 1, 0);
  size_t b = 0;
  auto add = [&](double upper_us, uint64_t n) {
    while (b < bounds_us.size() && bounds_us[b] < upper_us) ++b;
    (*counts)[b] += n;
  };
  for (int i = 0; i < kFine; ++i) add(i + 1, fine_[i].load(std::memory_order_relaxed));
  for (int i = 1; i < kCoarse - 1; ++i) add((i + 1) * 1000.0, coarse_[i].load(std::memory_order_relaxed));
  (*counts)[bounds_us.size()] += coarse_[kCoarse - 1].load(std::memory_order_relaxed);  // overflow
  *sum_s = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
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
