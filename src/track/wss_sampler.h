// A working-set estimate that is right within seconds, by sampling (as ESX
// does): every `interval`, pick `sample_pages` resident pages at random, drop
// their PTEs, and at the end of the interval count how many the guest touched
// (any access to a page without a PTE faults, and the fault server reports
// it). The touched fraction times the resident pages is the estimate.
//
// Why beside AccessTracker's full coverage: the offloader needs every page's
// age (coldest first), and covering all of RAM within the tracking CPU budget
// takes minutes on a slow guest (TCG: tens of microseconds per fault), so a
// coverage-based working-set size lags a phase change by minutes. A sample of
// a thousand pages costs at most a thousand faults per interval and follows a
// phase change within two intervals, with a standard error below 1.6% of
// resident memory (binomial, n = 1024).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "base/status.h"
#include "vm/guest_memory.h"

namespace agile::track {

struct SamplerOptions {
  uint32_t sample_pages = 1024;
  uint64_t interval_ms = 10000;  // the measuring window: pages touched within it count
  uint64_t seed = 0x5eed;
};

class WssSampler {
 public:
  WssSampler(vm::GuestMemory* memory, SamplerOptions opts);
  ~WssSampler();

  // Fault thread: a page was accessed. One relaxed load unless it is sampled.
  void OnAccess(uint64_t idx) {
    if (idx < pages_ && state_[idx].load(std::memory_order_relaxed) == kSampled)
      state_[idx].store(kTouched, std::memory_order_relaxed);
  }

  // Ends the running interval (if any): publishes its estimate; then starts
  // the next with a fresh sample. Serialised with itself.
  Status Step();
  // Runs Step() every interval on its own thread until Stop().
  void Start();
  void Stop();  // idempotent

  // The latest estimate in pages, or -1 before the first interval ended.
  int64_t EstimatePages() const { return estimate_.load(std::memory_order_relaxed); }
  uint64_t intervals() const { return intervals_.load(std::memory_order_relaxed); }
  uint64_t interval_ms() const { return opts_.interval_ms; }

 private:
  static constexpr uint8_t kNone = 0, kSampled = 1, kTouched = 2;
  void Run();

  vm::GuestMemory* mem_;
  SamplerOptions opts_;
  uint64_t pages_;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;  // per page: kNone / kSampled / kTouched
  std::mutex step_mu_;
  std::vector<uint64_t> sample_;  // the running interval's pages
  std::mt19937_64 rng_;
  std::atomic<int64_t> estimate_{-1};
  std::atomic<uint64_t> intervals_{0};

  std::mutex run_mu_;
  std::condition_variable run_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace agile::track
