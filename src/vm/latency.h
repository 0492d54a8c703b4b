// Lock-free latency histogram for hot paths (fault service). Buckets of 1 us
// up to 1 ms, then 1 ms up to 1 s; percentiles are bucket upper bounds, so a
// reported p50 of 7 us means "at most 7 us".
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace agile::vm {

class LatencyHistogram {
 public:
  LatencyHistogram();
  void Record(uint64_t ns);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  // Percentile p in [0,100], in microseconds; 0 when empty.
  double PercentileUs(double p) const;
  // For exporters (Prometheus histograms): samples per bucket of `bounds_us`
  // (ascending upper bounds, us; a sample counts in the first bound >= its
  // bucket's upper bound) plus one count above the last; and their sum in
  // seconds. Relaxed reads: a snapshot while faults go on is near, not exact.
  void Export(const std::vector<double>& bounds_us, std::vector<uint64_t>* counts, double* sum_s) const;

 private:
  static constexpr int kFine = 1000;   // 1 us buckets: [0,1000) us
  static constexpr int kCoarse = 1000; // 1 ms buckets: [1,1000) ms, last is overflow
  std::atomic<uint64_t> fine_[kFine];
  std::atomic<uint64_t> coarse_[kCoarse];
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

}  // namespace agile::vm
