// Time as agile reads it: CLOCK_MONOTONIC in nanoseconds. Code that decides by
// time (timeouts, rate limits, idle ages) takes a Clock so a test can drive it
// by hand instead of sleeping.
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>

namespace agile {

inline uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

class Clock {
 public:
  virtual ~Clock() = default;
  virtual uint64_t NowNs() const = 0;
  // The process-wide monotonic clock.
  static const Clock& System();
};

// A clock that moves only when told to (tests).
class ManualClock : public Clock {
 public:
  explicit ManualClock(uint64_t start_ns = 1) : now_(start_ns) {}
  uint64_t NowNs() const override { return now_.load(std::memory_order_acquire); }
  void Advance(uint64_t ns) { now_.fetch_add(ns, std::memory_order_acq_rel); }

 private:
  std::atomic<uint64_t> now_;
};

}  // namespace agile
